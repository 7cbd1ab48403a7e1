// A run driven in this process: the real machine over the Linux backend, through the runner
// `vmsandbox run` uses (machines/runner.ts), without the CLI around it.

import type { Actor } from 'xstate';
import type { VmConfig } from '../../../config/types.js';
import { createLinuxBackend, type LinuxBackend, type LinuxBackendOptions } from '../../../effects/linux/backend.js';
import type { KernelEvent } from '../../../effects/port.js';
import type { ServiceOutput } from '../../../effects/linux/output.js';
import { runSandbox, type RunnerHooks, type SandboxRun } from '../../../machines/runner.js';
import type { SandboxMachine, SandboxOutput } from '../../../machines/sandbox.js';
import { trackNamespace } from './leftovers.js';
import type { TestVm } from './vm.js';

export interface Run {
  backend: LinuxBackend;
  actor: Actor<SandboxMachine>;
  /** The runner: requestStop('SIGTERM') is what the manager's SIGTERM does. */
  run: SandboxRun;
  done: Promise<SandboxOutput>;
  waitFor(state: string, timeoutMs?: number): Promise<void>;
  events: KernelEvent[];
  /** The services' output as the backend forwards it (backend.output$), in order. */
  output: ServiceOutput[];
}

/** Run the real machine with the Linux backend (vm: to track its PID namespace for leftovers()). */
export function start(config: VmConfig, vm?: TestVm, opts: { backend?: LinuxBackendOptions; hooks?: RunnerHooks } = {}): Run {
  const backend = createLinuxBackend(config, { log: (m) => console.warn(`[${config.name}] ${m}`), ...opts.backend });
  const events: KernelEvent[] = [];
  const output: ServiceOutput[] = [];
  backend.output$.subscribe((o) => output.push(o));
  const run = runSandbox(backend, config, {
    ...opts.hooks,
    onEvent: (e) => {
      events.push(e);
      opts.hooks?.onEvent?.(e);
    },
  });
  const actor = run.actor;
  const done = run.done.then(
    (out) => {
      backend.dispose();
      return out;
    },
    (e: unknown) => {
      backend.dispose();
      return { outcome: 'setupFailed', exitCode: 111, errors: [String(e)], teardownFailed: true, stopRequests: 0 } as SandboxOutput;
    },
  );
  if (vm && actor) {
    let tracked = false;
    const track = () => {
      const pid = backend.state.initPid;
      if (!tracked && pid !== null) {
        tracked = true;
        trackNamespace(vm, pid);
      }
    };
    track();
    actor.subscribe(track);
  }
  const refused = () => new Error(`the plan was refused, no machine ran: ${JSON.stringify(run.refused)}`);
  const waitFor = (state: string, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
      if (!actor) return reject(refused());
      if (actor.getSnapshot().matches(state as never)) return resolve();
      const t = setTimeout(() => {
        s.unsubscribe();
        reject(new Error(`timed out waiting for ${state}; at ${JSON.stringify(actor.getSnapshot().value)}; errors ${JSON.stringify(actor.getSnapshot().context.errors)}`));
      }, timeoutMs);
      const s = actor.subscribe((snap) => {
        if (snap.matches(state as never)) {
          clearTimeout(t);
          queueMicrotask(() => s.unsubscribe());
          resolve();
        } else if (snap.status === 'done') {
          clearTimeout(t);
          queueMicrotask(() => s.unsubscribe());
          reject(new Error(`machine finished (${JSON.stringify(snap.output)}) before reaching ${state}`));
        }
      });
    });
  return {
    backend,
    get actor() {
      if (!actor) throw refused();
      return actor;
    },
    run,
    done,
    waitFor,
    events,
    output,
  };
}

/** Wait for the next SERVICE_EXITED of a service. */
export function serviceExit(run: Run, name: string, timeoutMs = 10_000): Promise<{ code: number | null; signal: string | null; pid: number }> {
  const seen = run.events.find((e) => e.type === 'SERVICE_EXITED' && e.service === name);
  if (seen && seen.type === 'SERVICE_EXITED') return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`${name} did not exit within ${timeoutMs} ms; events ${JSON.stringify(run.events)}`));
    }, timeoutMs);
    const sub = run.backend.events$.subscribe((e) => {
      if (e.type === 'SERVICE_EXITED' && e.service === name) {
        clearTimeout(t);
        sub.unsubscribe();
        resolve(e);
      }
    });
  });
}

/** Request a stop as the manager's SIGTERM does, and wait for the machine to finish. */
export async function stop(run: Run): Promise<SandboxOutput> {
  run.run.requestStop('SIGTERM');
  return run.done;
}
