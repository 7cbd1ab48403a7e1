// One simulated lifecycle: the real machine, bound to the simulator backend, driven in virtual
// time until it ends, then checked against the invariants. A run is a pure function of its seed
// (and of the machine and config given), so any failing seed replays exactly.
//
// The run's manager (manager 1) owns the VM: it takes the VM's lock in the model kernel before
// anything is built, its record follows the machine's phase, and it lets go when the machine ends
// (cli/run.ts). A plan may add a second manager and a `vmsandbox finish` for the same VM
// (sim/managers.ts); the runner then keeps the world going until they are done too.

import { createActor, type Actor } from 'xstate';
import type { VmConfig } from '../config/types.js';
import { phaseOf, type Phase } from '../effects/owner.js';
import type { SandboxEffects } from '../effects/port.js';
import { attachEffects } from '../machines/systemEffects.js';
import type { TransitionRecord } from '../machines/observe.js';
import { runSandbox, type ActorOptions, type SandboxRun } from '../machines/runner.js';
import type { SandboxMachine, SandboxOutput } from '../machines/sandbox.js';
import { CLEANUP_MS, sandboxMachine, stopByFrom } from '../machines/sandbox.js';
import type { SimBackend } from './backend.js';
import { createSimBackend } from './backend.js';
import { VirtualClock } from './clock.js';
import { configFromSeed } from './configs.js';
import type { FaultPlan } from './faults.js';
import { planFromSeed } from './faults.js';
import { checkInvariants, leftovers, SLACK_MS } from './invariants.js';
import { SimKernel } from './kernel.js';
import type { ManagerContext } from './managers.js';
import { OtherManagers } from './managers.js';
import type { OwnershipFactory } from './owner.js';
import { managerPid, simOwnership } from './owner.js';

/** How long the model kernel keeps running after the machine ended, to catch late effects. */
const AFTERMATH_MS = 200;

export interface SimOptions {
  config?: VmConfig;
  /** A machine to run instead of the product's (tests use mutants to show the checks bite). */
  machine?: SandboxMachine;
  /** Keep the full trace (costs time; off for bulk runs). */
  trace?: boolean;
  /** A hand-written plan instead of the seed's (the demo and targeted tests use this). */
  plan?: FaultPlan;
  /** Called with every transition record and its virtual time (the demo logs them). */
  onRecord?: (r: TransitionRecord, at: number) => void;
  /** How to let promises settle between steps (tests compare both). */
  drain?: 'microtasks' | 'macrotask';
  /** Microtask hops per drain (tests show where too few starts to change runs). */
  hops?: number;
  /** The VM lock every manager uses (tests pass a broken one to show the invariants bite). */
  ownership?: OwnershipFactory;
}

export interface SimResult {
  seed: number;
  plan: FaultPlan;
  ok: boolean;
  violations: string[];
  finalState: string | null;
  output: SandboxOutput | null;
  endedAt: number | null;
  trace: string[];
  /** The plan's second manager and finish, if it has them: how each ended (null: still at work). */
  managers: { name: string; pid: number; exitCode: number | null }[];
}

// Between two steps of virtual time every effect promise must have settled and the machine must
// have reacted. Draining the microtask queue a fixed number of hops does that at a fraction of
// the cost of a macrotask turn. The simulator backend settles a synchronous operation within the
// clock step that runs it, so the longest chain from a result to the machine's reaction is 3 hops
// (killAll: its wait, the backend's settle, XState's then); test/sim.test.ts shows 2 hops
// change runs and 3 do not, and that the default gives the same traces as setImmediate.
export const MICROTASK_HOPS = 8;
/**
 * Hops per drain, at least, while another manager of the VM is at work (sim/managers.ts): its
 * async code (claimVm's retries, the leftover removal, its own machine) runs longer promise chains
 * than the backend's, up to 6 hops. test/sim-ownership.test.ts shows that this many give what a
 * macrotask turn gives; fewer, even when a test asks for fewer (`hops`), would not.
 */
