// The other managers of one simulated VM: a second `vmsandbox run` for the same VM and a
// `vmsandbox finish`, at the times the fault plan draws. Each does what its command does at its
// start, with the shared rules of effects/owner.ts over the simulator's lock table (sim/owner.ts):
//
// - the second manager (manager 2) claims the VM with claimVm: refused while the first is live, it
//   ends with 101 touching nothing; while the first is stopping it waits, then takes the VM, removes
//   what the journal says earlier runs left (with a backend of its own), and runs its own machine,
//   which s6 stops again OWN_RUN_MS after it started (cli/run.ts);
// - finish (manager 3) tries the lock once: refused (exit 1, nothing changed) while a manager holds
//   it, else it removes the journalled leftovers and lets go (cli/finish.ts, without --force).
//
// Everything they do to the VM's objects is attributed to them in the model kernel, and the
// invariants check that each action was done by the holder of the VM's lock at that moment.

import type { VmConfig } from '../config/types.js';
import type { JournalStore, VmLock } from '../effects/owner.js';
import { claimVm, describeHolder, describeJournal, journalIsEmpty, phaseOf, type Phase } from '../effects/owner.js';
import { describeError } from '../effects/port.js';
import { EXIT_CODES, FINISH_REFUSED } from '../machines/outcome.js';
import { runSandbox, type RunnerHooks, type SandboxRun } from '../machines/runner.js';
import { CLEANUP_MS, stopByFrom, WATCHDOG_SLACK_MS } from '../machines/sandbox.js';
import type { SimBackend } from './backend.js';
import { createSimBackend } from './backend.js';
import type { VirtualClock } from './clock.js';
import { demoPlan } from './demoPlan.js';
import type { FaultPlan, Op } from './faults.js';
import { planFromSeed } from './faults.js';
import type { SimKernel } from './kernel.js';
import type { OwnershipFactory } from './owner.js';
import { managerPid } from './owner.js';

/** How long the second manager's own run lasts before s6 stops it (s6-svc -d). */
export const OWN_RUN_MS = 500;

export interface ManagerContext {
  config: VmConfig;
  kernel: SimKernel;
  clock: VirtualClock;
  plan: FaultPlan;
  trace: (line: string) => void;
  /** Whether trace lines are kept (the per-step ones are not even built otherwise). */
  tracing: boolean;
  ownership: OwnershipFactory;
  /** How the runner makes the actor of the simulation's machine (one binding for every run). */
  actorFor: NonNullable<RunnerHooks['actorFor']>;
}

export interface OtherManager {
  /** 2: the second manager, 3: finish. */
  id: number;
  name: 'second manager' | 'finish';
  pid: number;
  at: number;
  state: 'scheduled' | 'at work' | 'done';
  exitCode: number | null;
  /** The backend of its own run, if it had one (the invariants check what that run exec'd). */
  backend: SimBackend | null;
}

/**
 * A plan for the other managers' backends: nothing planned to go wrong (the demo plan's values),
 * with the seed's plan's shape: a plan object of another shape reaching the backend makes V8
 * recompile its hot paths for both, which costs every later run.
 */
function quietPlan(plan: FaultPlan): FaultPlan {
  const q = planFromSeed(plan.seed);
  const w = q as unknown as Record<string, unknown>;
  for (const k of Object.keys(demoPlan) as (keyof FaultPlan)[]) if (k !== 'delays' && k !== 'seed') w[k] = demoPlan[k];
  for (const op of Object.keys(q.delays) as Op[]) q.delays[op] = demoPlan.delays[op] ?? 0;
  q.stopAt = [];
  q.pidReuse = 0;
  return q;
}

export class OtherManagers {
  readonly list: OtherManager[] = [];
  /** Managers started and not done: the runner settles every promise after a step while any is. */
  busy = 0;
  /** Managers scheduled or at work. */
  pending = 0;
  /** When the last of them ended. */
  lastEnd = 0;
  readonly violations: string[] = [];

  constructor(private readonly ctx: ManagerContext) {
    const { plan } = ctx;
    if (plan.secondManagerAt != null) this.add(2, 'second manager', plan.secondManagerAt);
    if (plan.finishAt != null) this.add(3, 'finish', plan.finishAt);
  }

