// The VM sandbox lifecycle as one pure XState v5 machine.
//
// Setup:    setupNamespaces → mount → landlock → cgroup → launch (one service at a time)
// Life:     running
// Teardown: gracefulStop (vmm: requesting ⇄ waiting, then services) → teardown (kill → cleanup) → stopped | failed;
//           gracefulStop → teardown after stopMs is the timeout-kill (the delay named timeoutKill).
//
// The machine holds data only. Every effect is an actor named after a port operation
// (effects/port.ts) and supplied by a backend through provide() — see bindBackend.ts.
// Every state honours a stop request, parent death and the init's death; every path reaches
// teardown, so a run never ends with something of the VM left behind.

import { and, assign, fromPromise, setup } from 'xstate';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { vmmOf } from '../config/types.js';
import type {
  CgroupsInput,
  JournalInput,
  KernelEvent,
  LandlockInput,
  LandlockReport,
  LaunchInput,
  LaunchResult,
  MountInput,
  NamespacesInput,
  OthersInput,
  StopInput,
} from '../effects/port.js';
import type { SandboxPlan } from '../plan/types.js';
import { describeError, type SandboxEffects } from '../effects/port.js';
import { effectsOf } from './systemEffects.js';
import type { Outcome } from './outcome.js';
import { exitCodeFor } from './outcome.js';

/** Fixed bound on the cleanup step (rmdir with retries), on top of the configured deadlines. */
export const CLEANUP_MS = 2000;

/** The longest a stop can take: the machine's deadlines plus its fixed cleanup bound. */
export function stopBoundMs(config: VmConfig): number {
  return config.timeouts.stopMs + config.timeouts.killMs + CLEANUP_MS;
}

/** Extra time, on top of stopBoundMs, before a manager gives up on itself (its watchdog). */
export const WATCHDOG_SLACK_MS = 1000;

/** When a manager that starts stopping at `now` will be gone at the latest (its lock record says so). */
export function stopByFrom(now: number, config: VmConfig): number {
  return now + stopBoundMs(config) + WATCHDOG_SLACK_MS;
}

/**
 * How long after a stop request to the guest was answered the machine sends it again (qmp,
 * cloudHypervisorApi, command; a signal is sent once). A guest still booting has not armed its
 * power button yet and drops the request: under TCG the test guest arms it 2.5–3.5 s after QEMU
 * starts, but the VM is "ready" (QMP answers) after 0.15 s, so an `s6-svc -d` right after
 * `s6-svc -u` would otherwise always be forced after stopMs. One second: a guest powers off at
 * most about a second after it can (well inside the 10–20 s stopMs VMs use, so several repeats
 * fit), and a repeat costs one QMP/API connection or one short command, not a busy loop; a second
 * press on a guest that is already shutting down is harmless (its handler is already running).
 */
export const STOP_REPEAT_MS = 1000;

export interface SandboxContext {
  config: VmConfig;
  /** What setup does, decided before the machine starts (plan/index.ts); each effect gets its slice. */
  plan: SandboxPlan;
  /** Services in launch order: the others in config order, the vmm last. */
  order: string[];
  /** Index into order of the next service to launch. */
  next: number;
  /** Live services by name (pid), as launched and not yet reported exited. */
  pids: Record<string, number>;
  landlock: LandlockReport | null;
  outcome: Outcome | null;
  /** Every failure, in order, each with its reason. The first one decides the outcome. */
  errors: string[];
  /** The reason for the most recent transition worth telling an operator. */
  reason: string | null;
  /** Stop requests made to the vmm during the graceful stop (answered or failed; not one cut short). */
  stopRequests: number;
  teardownFailed: boolean;
}

export type SandboxEvent = KernelEvent;

export interface SandboxInput {
  config: VmConfig;
  plan: SandboxPlan;
}

function serviceNamed(config: VmConfig, name: string): ServiceConfig | undefined {
  return config.services.find((s) => s.name === name);
}

/** The vmm's stop method as the log names it: "qmp", "signal SIGTERM", … */
function stopMethodName(config: VmConfig): string {
  const how = vmmOf(config).stop;
  return 'signal' in how ? `signal ${how.signal}` : Object.keys(how)[0]!;
}

function describeExit(e: { code: number | null; signal: string | null; oomKill?: boolean }): string {
  if (e.signal && e.oomKill) return `killed by ${e.signal} (out of memory: the OOM killer acted in its cgroup leaf, memory.max)`;
  return e.signal ? `killed by ${e.signal}` : `exit code ${e.code}`;
}

