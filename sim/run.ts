// One simulated lifecycle: the real machine, bound to the simulator backend, driven in virtual
// time until it ends, then checked against the invariants. A run is a pure function of its seed
// (and of the machine and config given), so any failing seed replays exactly.

import { createActor } from 'xstate';
import type { VmConfig } from '../config/types.js';
import type { KernelEvent, SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';
import type { TransitionRecord } from '../machines/observe.js';
import { transitionInspector } from '../machines/observe.js';
import type { SandboxMachine, SandboxOutput } from '../machines/sandbox.js';
import { CLEANUP_MS, sandboxMachine } from '../machines/sandbox.js';
import { createSimBackend } from './backend.js';
import { VirtualClock } from './clock.js';
import { LeanActor } from './engine.js';
import { configFromSeed } from './configs.js';
import type { FaultPlan } from './faults.js';
import { planFromSeed } from './faults.js';
import { checkInvariants, SLACK_MS } from './invariants.js';
import { SimKernel } from './kernel.js';

/** How long the model kernel keeps running after the machine ended, to catch late effects. */
const AFTERMATH_MS = 200;

export interface SimOptions {
  config?: VmConfig;
  /** A machine to run instead of the product's (tests use mutants to show the checks bite). */
  machine?: SandboxMachine;
  /**
   * Which interpreter runs the machine: XState itself (the default, what production runs) or the
   * lean engine (sim/engine.ts), about 3.8 times faster and checked against XState trace for
   * trace; bulk runs use it.
   */
  engine?: Engine;
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
}

export type Engine = 'xstate' | 'lean';

/** What the runner needs of a running machine; an XState actor and a LeanActor both are one. */
interface Driven {
  start(): unknown;
  send(ev: KernelEvent): void;
  stop(): unknown;
  getSnapshot(): { status: string; value: unknown; output?: unknown };
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
}

// Between two steps of virtual time every effect promise must have settled and the machine must
// have reacted. Draining the microtask queue a fixed number of hops does that at a fraction of
// the cost of a macrotask turn. The simulator backend settles a synchronous operation within the
// clock step that runs it, so the longest chain from a result to the machine's reaction is 3 hops
// (killAll: its wait, the backend's settle, the engine's then); test/sim.test.ts shows 2 hops
// change runs and 3 do not, and that the default gives the same traces as setImmediate.
export const MICROTASK_HOPS = 8;
const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve));

// Building a machine (provide()) costs more than running one, so bulk runs share one bound
// machine whose effects forward to the current run's backend. Runs are therefore serialized.
let current: SandboxEffects | null = null;
const forwarding = new Proxy({} as SandboxEffects, {
  get: (_t, op: keyof SandboxEffects) => (input: never, signal: AbortSignal) => {
    if (!current) throw new Error('no simulation is running');
    return (current[op] as (i: never, s: AbortSignal) => Promise<unknown>)(input, signal);
  },
});
// Built on first use: lean-only bulk runs (sim --runs, its workers) never need it.
let sharedMachine: ReturnType<typeof bindEffects> | null = null;
let lock: Promise<unknown> = Promise.resolve();

export function simulate(seed: number, opts: SimOptions = {}): Promise<SimResult> {
  const result = lock.then(() => simulateAlone(seed, opts));
  lock = result.catch(() => undefined);
  return result;
}

async function simulateAlone(seed: number, opts: SimOptions): Promise<SimResult> {
  const plan = opts.plan ?? planFromSeed(seed);
  const config = opts.config ?? configFromSeed(seed);
  const clock = new VirtualClock();
  const lines: string[] = [];
  const trace = opts.trace
    ? (line: string) => lines.push(`${String(clock.now()).padStart(6, '0')} ${line}`)
    : () => undefined;
  const kernel = new SimKernel(clock, plan.landlockAbi, new Set(plan.controllers), trace);
  const backend = createSimBackend(config, kernel, plan, clock, trace);

  // The hops are awaited right here: a helper async function would add its own promise and hops
  // to every drain, and make `hops` mean more than it says.
  const macro = opts.drain === 'macrotask';
  const hops = opts.hops ?? MICROTASK_HOPS;
  const records: (TransitionRecord & { at: number })[] = [];
  const inspect = transitionInspector((r) => {
    records.push({ ...r, at: clock.now() });
    opts.onRecord?.(r, clock.now());
    trace(`state ${r.state} <- ${r.event}${r.reason ? ` (${r.reason})` : ''}`);
  });
  const input = { config };
  let actor: Driven;
  if (opts.engine === 'lean') {
    actor = new LeanActor(opts.machine ?? sandboxMachine, { input, clock, effects: backend.effects, inspect });
  } else {
    current = backend.effects;
    const machine = opts.machine ? bindEffects(backend.effects, opts.machine) : (sharedMachine ??= bindEffects(forwarding));
    actor = createActor(machine, { input, clock, inspect });
  }
  const stopTimes: number[] = [];
  let parentDiedAt: number | null = null;
  const sub = backend.events$.subscribe((ev) => {
    trace(`event ${ev.type}${'service' in ev ? ` ${ev.service}` : ''}`);
    // After the end the manager is gone: nothing is listening any more.
    if (actor.getSnapshot().status !== 'active') return;
    if (ev.type === 'STOP_REQUESTED') stopTimes.push(clock.now());
    if (ev.type === 'PARENT_DIED') parentDiedAt ??= clock.now();
    actor.send(ev);
  });
  actor.start();

  const lastTrigger = Math.max(config.timeouts.setupMs, ...plan.stopAt);
  const { stopMs, killMs } = config.timeouts;
  const hardLimit = lastTrigger + stopMs + killMs + CLEANUP_MS + SLACK_MS * 10;
  const violations: string[] = [];
  for (;;) {
    if (macro) await macrotask();
    else for (let i = 0; i < hops; i++) await null;
    if (actor.getSnapshot().status !== 'active') break;
    const next = clock.peek();
    if (next === null) {
      violations.push('machine is stuck: nothing scheduled and no final state');
      break;
    }
    if (next > hardLimit) {
      violations.push(`machine still running at ${next} ms, past every deadline (${hardLimit} ms)`);
      break;
    }
    clock.step();
  }
  const snap = actor.getSnapshot();
  const endedAt = snap.status === 'done' ? clock.now() : null;
  const finalState = snap.status === 'done' ? String(snap.value) : null;
  const output = snap.status === 'done' ? (snap.output as SandboxOutput) : null;
  if (output) trace(`end ${finalState} outcome=${output.outcome} exit=${output.exitCode}${output.errors.length ? ` errors=${JSON.stringify(output.errors)}` : ''}`);

  // Let the world run on a little: an effect that acts after the machine ended is a leak too.
  const until = clock.now() + AFTERMATH_MS;
  while ((clock.peek() ?? Infinity) <= until) {
    clock.step();
    if (macro) await macrotask();
    else for (let i = 0; i < hops; i++) await null;
  }
  sub.unsubscribe();
  actor.stop();
  current = null;

  violations.push(
    ...checkInvariants({ config, kernel, backend, records, finalState, output, endedAt, stopTimes, parentDiedAt }),
  );
  for (const v of violations) trace(`VIOLATION ${v}`);
  return { seed, plan, ok: violations.length === 0, violations, finalState, output, endedAt, trace: lines };
}
