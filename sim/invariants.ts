// What must hold after every simulated run, whatever the fault plan did. Each check returns the
// violations it found as sentences an engineer can act on.

import { serviceCgroupPath } from '../plan/cgroup.js';
import type { VmConfig } from '../config/types.js';
import type { TransitionRecord } from '../machines/observe.js';
import { exitCodeFor } from '../machines/outcome.js';
import type { SandboxOutput } from '../machines/sandbox.js';
import { CLEANUP_MS } from '../machines/sandbox.js';
import type { SimBackend } from './backend.js';
import type { Action, SimKernel } from './kernel.js';
import { managerPid } from './owner.js';

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
  /** What was left of the VM when the run ended (its manager let go of the VM then); null if it never ended. */
  leftAtEnd?: string[] | null;
  /** Every manager's backend that ran the VM, by manager (default: manager 1's is `backend`). */
  backends?: ReadonlyMap<number, SimBackend>;
}

/** Processes, cgroups, mounts and the runtime directory of the VM that exist now. */
export function leftovers(config: VmConfig, kernel: SimKernel, root: string): string[] {
  // Plain loops: this runs twice per simulated run, and almost always finds nothing.
  const v: string[] = [];
  let procs: string[] | null = null;
  for (const p of kernel.procs.values()) if (p.vm === config.name) (procs ??= []).push(`${p.name}[${p.pid}]`);
  if (procs) v.push(`processes left: ${procs.join(', ')}`);
  let cgroups: string[] | null = null;
  const below = root + '/';
  for (const c of kernel.cgroups.keys()) if (c === root || c.startsWith(below)) (cgroups ??= []).push(c);
  if (cgroups) v.push(`cgroups left: ${cgroups.join(', ')}`);
  let mounts: string[] | null = null;
  for (const m of kernel.mounts) if (m.vm === config.name) (mounts ??= []).push(`${m.target}@ns${m.ns}`);
  if (mounts) v.push(`mounts left: ${mounts.join(', ')}`);
  if (kernel.dirs.has(config.runtimeDir)) v.push(`runtime directory left: ${config.runtimeDir}`);
  return v;
}

const MANAGER_NAMES = ['nobody', 'the first manager', 'the second manager', '`vmsandbox finish`'];

function manager(id: number): string {
  return `${MANAGER_NAMES[id] ?? `manager ${id}`} (pid ${managerPid(id)})`;
}

function describeAction(a: Action): string {
  const did =
    a.verb.startsWith('SIG') ? `sent ${a.verb} to ${a.object}[${a.pid}]`
    : a.verb === 'spawn' ? `started ${a.object}[${a.pid}]`
    : a.verb === 'move' ? `moved pid ${a.pid} into cgroup ${a.object}`
    : a.verb === 'mkdir' ? `created cgroup ${a.object}`
    : a.verb === 'rmdir' ? `removed cgroup ${a.object}`
    : a.verb === 'cgroup.kill' ? `killed cgroup ${a.object}`
    : a.verb === 'mount' ? `mounted ${a.object}`
    : a.verb === 'unmount' ? `took down mount ${a.object} (it killed its namespace's last process)`
    : a.verb === 'mkdir-dir' ? `created runtime dir ${a.object}`
    : a.verb === 'rm-dir' ? `removed runtime dir ${a.object}`
    : `${a.verb} ${a.object}`;
  const owner = a.holder === 0 ? `nobody held the lock of vm ${a.vm}` : `${manager(a.holder)} owned vm ${a.vm}`;
  return `${manager(a.by)} ${did} at ${a.at} ms while ${owner}`;
}

/** At most this many foreign actions are spelled out; the rest are counted. */
const FOREIGN_SHOWN = 3;

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
  const teardown = f.records.find((r) => r.state.startsWith('gracefulStop') || r.state.startsWith('teardown'));
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

  // Nothing left: processes, cgroups, mounts, runtime directory. Judged when the run ended (before
  // another manager could take over and remove it) and again at the very end (late effects, and
  // what the other managers left).
  const root = backend.vm.cgroupRoot;
  const atEnd = f.leftAtEnd ?? [];
  v.push(...atEnd);
  for (const l of leftovers(config, kernel, root)) if (!atEnd.includes(l)) v.push(atEnd.length ? `${l} (at the end of the simulation)` : l);

  // No signal reached anything outside this VM (a stale PID reused by a stranger included).
  for (const d of kernel.deliveries) {
    if (d.targetVm !== config.name) v.push(`${d.sig} reached ${d.targetName}[${d.pid}] outside the VM at ${d.at} ms`);
  }

  // No service ran before its uid drop, Landlock domain and cgroup leaf were in place.
  for (const e of kernel.execs.filter((x) => x.vm === config.name && x.name !== 'vmsandbox-init')) {
    const ran = f.backends?.get(e.by) ?? backend;
    const degradedFs = ran.landlockReport?.abi === 0;
    const s = config.services.find((x) => x.name === e.name);
    if (!s) {
      v.push(`unknown process ${e.name} exec'd in the VM`);
      continue;
    }
    const r = e.rec;
    if (r.uid !== s.uid || r.gid !== s.gid) v.push(`${s.name} exec'd as ${r.uid}:${r.gid}, config says ${s.uid}:${s.gid}`);
    if (r.cgroup !== serviceCgroupPath(config, s.name)) v.push(`${s.name} exec'd in cgroup ${r.cgroup}, not its leaf`);
    if (r.landlock === null && !degradedFs) v.push(`${s.name} exec'd without its Landlock domain`);
    if (!r.noNewPrivs) v.push(`${s.name} exec'd without no_new_privs`);
    if (r.pidns !== ran.vm.pidns) v.push(`${s.name} exec'd outside the VM's PID namespace`);
  }

  // One owner per VM: no manager kills, removes or changes what another live manager owns. Every
  // action on a VM's objects was taken by the holder of the VM's lock at that moment.
  for (const a of kernel.foreign.slice(0, FOREIGN_SHOWN)) v.push(describeAction(a));
  const more = kernel.foreign.length - FOREIGN_SHOWN;
  if (more > 0) v.push(`and ${more} more actions by a manager that did not hold the VM's lock`);

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