  private add(id: number, name: OtherManager['name'], at: number): void {
    const m: OtherManager = { id, name, pid: managerPid(id), at, state: 'scheduled', exitCode: null, backend: null };
    this.list.push(m);
    this.pending++;
    this.ctx.clock.schedule(at, () => {
      m.state = 'at work';
      this.busy++;
      const work = m.name === 'finish' ? finish(this.ctx, m) : secondManager(this.ctx, m);
      void work
        .then(
          (code) => void (m.exitCode = code),
          (e) => void this.violations.push(`${m.name} (pid ${m.pid}) failed: ${describeError(e)}`),
        )
        .finally(() => {
          m.state = 'done';
          this.busy--;
          this.pending--;
          this.lastEnd = this.ctx.clock.now();
        });
    });
  }

  /** Latest time by which every one of them must have ended, given that the first ended at `firstEnd`. */
  limit(firstEnd: number): number {
    const { setupMs, stopMs, killMs } = this.ctx.config.timeouts;
    const latest = Math.max(firstEnd, ...this.list.map((m) => m.at));
    // A wait for a stopping owner, then removal of leftovers and a whole run of its own.
    return latest + 2 * (stopMs + killMs + CLEANUP_MS + WATCHDOG_SLACK_MS) + setupMs + OWN_RUN_MS + 1000;
  }

  results(): { name: string; pid: number; exitCode: number | null }[] {
    return this.list.map((m) => ({ name: m.name, pid: m.pid, exitCode: m.exitCode }));
  }

  describePending(): string {
    return this.list.filter((m) => m.state !== 'done').map((m) => `${m.name} (pid ${m.pid}, ${m.state})`).join(', ');
  }
}

function processesIn(kernel: SimKernel, cgroup: string | null): number {
  if (cgroup === null || !kernel.cgroups.has(cgroup)) return 0;
  let n = 0;
  for (const c of [cgroup, ...kernel.childCgroups(cgroup)]) n += kernel.cgroups.get(c)?.size ?? 0;
  return n;
}

/**
 * What cli/leftovers.ts's removeLeftovers does, over the simulator: the journalled cgroup (its
 * processes killed first) and runtime directory, with a backend of the manager's own (killAll +
 * cleanup), bounded by killMs + cleanup. Only ever what the journal names.
 */
async function removeJournalled(ctx: ManagerContext, store: JournalStore, m: OtherManager): Promise<{ removed: string[]; problems: string[] }> {
  const { config, kernel, clock } = ctx;
  const j = store.journal();
  const before = { procs: processesIn(kernel, j.cgroup), cgroup: j.cgroup !== null && kernel.cgroups.has(j.cgroup), dir: j.runtimeDir !== null && kernel.dirs.has(j.runtimeDir) };
  const backend = createSimBackend(config, kernel, quietPlan(ctx.plan), clock, ctx.tracing ? (l) => ctx.trace(`${m.name}: ${l}`) : ctx.trace, { journal: store, manager: m.id });
  const bound = new AbortController();
  const timer = clock.schedule(config.timeouts.killMs + CLEANUP_MS, () => bound.abort(new Error('leftover removal took too long')));
  const problems: string[] = [];
  for (const op of ['killAll', 'cleanup'] as const) {
    try {
      await backend.effects[op]({}, bound.signal);
    } catch (e) {
      problems.push(`${op}: ${describeError(e)}`);
    }
  }
  clock.clearTimeout(timer);
  const procs = processesIn(kernel, j.cgroup);
  const cgroup = j.cgroup !== null && kernel.cgroups.has(j.cgroup);
  const dir = j.runtimeDir !== null && kernel.dirs.has(j.runtimeDir);
  const removed = [
    ...(before.procs > procs ? [`${before.procs - procs} process(es)`] : []),
    ...(before.cgroup && !cgroup ? [`cgroup ${j.cgroup}`] : []),
    ...(before.dir && !dir ? [`runtime dir ${j.runtimeDir}`] : []),
  ];
  if (cgroup || dir) problems.push(`still there: ${[...(cgroup ? [`cgroup ${j.cgroup}`] : []), ...(dir ? [`runtime dir ${j.runtimeDir}`] : [])].join(', ')}`);
  return { removed, problems };
}

function endOwnership(lock: VmLock, exitCode: number, now: number): void {
  lock.update({ phase: 'ended', exitCode, endedAt: now, stopBy: null });
  lock.release();
}

