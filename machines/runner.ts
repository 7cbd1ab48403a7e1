// runSandbox: the one place where the machine meets a backend and the world. `vmsandbox run`
// (s6/run.ts), the kernel tests and the simulator all run a sandbox through it, so what they test
// is what s6 runs: the events a backend reports, stop requests by signal (a second SIGTERM or a
// SIGINT forces), parent death delivered once whatever its sources, the watchdog a stopping
// manager sets on itself, and readiness probed only while the VM runs.

import { createActor, toPromise, type Actor, type InspectionEvent } from 'xstate';
import type { VmConfig } from '../config/types.js';
import type { Backend, KernelEvent, SandboxEffects } from '../effects/port.js';
import type { Refusal } from '../plan/types.js';
import { exitCodeFor } from './outcome.js';
import { attachEffects } from './systemEffects.js';
import { transitionInspector, type TransitionRecord } from './observe.js';
import { sandboxMachine, stopBoundMs, WATCHDOG_SLACK_MS, type SandboxInput, type SandboxMachine, type SandboxOutput } from './sandbox.js';

/** Timers in the machine's time: real time by default, the simulator's virtual clock in it. */
export interface RunnerClock {
  setTimeout(fn: (...args: unknown[]) => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface RunnerHooks {
  /** A machine other than the product's (the simulator's mutants). */
  machine?: SandboxMachine;
  /**
   * Make the actor of the machine over these effects (not started). Default: bind the machine to
   * them (provide()). The simulator binds a machine once for all its runs: provide() costs more
   * than a simulated lifecycle.
   */
  actorFor?: (effects: SandboxEffects, options: ActorOptions) => Actor<SandboxMachine>;
  /** The clock of the machine's delays and of the watchdog. */
  clock?: RunnerClock;
  /** Every state change, as one record (logs, the status socket, the owner's lock phase). */
  onRecord?: (r: TransitionRecord) => void;
  /** Every event delivered to the machine (after PARENT_DIED's dedupe). */
  onEvent?: (ev: KernelEvent) => void;
  /** Readiness: probed once the machine is running, aborted when it leaves running. */
  ready?: { probe: (signal: AbortSignal) => Promise<boolean>; onReady: () => void };
  /**
   * Called when the teardown did not end within the machine's own bounds plus WATCHDOG_SLACK_MS
   * after the first stop request or parent death (a wedged effect): the caller ends the process.
   */
  onWatchdog?: (boundMs: number) => void;
  /** Turn this process's SIGTERM and SIGINT into stop requests (the manager s6 runs). */
  processSignals?: boolean;
}

export interface SandboxRun {
  /** The machine's actor; null when the plan was refused (no machine ever ran). */
  readonly actor: Actor<SandboxMachine> | null;
  /** A stop request by signal: the first SIGTERM asks for a graceful stop, a second one or a SIGINT forces it. */
  requestStop(signal: 'SIGTERM' | 'SIGINT'): void;
  /** An event from a source outside the backend (the supervisor's pidfd). */
  deliver(ev: KernelEvent): void;
  /** The machine's output, once it ended and the runner let go of its hooks. */
  readonly done: Promise<SandboxOutput>;
  /** The plan's refusals when it was refused (the machine never started), else null. */
  readonly refused: Refusal[] | null;
}

export interface ActorOptions {
  input: SandboxInput;
  clock?: RunnerClock;
  inspect?: (ev: InspectionEvent) => void;
}

const realClock: RunnerClock = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

export function runSandbox(backend: Backend, config: VmConfig, hooks: RunnerHooks = {}): SandboxRun {
  const clock = hooks.clock ?? realClock;
  const planned = backend.plan();
  if (!planned.ok) {
    // The host cannot enforce this config: refused before anything exists (exit 111), every
    // refusal with its field, as `vmsandbox check` reports them.
    const errors = planned.refusals.map((r) => `${r.field}: ${r.message}`);
    const output: SandboxOutput = { outcome: 'setupFailed', exitCode: exitCodeFor('setupFailed', false), errors, teardownFailed: false, stopRequests: 0 };
    return { actor: null, requestStop: () => undefined, deliver: () => undefined, done: Promise.resolve(output), refused: planned.refusals };
  }
  const options: ActorOptions = {
    input: { config, plan: planned.plan },
    ...(hooks.clock ? { clock: hooks.clock } : {}),
    ...(hooks.onRecord ? { inspect: transitionInspector(hooks.onRecord) } : {}),
  };
  let actor: Actor<SandboxMachine>;
  if (hooks.actorFor) actor = hooks.actorFor(backend.effects, options);
  else {
    // The machine as it is, its effect slots run through this backend (no provide(): systemEffects.ts).
    actor = createActor(hooks.machine ?? sandboxMachine, options as never);
    attachEffects(actor.system, backend.effects);
  }

  let watchdog: unknown = null;
  const startWatchdog = () => {
    if (watchdog !== null || !hooks.onWatchdog) return;
    const bound = stopBoundMs(config) + WATCHDOG_SLACK_MS;
    watchdog = clock.setTimeout(() => hooks.onWatchdog!(bound), bound);
    (watchdog as { unref?: () => void }).unref?.();
  };

  let parentDied = false;
  let ended = false;
  const deliver = (ev: KernelEvent) => {
    // After the end the manager is gone: nothing is listening any more.
    if (ended || actor.getSnapshot().status !== 'active') return;
    if (ev.type === 'PARENT_DIED') {
      // The kernel's parent-death signal and the supervisor's pidfd both report it: once is the fact.
      if (parentDied) return;
      parentDied = true;
    }
    if (ev.type === 'STOP_REQUESTED' || ev.type === 'PARENT_DIED') startWatchdog();
    hooks.onEvent?.(ev);
    actor.send(ev);
  };

  let stops = 0;
  const requestStop = (signal: 'SIGTERM' | 'SIGINT') => {
    stops += 1;
    deliver({ type: 'STOP_REQUESTED', signal, force: signal === 'SIGINT' || stops > 1 });
  };

  const releases: Array<() => void> = [];
  if (hooks.processSignals) {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      const h = () => requestStop(sig);
      process.on(sig, h);
      releases.push(() => process.off(sig, h));
    }
  }
  const sub = backend.events$.subscribe(deliver);
  releases.push(() => sub.unsubscribe());

  if (hooks.ready) {
    const { probe, onReady } = hooks.ready;
    const probing = new AbortController();
    let started = false;
    const snaps = actor.subscribe((snap) => {
      if (!started && snap.matches('running')) {
        started = true;
        void probe(probing.signal).then((ok) => {
          if (ok && !probing.signal.aborted && actor.getSnapshot().matches('running')) onReady();
        });
      } else if (started && !snap.matches('running')) probing.abort();
    });
    releases.push(() => {
      probing.abort();
      snaps.unsubscribe();
    });
  }

  actor.start();
  const done = toPromise(actor)
    .finally(() => {
      ended = true;
      for (const r of releases.splice(0)) r();
      if (watchdog !== null) clock.clearTimeout(watchdog);
    })
    .then((output) => output as SandboxOutput);
  return { actor, requestStop, deliver, done, refused: null };
}