// Each effect's input is its slice of the plan (effects/port.ts).
type NoInput = JournalInput;

/**
 * An effect slot the machine names: it runs the effect of the backend attached to its actor system
 * (systemEffects.ts: the runner and the simulator attach it), or the one a caller provides (bindBackend.ts).
 */
function port<O, I>(op: keyof SandboxEffects) {
  return fromPromise<O, I>(({ input, signal, system }) => (effectsOf(system, op)[op] as (i: I, s: AbortSignal) => Promise<O>)(input, signal));
}

export const sandboxMachine = setup({
  types: {
    context: {} as SandboxContext,
    events: {} as SandboxEvent,
    input: {} as SandboxInput,
  },
  actors: {
    createNamespaces: port<{ initPid: number }, NamespacesInput>('createNamespaces'),
    mount: port<void, MountInput>('mount'),
    prepareLandlock: port<LandlockReport, LandlockInput>('prepareLandlock'),
    createCgroups: port<void, CgroupsInput>('createCgroups'),
    launch: port<LaunchResult, LaunchInput>('launch'),
    requestStop: port<void, StopInput>('requestStop'),
    terminateServices: port<void, OthersInput>('terminateServices'),
    killAll: port<void, NoInput>('killAll'),
    cleanup: port<void, NoInput>('cleanup'),
  },
  delays: {
    setupDeadline: ({ context }) => context.config.timeouts.setupMs,
    // Named for what it ends in: the graceful stop's deadline is the timeout-kill, so the edge
    // gracefulStop → teardown reads "after: timeoutKill" in the graph and in the log's event.
    timeoutKill: ({ context }) => context.config.timeouts.stopMs,
    killDeadline: ({ context }) => context.config.timeouts.killMs,
    cleanupDeadline: CLEANUP_MS,
    stopRepeat: STOP_REPEAT_MS,
  },
  guards: {
    moreToLaunch: ({ context }) => context.next < context.order.length,
    forced: ({ event }) => event.type === 'STOP_REQUESTED' && event.force,
    isVmmExit: ({ context, event }) =>
      event.type === 'SERVICE_EXITED' && serviceNamed(context.config, event.service)?.vmm === true,
    vmmExitedCleanly: ({ event }) => event.type === 'SERVICE_EXITED' && event.code === 0 && !event.signal,
    exitIgnored: ({ context, event }) =>
      event.type === 'SERVICE_EXITED' && serviceNamed(context.config, event.service)?.onExit === 'ignore',
    vmmGone: ({ context }) => !(context.order[context.order.length - 1]! in context.pids),
    /** No stop request has been answered or failed yet: this failure is the first request's. */
    firstStopRequest: ({ context }) => context.stopRequests === 0,
    /** The stop method asks the guest (qmp, API, command): repeat it. A signal is sent once. */
    stopRepeats: ({ context }) => !('signal' in vmmOf(context.config).stop),
    clean: ({ context }) =>
      !context.teardownFailed &&
      (context.outcome === null ||
        context.outcome === 'stopped' ||
        context.outcome === 'forced' ||
        context.outcome === 'poweredOff'),
  },
  actions: {
    recordExit: assign(({ context, event }) => {
      if (event.type !== 'SERVICE_EXITED') return {};
      const pids = { ...context.pids };
      delete pids[event.service];
      return { pids, reason: `${event.service} (pid ${event.pid}) ${describeExit(event)}` };
    }),
    recordStop: assign(({ context, event }) => {
      const how = event.type === 'STOP_REQUESTED' ? `${event.signal}${event.force ? ', forced' : ''}` : event.type;
      return {
        outcome: context.outcome ?? (event.type === 'STOP_REQUESTED' && event.force ? 'forced' : 'stopped'),
        reason: `stop requested (${how})`,
      };
    }),
    /** Record a failure: the first one decides the outcome; all are kept with their reasons. */
    fail: assign(({ context }, p: { outcome: Outcome; reason: string }) => ({
      outcome: context.outcome ?? p.outcome,
      errors: [...context.errors, p.reason],
      reason: p.reason,
    })),
    /** A teardown problem: it does not change how the run ended, only that it ended unclean. */
    teardownProblem: assign(({ context }, p: { reason: string }) => ({
      teardownFailed: true,
      errors: [...context.errors, p.reason],
      reason: p.reason,
    })),
    /** An effect rejected (the error event of an invoke); setup steps decide the outcome. */
    effectFailed: assign(({ context, event }, p: { step: string; setup: boolean }) => {
      const why = `${p.step} failed: ${describeError((event as { error?: unknown }).error)}`;
      return {
        outcome: context.outcome ?? (p.setup ? 'setupFailed' : null),
        errors: [...context.errors, why],
        reason: why,
      };
    }),
    /** A stop request was answered: count it and say so. */
    stopRequestSent: assign(({ context }) => ({
      stopRequests: context.stopRequests + 1,
      reason: `stop request ${context.stopRequests + 1} sent (${stopMethodName(context.config)})`,
    })),
    /**
     * A repeated stop request failed. Usually the vmm is exiting (its QMP or API socket closed:
     * ECONNRESET, ECONNREFUSED, ENOENT): not a reason to force it; noted, and the wait goes on.
     */
    stopRepeatFailed: assign(({ context, event }) => ({
      stopRequests: context.stopRequests + 1,
      reason:
        `stop request ${context.stopRequests + 1} failed (${stopMethodName(context.config)}): ` +
        `${describeError((event as { error?: unknown }).error)}; not forcing: waiting for the vmm to exit`,
    })),
    countStopRequest: assign(({ context }) => ({ stopRequests: context.stopRequests + 1 })),
    recordForced: assign(({ context }) => ({
      // A forced stop only changes a requested stop's outcome; a crash stays a crash.
      outcome: context.outcome === 'stopped' || context.outcome === null ? 'forced' : context.outcome,
    })),
  },
}).createMachine({
  id: 'vmsandbox',
  context: ({ input }) => ({
    config: input.config,
    plan: input.plan,
    order: input.plan.services.map((s) => s.name),
    next: 0,
    pids: {},
    landlock: null,
    outcome: null,
    errors: [],
    reason: null,
    stopRequests: 0,
    teardownFailed: false,
  }),
  initial: 'setup',
  states: {
    setup: {
      description: 'Build the sandbox; bounded by timeouts.setupMs.',
      initial: 'setupNamespaces',
      after: {
        setupDeadline: {
          target: 'teardown',
          actions: { type: 'fail', params: ({ context }) => ({ outcome: 'setupFailed', reason: `setup did not finish within ${context.config.timeouts.setupMs} ms` }) },
        },
      },
      on: {
        // A stop during setup aborts the step in flight; the VM never comes up, which is what was asked.
        STOP_REQUESTED: { target: 'teardown', actions: 'recordStop' },
        PARENT_DIED: { target: 'teardown', actions: { type: 'fail', params: () => ({ outcome: 'parentDied', reason: 'supervisor died during setup' }) } },
        INIT_EXITED: {
          target: 'teardown',
          actions: { type: 'fail', params: ({ event }) => ({ outcome: 'initDied', reason: `sandbox init ${describeExitOf(event)} during setup` }) },
        },
        SERVICE_EXITED: [
          { guard: 'exitIgnored', actions: 'recordExit' },
          {
            target: 'teardown',
            actions: [
              'recordExit',
              { type: 'fail', params: ({ event }) => ({ outcome: 'serviceCrashed', reason: event.type === 'SERVICE_EXITED' ? `${event.service} ${describeExit(event)} during setup` : 'service exited' }) },
            ],
          },
        ],
      },
      states: {
        setupNamespaces: {
          description: 'Clone the init into a new PID + mount namespace.',
          invoke: {
            id: 'createNamespaces',
            src: 'createNamespaces',
            input: ({ context }) => ({ cgroup: context.plan.cgroup, namespaces: context.plan.namespaces }),
            onDone: { target: 'mount', actions: assign({ reason: ({ event }) => `sandbox init started (pid ${event.output.initPid})` }) },
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'setupNamespaces', setup: true } } },
          },
        },
        mount: {
          description: 'Read-only root, fresh /proc, /sys, minimal /dev, runtime dir, storage.',
          invoke: {
            id: 'mount',
            src: 'mount',
            input: ({ context }) => ({ runtimeDir: context.plan.runtimeDir, dirs: context.plan.dirs, mounts: context.plan.mounts }),
            onDone: 'landlock',
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'mount', setup: true } } },
          },
        },
        landlock: {
          description: 'Probe the ABI, prepare one ruleset per service.',
          invoke: {
            id: 'prepareLandlock',
            src: 'prepareLandlock',
            input: ({ context }) => ({ landlock: context.plan.landlock, services: context.plan.services }),
            onDone: { target: 'cgroup', actions: assign({ landlock: ({ event }) => event.output }) },
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'landlock', setup: true } } },
          },
        },
        cgroup: {
          description: 'Create <parent>/<vm>/ with one leaf per service, limits written.',
          invoke: {
            id: 'createCgroups',
            src: 'createCgroups',
            input: ({ context }) => ({ cgroup: context.plan.cgroup }),
            onDone: 'launch',
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'cgroup', setup: true } } },
          },
        },
        launch: {
          description: 'Launch the services one by one, the vmm last.',
          invoke: {
            id: 'launch',
            src: 'launch',
            input: ({ context }) => ({ service: context.plan.services[context.next]! }),
            onDone: {
              target: 'launched',
              actions: assign(({ context, event }) => ({
                pids: { ...context.pids, [event.output.service]: event.output.pid },
                next: context.next + 1,
                reason: `launched ${event.output.service} (pid ${event.output.pid})`,
              })),
            },
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'launch', setup: true } } },
          },
        },
        launched: {
          always: [{ guard: 'moreToLaunch', target: 'launch' }, { target: '#vmsandbox.running' }],
        },
      },
    },
    running: {
      description: 'The VM runs; the vmm exiting ends it.',
      on: {
        STOP_REQUESTED: [
          { guard: 'forced', target: 'teardown', actions: 'recordStop' },
          { target: 'gracefulStop', actions: 'recordStop' },
        ],
        SERVICE_EXITED: [
          {
            guard: and(['isVmmExit', 'vmmExitedCleanly']),
            target: 'gracefulStop.services',
            actions: [
              'recordExit',
              assign(({ context }) => ({ outcome: context.outcome ?? 'poweredOff', reason: 'the VM powered off' })),
            ],
          },
          {
            guard: 'isVmmExit',
            target: 'gracefulStop.services',
            actions: [
              'recordExit',
              { type: 'fail', params: ({ event }) => ({ outcome: 'serviceCrashed', reason: event.type === 'SERVICE_EXITED' ? `vmm ${event.service} ${describeExit(event)}` : 'vmm exited' }) },
            ],
          },
          { guard: 'exitIgnored', actions: 'recordExit' },
          {
            target: 'gracefulStop',
            actions: [
              'recordExit',
              { type: 'fail', params: ({ event }) => ({ outcome: 'serviceCrashed', reason: event.type === 'SERVICE_EXITED' ? `${event.service} ${describeExit(event)}` : 'service exited' }) },
            ],
          },
        ],
        INIT_EXITED: {
          target: 'teardown',
          actions: { type: 'fail', params: ({ event }) => ({ outcome: 'initDied', reason: `sandbox init ${describeExitOf(event)}` }) },
        },
        PARENT_DIED: { target: 'teardown', actions: { type: 'fail', params: () => ({ outcome: 'parentDied', reason: 'supervisor died' }) } },
      },
    },
    gracefulStop: {
      description: 'Ask the vmm to stop (a request to the guest again every second), then SIGTERM the others; bounded by timeouts.stopMs.',
      initial: 'vmm',
      after: {
        timeoutKill: {
          target: 'teardown',
          description: 'timeout-kill: the graceful stop missed timeouts.stopMs; kill what is left',
          actions: [
            'recordForced',
            assign({ reason: ({ context }) => `graceful stop did not finish within ${context.config.timeouts.stopMs} ms` }),
          ],
        },
      },
      on: {
        STOP_REQUESTED: { target: 'teardown', actions: ['recordForced', assign({ reason: 'second stop request: forcing' })] },
        // The stop was already under way: it ends forced (a crash stays a crash), with the reason noted.
        PARENT_DIED: {
          target: 'teardown',
          actions: ['recordForced', { type: 'fail', params: () => ({ outcome: 'parentDied', reason: 'supervisor died during graceful stop' }) }],
        },
        INIT_EXITED: {
          target: 'teardown',
          actions: { type: 'fail', params: ({ event }) => ({ outcome: 'initDied', reason: `sandbox init ${describeExitOf(event)} during graceful stop` }) },
        },
        SERVICE_EXITED: { actions: 'recordExit' },
      },
      states: {
        vmm: {
          description: 'Ask the vmm to stop; a request to the guest is repeated every STOP_REPEAT_MS until the vmm exits.',
          initial: 'requesting',
          always: { guard: 'vmmGone', target: 'services' },
          on: {
            SERVICE_EXITED: [{ guard: 'isVmmExit', target: 'services', actions: 'recordExit' }, { actions: 'recordExit' }],
          },
          states: {
            requesting: {
              invoke: {
                id: 'requestStop',
                src: 'requestStop',
                input: ({ context }) => ({ vmm: vmmOf(context.config).name, uid: vmmOf(context.config).uid, stop: context.plan.stop }),
                onDone: { target: 'waiting', actions: 'stopRequestSent' },
                onError: [
                  // The first request failing means the stop cannot be asked for at all: force it.
                  {
                    guard: 'firstStopRequest',
                    target: '#vmsandbox.teardown',
                    actions: ['countStopRequest', 'recordForced', { type: 'effectFailed', params: { step: 'requestStop', setup: false } }],
                  },
                  // A repeat failing most likely raced the vmm's exit: keep waiting (stopMs still bounds it).
                  { target: 'waiting', actions: 'stopRepeatFailed' },
                ],
              },
            },
            waiting: {
              after: { stopRepeat: { guard: 'stopRepeats', target: 'requesting' } },
            },
          },
        },
        services: {
          invoke: {
            id: 'terminateServices',
            src: 'terminateServices',
            input: ({ context }) => ({ vmm: vmmOf(context.config).name }),
            onDone: '#vmsandbox.teardown',
            onError: { target: '#vmsandbox.teardown', actions: { type: 'effectFailed', params: { step: 'terminateServices', setup: false } } },
          },
        },
      },
    },
    teardown: {
      description: 'Kill what is left, then remove what the VM created; every run ends here.',
      initial: 'kill',
      on: {
        // Both steps are bounded already: a request is noted, the teardown goes on.
        STOP_REQUESTED: { actions: assign({ reason: 'stop requested again: already stopping' }) },
        PARENT_DIED: { actions: assign({ reason: 'supervisor died: already stopping' }) },
      },
      states: {
        kill: {
          description: 'cgroup.kill + SIGKILL the init, wait until empty; bounded by timeouts.killMs.',
          invoke: {
            id: 'killAll',
            src: 'killAll',
            input: () => ({}),
            onDone: { target: 'cleanup', actions: assign({ pids: {} }) },
            onError: { target: 'cleanup', actions: [{ type: 'effectFailed', params: { step: 'killAll', setup: false } }, assign({ teardownFailed: true })] },
          },
          after: {
            killDeadline: {
              target: 'cleanup',
              actions: [
                {
                  type: 'teardownProblem',
                  params: ({ context }) => ({ reason: `killAll did not finish within ${context.config.timeouts.killMs} ms` }),
                },
              ],
            },
          },
          on: {
            SERVICE_EXITED: { actions: 'recordExit' },
          },
        },
        cleanup: {
          description: 'Remove the cgroups and the runtime directory.',
          invoke: {
            id: 'cleanup',
            src: 'cleanup',
            input: () => ({}),
            onDone: '#vmsandbox.done',
            onError: { target: '#vmsandbox.done', actions: [{ type: 'effectFailed', params: { step: 'cleanup', setup: false } }, assign({ teardownFailed: true })] },
          },
          after: {
            cleanupDeadline: {
              target: '#vmsandbox.done',
              actions: { type: 'teardownProblem', params: { reason: `cleanup did not finish within ${CLEANUP_MS} ms` } },
            },
          },
        },
      },
    },
    done: {
      always: [{ guard: 'clean', target: 'stopped' }, { target: 'failed' }],
    },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
  output: ({ context }) => ({
    outcome: context.outcome ?? 'stopped',
    exitCode: exitCodeFor(context.outcome, context.teardownFailed),
    errors: context.errors,
    teardownFailed: context.teardownFailed,
    stopRequests: context.stopRequests,
  }),
});

export interface SandboxOutput {
  outcome: Outcome;
  exitCode: number;
  errors: string[];
  teardownFailed: boolean;
  /** How many stop requests the graceful stop made (0 when there was none; a signal is sent once). */
  stopRequests: number;
}

function describeExitOf(event: SandboxEvent): string {
  return event.type === 'INIT_EXITED' || event.type === 'SERVICE_EXITED' ? describeExit(event) : 'exited';
}

export type SandboxMachine = typeof sandboxMachine;