export const MANAGER_HOPS = 8;
const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * An actor of `machine` (the product's when not given) whose effects are `effects`, not started:
 * the machine's effect slots run the backend attached to the actor's system (machines/systemEffects.ts),
 * so runs share the machine and nothing else, and may interleave.
 */
function actorOver(machine: SandboxMachine | undefined, effects: SandboxEffects, options: ActorOptions): Actor<SandboxMachine> {
  const actor = createActor(machine ?? sandboxMachine, options);
  attachEffects(actor.system, effects);
  return actor;
}

export async function simulate(seed: number, opts: SimOptions = {}): Promise<SimResult> {
  const plan = opts.plan ?? planFromSeed(seed);
  const config = opts.config ?? configFromSeed(seed);
  const clock = new VirtualClock();
  const lines: string[] = [];
  // Trace lines are not even built for untraced (bulk) runs.
  const tracing = opts.trace === true;
  const trace = tracing
    ? (line: string) => lines.push(`${String(clock.now()).padStart(6, '0')} ${line}`)
    : () => undefined;
  const kernel = new SimKernel(clock, plan.landlockAbi, new Set(plan.controllers), trace);
  // One owner per VM: the VM's lock before anything is built; the backend journals into it.
  const ownership = opts.ownership ?? simOwnership;
  const claim = ownership(kernel, clock, 1).tryClaim(config, { pid: managerPid(1), phase: 'starting' });
  if (!claim.ok) throw new Error(`the first manager found vm ${config.name} taken`);
  const lock = claim.lock;
  // s6's SIGTERMs, at the plan's times, reach the runner as they reach `vmsandbox run` (scheduled
  // before the backend's own events, so that ties keep their order).
  let run: SandboxRun | null = null;
  for (const at of plan.stopAt) clock.schedule(at, () => run?.requestStop('SIGTERM'));
  const backend = createSimBackend(config, kernel, plan, clock, trace, { journal: lock, manager: 1 });

  // The hops are awaited right here: a helper async function would add its own promise and hops
  // to every drain, and make `hops` mean more than it says.
  const macro = opts.drain === 'macrotask';
  const hops = opts.hops ?? MICROTASK_HOPS;
  const records: (TransitionRecord & { at: number })[] = [];
  let phase: Phase = 'starting';
  const onRecord = (r: TransitionRecord) => {
    records.push({ ...r, at: clock.now() });
    opts.onRecord?.(r, clock.now());
    if (tracing) trace(`state ${r.state} <- ${r.event}${r.reason ? ` (${r.reason})` : ''}`);
    // The lock's record says where the owner is (a new manager waits for one that is stopping;
    // stopping is for good).
    if (phase !== 'stopping') {
      const now = phaseOf(r.state, phase);
      if (now !== phase) {
        phase = now;
        lock.update({ phase, stopBy: phase === 'stopping' ? stopByFrom(clock.now(), config) : null });
      }
    }
  };
  const stopTimes: number[] = [];
  let parentDiedAt: number | null = null;
  // The plan's other managers for this VM, at their times (most plans have none).
  const others = plan.secondManagerAt != null || plan.finishAt != null ? otherManagers(opts, { config, kernel, clock, plan, trace, ownership }) : null;
  // The runner `vmsandbox run` uses (machines/runner.ts), in virtual time.
  run = runSandbox(backend, config, {
    clock,
    onRecord,
    actorFor: (effects, options) => actorOver(opts.machine, effects, options),
    onEvent: (ev) => {
      if (tracing) trace(`event ${ev.type}${'service' in ev ? ` ${ev.service}` : ''}`);
      if (ev.type === 'STOP_REQUESTED') stopTimes.push(clock.now());
      if (ev.type === 'PARENT_DIED') parentDiedAt ??= clock.now();
    },
  });
  const actor = run.actor;
  if (run.refused && tracing) trace(`refused before setup: ${run.refused.map((r) => `${r.field}: ${r.message}`).join('; ')}`);

  const lastTrigger = Math.max(config.timeouts.setupMs, ...plan.stopAt);
  const { stopMs, killMs } = config.timeouts;
  const hardLimit = lastTrigger + stopMs + killMs + CLEANUP_MS + SLACK_MS * 10;
  const violations: string[] = [];
  if (actor === null) {
    // A refused plan: no machine ran.
  } else if (others !== null) {
    const stuck = await driveWithOthers(actor, clock, others, hardLimit, macro, hops);
    if (stuck) violations.push(stuck);
  } else {
    for (;;) {
      if (macro) await macrotask();
      else for (let i = 0; i < hops; i++) await null;
      if (actor.getSnapshot().status !== 'active') break;
      const next = clock.peek();
      if (next === null) {
        violations.push(STUCK);
        break;
      }
      if (next > hardLimit) {
        violations.push(pastDeadlines(next, hardLimit));
        break;
      }
      clock.step();
    }
  }
  // A refused plan ends the run before the machine starts (exit 111), as in `vmsandbox run`.
  const snap = actor?.getSnapshot() ?? null;
  const done = snap === null || snap.status === 'done';
  const endedAt = done ? clock.now() : null;
  const finalState = snap === null ? 'failed' : snap.status === 'done' ? String(snap.value) : null;
  const output = snap === null ? await run.done : snap.status === 'done' ? (snap.output as SandboxOutput) : null;
  if (output && tracing) trace(`end ${finalState} outcome=${output.outcome} exit=${output.exitCode}${output.errors.length ? ` errors=${JSON.stringify(output.errors)}` : ''}`);
  // The manager records how it ended and lets go of the VM (cli/run.ts endOwnership). What is
  // still there now, this run left: judged now, before another manager may take the VM over.
  let leftAtEnd: string[] | null = null;
  if (output) {
    lock.update({ phase: 'ended', exitCode: output.exitCode, endedAt: clock.now(), stopBy: null });
    lock.release();
    leftAtEnd = leftovers(config, kernel, backend.vm.cgroupRoot);
  }

  // Let the world run on a little: an effect that acts after the machine ended is a leak too.
  const until = clock.now() + AFTERMATH_MS;
  if (others === null || output === null) {
    while ((clock.peek() ?? Infinity) <= until) {
      clock.step();
      if (macro) await macrotask();
      else for (let i = 0; i < hops; i++) await null;
    }
  } else {
    trace(`manager 1 (pid ${managerPid(1)}): exit ${output.exitCode}, lock of vm ${config.name} released`);
    violations.push(...(await othersAftermath(others, clock, until, macro, hops)));
  }
  actor?.stop();

  const backends = others === null ? undefined : backendsOf(others, backend);
  violations.push(
    ...checkInvariants({ config, kernel, backend, records, finalState, output, endedAt, stopTimes, parentDiedAt, leftAtEnd, backends }),
  );
  for (const v of violations) trace(`VIOLATION ${v}`);
  const managers = others === null ? [] : others.results();
  return { seed, plan, ok: violations.length === 0, violations, finalState, output, endedAt, trace: lines, managers };
}

// The other managers' parts of a run live out here, not in simulate: code that only some runs
// take, inside the function every run spends its time in, made V8 compile that function worse for
// all of them (about 6 % of the throughput, even with other managers in 0.3 % of the plans).

function otherManagers(opts: SimOptions, ctx: Omit<ManagerContext, 'tracing' | 'actorFor'>): OtherManagers {
  return new OtherManagers({
    ...ctx,
    tracing: opts.trace === true,
    actorFor: (effects, options) => actorOver(opts.machine, effects, options),
  });
}

const STUCK = 'machine is stuck: nothing scheduled and no final state';
const pastDeadlines = (next: number, limit: number) => `machine still running at ${next} ms, past every deadline (${limit} ms)`;

/** The main loop of simulate, for a run with other managers: at least MANAGER_HOPS while one is at work. */
async function driveWithOthers(actor: Actor<SandboxMachine>, clock: VirtualClock, others: OtherManagers, hardLimit: number, macro: boolean, hops: number): Promise<string | null> {
  for (;;) {
    if (macro) await macrotask();
    else for (let i = 0, n = others.busy > 0 ? Math.max(hops, MANAGER_HOPS) : hops; i < n; i++) await null;
    if (actor.getSnapshot().status !== 'active') return null;
    const next = clock.peek();
    if (next === null) return STUCK;
    if (next > hardLimit) return pastDeadlines(next, hardLimit);
    clock.step();
  }
}

function backendsOf(others: OtherManagers, first: SimBackend): Map<number, SimBackend> {
  const backends = new Map([[1, first]]);
  for (const m of others.list) if (m.backend) backends.set(m.id, m.backend);
  return backends;
}

/** After the first manager ended: until the other managers are done, and a little after the last. */
async function othersAftermath(others: OtherManagers, clock: VirtualClock, firstUntil: number, macro: boolean, hops: number): Promise<string[]> {
  const limit = others.limit(clock.now());
  let until = firstUntil;
  for (;;) {
    const next = clock.peek();
    if (others.pending === 0 && (next ?? Infinity) > until) break;
    if (next === null || next > limit) {
      return [...others.violations, `${others.describePending()} still at work at ${clock.now()} ms${next === null ? ' with nothing scheduled' : `, past every deadline (${limit} ms)`}`];
    }
    clock.step();
    if (macro) await macrotask();
    else for (let i = 0, n = others.busy > 0 ? Math.max(hops, MANAGER_HOPS) : hops; i < n; i++) await null;
    if (others.pending === 0) until = Math.max(until, others.lastEnd + AFTERMATH_MS);
  }
  return others.violations;
}
