// What must hold after every simulated run, whatever the fault plan did. Each check returns the
// violations it found as sentences an engineer can act on.

import type { VmConfig } from '../config/types.js';
import type { TransitionRecord } from '../machines/observe.js';
import { exitCodeFor } from '../machines/outcome.js';
import type { SandboxOutput } from '../machines/sandbox.js';
import { CLEANUP_MS } from '../machines/sandbox.js';
import type { SimBackend } from './backend.js';
import type { SimKernel } from './kernel.js';

/** Allowance on top of the configured deadlines for the steps between them. */
export const SLACK_MS = 100;

export interface RunFacts {
  config: VmConfig;
  kernel: SimKernel;
  backend: SimBackend;
  records: (TransitionRecord & { at: number })[];
  finalState: string | null;
  output: SandboxOutput | null;
  endedAt: number | null;
  /** Virtual times at which the machine was sent a stop request / told its parent died. */
  stopTimes: number[];
  parentDiedAt: number | null;
}

export function checkInvariants(f: RunFacts): string[] {
  const v: string[] = [];
  const { config, kernel, backend } = f;
  const { setupMs, stopMs, killMs } = config.timeouts;

  if (f.finalState !== 'stopped' && f.finalState !== 'failed') {
    v.push(`run did not terminate: last state ${f.records.at(-1)?.state ?? 'none'}`);
  }

  // Bounded: setup by setupMs, teardown by stopMs + killMs + cleanup, each with a little slack.
  const running = f.records.find((r) => r.state === 'running');
  if (running && running.at > setupMs + SLACK_MS) v.push(`setup took ${running.at} ms, bound is setupMs ${setupMs} ms`);
  const teardown = f.records.find((r) => r.state.startsWith('gracefulStop') || r.state === 'timeoutKill');
  if (teardown && f.endedAt !== null) {
    const took = f.endedAt - teardown.at;
    const bound = stopMs + killMs + CLEANUP_MS + SLACK_MS;
    if (took > bound) v.push(`teardown took ${took} ms, bound is stopMs + killMs + cleanup = ${bound} ms`);
  }

  // Never dropped: a stop request or parent death ends the run within its deadlines from then on.
  if (f.endedAt !== null) {
    const firstStop = f.stopTimes[0];
    const stopBound = stopMs + killMs + CLEANUP_MS + SLACK_MS;
    if (firstStop !== undefined && f.endedAt - firstStop > stopBound) {
      v.push(`stop request at ${firstStop} ms was not honoured: run ended ${f.endedAt - firstStop} ms later, bound ${stopBound} ms`);
    }
    const deathBound = killMs + CLEANUP_MS + SLACK_MS;
    if (f.parentDiedAt !== null && f.endedAt - f.parentDiedAt > deathBound) {
      v.push(`parent death at ${f.parentDiedAt} ms was not honoured: run ended ${f.endedAt - f.parentDiedAt} ms later, bound ${deathBound} ms`);
    }
  }

  // Nothing left: processes, cgroups, mounts, runtime directory.
  const procs = [...kernel.procs.values()].filter((p) => p.vm === config.name);
  if (procs.length) v.push(`processes left: ${procs.map((p) => `${p.name}[${p.pid}]`).join(', ')}`);
  const root = backend.vm.cgroupRoot;
  const cgroups = [...kernel.cgroups.keys()].filter((c) => c === root || c.startsWith(root + '/'));
  if (cgroups.length) v.push(`cgroups left: ${cgroups.join(', ')}`);
  const mounts = kernel.mounts.filter((m) => m.vm === config.name);
  if (mounts.length) v.push(`mounts left: ${mounts.map((m) => `${m.target}@ns${m.ns}`).join(', ')}`);
  if (kernel.dirs.has(config.runtimeDir)) v.push(`runtime directory left: ${config.runtimeDir}`);

  // No signal reached anything outside this VM (a stale PID reused by a stranger included).
  for (const d of kernel.deliveries) {
    if (d.targetVm !== config.name) v.push(`${d.sig} reached ${d.targetName}[${d.pid}] outside the VM at ${d.at} ms`);
  }

  // No service ran before its uid drop, Landlock domain and cgroup leaf were in place.
  const degradedFs = backend.landlockReport?.degraded.includes('filesystem rules') ?? false;
  for (const e of kernel.execs.filter((x) => x.vm === config.name && x.name !== 'vmsandbox-init')) {
    const s = config.services.find((x) => x.name === e.name);
    if (!s) {
      v.push(`unknown process ${e.name} exec'd in the VM`);
      continue;
    }
    const r = e.rec;
    if (r.uid !== s.uid || r.gid !== s.gid) v.push(`${s.name} exec'd as ${r.uid}:${r.gid}, config says ${s.uid}:${s.gid}`);
    if (r.cgroup !== `${root}/${s.name}`) v.push(`${s.name} exec'd in cgroup ${r.cgroup}, not its leaf`);
    if (r.landlock === null && !degradedFs) v.push(`${s.name} exec'd without its Landlock domain`);
    if (!r.noNewPrivs) v.push(`${s.name} exec'd without no_new_privs`);
    if (r.pidns !== backend.vm.pidns) v.push(`${s.name} exec'd outside the VM's PID namespace`);
  }

  // Every failure carries a reason, and the exit status matches the outcome.
  let errors = 0;
  for (const r of f.records) {
    if (r.errors > errors && !r.reason) v.push(`failure without a reason at state ${r.state}`);
    errors = r.errors;
  }
  const out = f.output;
  if (out) {
    if (f.finalState === 'failed' && out.errors.length === 0) v.push('ended failed with no recorded reason');
    if (out.exitCode !== exitCodeFor(out.outcome, out.teardownFailed)) {
      v.push(`exit code ${out.exitCode} does not match outcome ${out.outcome}`);
    }
    const cleanOutcome = ['stopped', 'forced', 'poweredOff'].includes(out.outcome) && !out.teardownFailed;
    if ((f.finalState === 'stopped') !== cleanOutcome) v.push(`final state ${f.finalState} but outcome ${out.outcome}`);
    if ((out.outcome === 'stopped' || out.outcome === 'forced') && f.stopTimes.length === 0 && out.errors.length === 0) {
      v.push(`outcome ${out.outcome} without any stop request`);
    }
  }
  return v;
}