/** A second `vmsandbox run` of the same VM (cli/run.ts: takeVm, then its own machine). */
async function secondManager(ctx: ManagerContext, m: OtherManager): Promise<number> {
  const { config, kernel, clock, trace } = ctx;
  const say = (line: string) => trace(`${m.name}: ${line}`);
  say(`vmsandbox run (pid ${m.pid}) starts`);
  const claim = await claimVm(ctx.ownership(kernel, clock, m.id), config, { pid: m.pid }, {
    onWait: (h, ms) => say(`vm ${config.name}: the previous manager (pid ${h.pid}) is stopping; waiting up to ${ms} ms for it`),
  });
  if (!claim.ok) {
    say(`${describeHolder(claim, config)}: this run changes nothing: exit ${EXIT_CODES.alreadyRunning}`);
    return EXIT_CODES.alreadyRunning;
  }
  const lock = claim.lock;
  const prev = lock.previous;
  say(`took vm ${config.name}${prev ? ` (its last owner, pid ${prev.pid}, ${prev.phase === 'ended' ? `ended with exit ${prev.exitCode}` : `was last seen ${prev.phase}`})` : ''}`);
  const stale = lock.journal();
  if (!journalIsEmpty(stale)) {
    const who = prev ? `a manager (pid ${prev.pid}) that ended without tearing down (last seen ${prev.phase})` : 'an earlier run';
    const r = await removeJournalled(ctx, lock, m);
    if (r.problems.length) {
      say(`could not remove what ${who} left (${describeJournal(stale).join(', ')}): ${r.problems.join('; ')}: exit ${EXIT_CODES.setupFailed}`);
      endOwnership(lock, EXIT_CODES.setupFailed, clock.now());
      return EXIT_CODES.setupFailed;
    }
    say(`removed what ${who} left: ${r.removed.join(', ') || 'nothing was there any more'}`);
  }

  // Its own run: the same machine, over a backend of its own journalling into its lock; s6 stops
  // it OWN_RUN_MS after it started.
  let run: SandboxRun | null = null;
  clock.schedule(OWN_RUN_MS, () => run?.requestStop('SIGTERM'));
  const backend = createSimBackend(config, kernel, quietPlan(ctx.plan), clock, ctx.tracing ? say : trace, { journal: lock, manager: m.id });
  m.backend = backend;
  let phase: Phase = 'starting';
  let ended!: () => void;
  const end = new Promise<void>((resolve) => (ended = resolve));
  run = runSandbox(backend, config, {
    clock,
    actorFor: ctx.actorFor,
    onRecord: (r) => {
      if (ctx.tracing) say(`state ${r.state} <- ${r.event}${r.reason ? ` (${r.reason})` : ''}`);
      const now = phaseOf(r.state, phase);
      if (now !== phase) {
        phase = now;
        lock.update({ phase, stopBy: phase === 'stopping' ? stopByFrom(clock.now(), config) : null });
      }
      // The snapshot is final once this step has settled.
      if (r.state === 'stopped' || r.state === 'failed') clock.schedule(0, ended);
    },
    onEvent: (ev) => {
      if (ctx.tracing) say(`event ${ev.type}${'service' in ev ? ` ${ev.service}` : ''}`);
    },
  });
  if (run.refused) say(`refused before setup: ${run.refused.map((r) => `${r.field}: ${r.message}`).join('; ')}`);
  else await end;
  const output = await run.done;
  run.actor?.stop();
  endOwnership(lock, output.exitCode, clock.now());
  say(`exit ${output.exitCode}: ${output.outcome}`);
  return output.exitCode;
}

/** `vmsandbox finish CONFIG` during the run (cli/finish.ts, without --force). */
async function finish(ctx: ManagerContext, m: OtherManager): Promise<number> {
  const { config, kernel, clock, trace } = ctx;
  const say = (line: string) => trace(`${m.name}: ${line}`);
  const claim = ctx.ownership(kernel, clock, m.id).tryClaim(config, { pid: m.pid, phase: 'finish' });
  if (!claim.ok) {
    say(`${describeHolder(claim, config)}: finish changes nothing: exit ${FINISH_REFUSED}`);
    return FINISH_REFUSED;
  }
  const r = journalIsEmpty(claim.lock.journal()) ? { removed: [], problems: [] } : await removeJournalled(ctx, claim.lock, m);
  claim.lock.release();
  const what = r.removed.length ? `removed ${r.removed.join(', ')}` : 'nothing left behind';
  say(`${what}${r.problems.length ? `; ${r.problems.join('; ')}` : ''}: exit 0`);
  return 0;
}
