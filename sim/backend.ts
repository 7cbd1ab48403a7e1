// The simulator backend: the effects port implemented against the model kernel, with the fault
// plan deciding durations, failures and how processes behave. It follows the same contract as the
// Linux backend (effects/port.ts): serialized operations, abortable, teardown idempotent and
// driven by what exists. Like the Linux backend it journals the VM's cgroup and runtime directory
// before creating them, refuses ones that exist un-journalled, and tears down exactly what is
// journalled (effects/owner.ts); every kernel action it takes is attributed to its manager.

import { Subject } from 'rxjs';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { vmCgroupPath } from '../plan/cgroup.js';
import { planSandbox } from '../plan/index.js';
import { line } from '../plan/record.js';
import { MS, type MountOp } from '../plan/mounts.js';
import type { Backend, KernelEvent, LandlockReport, LaunchResult, SandboxEffects } from '../effects/port.js';
import { EffectError } from '../effects/port.js';
import { memoryJournal, type JournalStore } from '../effects/owner.js';
import type { VirtualClock } from './clock.js';
import type { FaultPlan, Op } from './faults.js';
import type { Pidfd, Proc, SimKernel } from './kernel.js';
import { KernelError, kernelError } from './kernel.js';
import { Prng } from './prng.js';

const CLEANUP_RETRIES = 5;
const CLEANUP_RETRY_MS = 10;
const TERM_EXIT_MS = 5;
/**
 * A vmm shutting down closes its QMP/API socket this long before its process is gone (QEMU tearing
 * down its devices and memory): a stop request repeated in that window fails with ECONNRESET.
 */
const VMM_SOCKET_CLOSE_MS = 20;

export interface SimBackendOptions {
  /** Where the VM's cgroup and runtime directory are journalled (the manager's lock). */
  journal?: JournalStore;
  /** The manager this backend acts for (1 the first, 2 a second, 3 finish); default 1. */
  manager?: number;
  /**
   * Record one line per plan operation executed (`executed`), as the Linux backend always does.
   * Off by default: bulk runs would spend a sixth of their time building lines nobody reads.
   */
  record?: boolean;
}

/** The model kernel's host facts, as the Linux backend probes them on a real host. */
export function simHostFacts(kernel: SimKernel): { landlockAbi: number; cgroupControllers: string[] } {
  return { landlockAbi: kernel.landlockAbi, cgroupControllers: [...kernel.controllers] };
}

export interface SimBackend extends Backend {
  /** What the backend built, for the invariant checks. */
  readonly vm: { pidns: number | null; mntns: number | null; cgroupRoot: string; domains: Map<string, number> };
  readonly landlockReport: LandlockReport | null;
  /** One line per plan operation executed, in order (plan/record.ts). */
  readonly executed: readonly string[];
}

export function createSimBackend(
  config: VmConfig,
  kernel: SimKernel,
  plan: FaultPlan,
  clock: VirtualClock,
  trace: (line: string) => void,
  opts: SimBackendOptions = {},
): SimBackend {
  const store = opts.journal ?? memoryJournal();
  const manager = opts.manager ?? 1;
  const events$ = new Subject<KernelEvent>();
  // The plan from the model kernel's facts, as `run` plans from the host's: the runner refuses
  // a refused one before the machine starts, and each effect gets its slice of it as input.
  const planned = planSandbox(config, simHostFacts(kernel));
  const executed: string[] = [];
  const record = opts.record ? (l: string) => void executed.push(l) : null;
  const cgroupRoot = vmCgroupPath(config);
  const vm = { pidns: null as number | null, mntns: null as number | null, cgroupRoot, domains: new Map<string, number>() };
  const services = new Map<string, { proc: Proc; fd: Pidfd; config: ServiceConfig }>();
  const calls: Partial<Record<Op, number>> = {};
  let init: { proc: Proc; fd: Pidfd } | null = null;
  let landlockReport: LandlockReport | null = null;
  // Operations run one at a time (the port's contract); the rest wait here in call order.
  let busy = false;
  const queued: (() => void)[] = [];
  let busyLeft = plan.cleanupBusy;
  const waiters: (() => void)[] = [];
  /** When the vmm, having obeyed a stop request, exits (null until it obeys one). */
  let vmmExitAt: number | null = null;

  kernel.onExit(({ proc, code, signal }) => {
    if (init && proc === init.proc) {
      trace(`event: init exited`);
      clock.schedule(0, () => events$.next({ type: 'INIT_EXITED', code, signal }));
    } else if (proc.vm === config.name && proc.name !== 'vmsandbox-init' && init?.proc.alive && proc.pidns === init.proc.pidns) {
      // Exits of services are reported by the init (it reaps them); a dead init reports nothing,
      // and an init reports only its own namespace's (not another run's of the same VM).
      clock.schedule(0, () => events$.next({ type: 'SERVICE_EXITED', service: proc.name, pid: proc.pid, code, signal }));
    }
    for (const w of waiters.splice(0)) w();
  });

  // The supervisor's death, as the plan has it. (The manager's own signals are the runner's:
  // sim/run.ts turns the plan's stopAt into run.requestStop, as s6's SIGTERM reaches run.ts.)
  if (plan.parentDiesAt !== null) clock.schedule(plan.parentDiesAt, () => events$.next({ type: 'PARENT_DIED' }));
  if (plan.initDiesAt !== null) {
    clock.schedule(plan.initDiesAt, () => {
      if (init?.proc.alive) kernel.pidfdSignal(init.fd, 'SIGKILL', 0); // from outside: nobody's manager
    });
  }
  reuseFreedPids(kernel, clock, plan, config.name);

  /** Resolves once cond() holds, re-checked after every process exit; rejects when aborted. */
  function waitUntil(cond: () => boolean, signal: AbortSignal, op: Op): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (signal.aborted) return reject(aborted(op));
        if (cond()) return resolve();
        waiters.push(check);
      };
      signal.addEventListener('abort', () => reject(aborted(op)), { once: true });
      check();
    });
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => clock.schedule(ms, resolve));
  }

  /**
   * Serialize, delay per the plan, honour abort, inject the planned failure, then act. The next
   * queued operation starts the moment this one settles, and a synchronous body settles within
   * the clock step that runs it: few promise hops between a result and the machine's reaction
   * keep the runner's drain short (sim/run.ts).
   */
  function run<T>(op: Op, signal: AbortSignal, body: () => T | Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const done = (settle: () => void) => {
        if (settled) return;
        settled = true;
        settle();
        const next = queued.shift();
        if (next) next();
        else busy = false;
      };
      const ok = (v: T) => done(() => resolve(v));
      const fail = (e: unknown) => done(() => reject(e instanceof KernelError ? effectError(op, e.errno, e.message) : e));
      const start = () => {
        const call = (calls[op] = (calls[op] ?? 0) + 1);
        if (signal.aborted) return fail(aborted(op));
        let timer: number | null = null;
        const onAbort = () => {
          if (timer !== null) clock.clearTimeout(timer);
          fail(aborted(op));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        const act = () => {
          signal.removeEventListener('abort', onAbort);
          if (plan.fail && plan.fail.op === op && plan.fail.call === call) {
            return fail(effectError(op, plan.fail.errno, `injected by the fault plan (call ${call})`));
          }
          let value: T | Promise<T>;
          try {
            value = body();
          } catch (e) {
            return fail(e);
          }
          if (value instanceof Promise) value.then(ok, fail);
          else ok(value);
        };
        // Teardown acts at once; its planned delay is spent waiting for the kernel instead.
        const delay = op === 'killAll' || op === 'cleanup' ? 0 : (plan.delays[op] ?? 0);
        if (delay !== Infinity) timer = clock.schedule(delay, act);
      };
      if (busy) queued.push(start);
      else {
        busy = true;
        start();
      }
    });
  }

  /** Something this backend is answerable for still runs: its init, or a process in the journalled cgroup. */
  function journalledAlive(): boolean {
    if (init?.proc.alive) return true;
    const dir = store.journal().cgroup;
    return dir !== null && kernel.populated(dir);
  }

  function behaviour(svc: ServiceConfig, self: () => Proc): (sig: string) => void {
    return (sig) => {
      const p = self();
      const stopSig = 'signal' in svc.stop ? svc.stop.signal : 'SIGTERM';
      if (svc.vmm && (sig === 'POWERDOWN' || sig === stopSig)) {
        if (plan.vmmIgnoresStop) return trace(`${svc.name}: ignores the stop request`);
        // A booting guest has no power-button handler yet: the press is lost (a signal is not).
        if (sig === 'POWERDOWN' && plan.vmmArmsAt !== null && clock.now() < plan.vmmArmsAt) {
          return trace(`${svc.name}: the guest drops the power button (armed at ${plan.vmmArmsAt} ms)`);
        }
        if (vmmExitAt !== null) return trace(`${svc.name}: already shutting down`);
        vmmExitAt = clock.now() + plan.vmmStopMs;
        clock.schedule(plan.vmmStopMs, () => kernel.exit(p.pid, 0, null, p.gen));
      } else if (sig === 'SIGTERM') {
        if (plan.othersIgnoreTerm) return trace(`${svc.name}: ignores SIGTERM`);
        clock.schedule(TERM_EXIT_MS, () => kernel.exit(p.pid, 0, null, p.gen));
      } else {
        kernel.exit(p.pid, null, sig, p.gen);
      }
    };
  }

  const effects: SandboxEffects = {
    createNamespaces: ({ cgroup, namespaces }, signal) =>
      run('createNamespaces', signal, () => {
        // The VM's cgroup: journalled before it is created; one no run of this VM created is refused,
        // one an earlier run left populated too (its teardown did not finish).
        const j = store.journal();
        if (j.cgroup !== cgroup.vm && kernel.cgroups.has(cgroup.vm)) {
          throw effectError('createNamespaces', 'EEXIST', `cgroup ${cgroup.vm} exists, and no run of vm ${config.name} created it`);
        }
        if (kernel.cgroups.has(cgroup.vm) && kernel.populated(cgroup.vm)) {
          throw effectError('createNamespaces', 'EBUSY', `cgroup ${cgroup.vm} still has processes of an earlier run of vm ${config.name}`);
        }
        if (j.cgroup !== cgroup.vm) store.setJournal({ ...j, cgroup: cgroup.vm });
        mkdirCgroupP(cgroup.init);
        record?.(line.cgroupDir(cgroup.init));
        const pidns = kernel.newNamespace();
        const mntns = kernel.newNamespace();
        // clone3(CLONE_INTO_CGROUP): the init is born in its leaf.
        const proc = kernel.spawn({
          name: 'vmsandbox-init', vm: config.name, pidns, mntns, uid: 0, gid: 0,
          cgroup: cgroup.init, landlock: null, noNewPrivs: false,
          onSignal: () => undefined, // PID 1 has no default action for catchable signals
          by: manager,
        });
        kernel.markNsInit(proc);
        kernel.exec(proc, manager);
        init = { proc, fd: kernel.pidfdOpen(proc.pid) };
        vm.pidns = pidns;
        vm.mntns = mntns;
        // The model kernel has no IPC or network objects: the namespaces are only recorded.
        record?.(line.init(cgroup.init, namespaces));
        trace(`effect: init started pid ${proc.pid}`);
        return { initPid: proc.pid };
      }),

    mount: (plan, signal) =>
      run('mount', signal, () => {

        const ns = requireInit('mount').mntns;
        // The runtime directory: journalled before it is created; one no run of this VM created is refused.
        const dir = plan.runtimeDir;
        const j = store.journal();
        if (j.runtimeDir !== dir) {
          if (kernel.dirs.has(dir)) {
            throw effectError('mount', 'EEXIST', `runtime dir ${dir} (runtimeDir) exists, and no run of vm ${config.name} created it`);
          }
          store.setJournal({ ...j, runtimeDir: dir });
        }
        if (!kernel.dirs.has(dir)) kernel.mkdirDir(dir, config.name, manager);
        record?.(line.runtimeDir(dir));
        // The per-service directories live inside the runtime dir (removed with it).
        if (record) for (const d of plan.dirs) record(line.dir(d));
        for (const op of plan.mounts) {
          applyMountOp(ns, op);
          record?.(line.mount(op));
        }
      }),

    prepareLandlock: ({ landlock, services: planned }, signal) =>
      run('prepareLandlock', signal, () => {
        // The ABI was decided by the plan; one ruleset (domain) per service, enforced at its exec.
        if (landlock.degraded.length) trace(`effect: landlock ABI ${landlock.abi} lacks: ${landlock.degraded.join(', ')}`);
        for (const s of planned) if (s.landlock) vm.domains.set(s.name, kernel.newLandlockDomain());
        landlockReport = { abi: landlock.abi, degraded: landlock.degraded };
        record?.(line.landlock(landlock));
        return landlockReport;
      }),

    createCgroups: ({ cgroup }, signal) =>
      run('createCgroups', signal, () => {
        for (const path of [cgroup.vm, ...cgroup.leaves]) {
          mkdirCgroupP(path);
          record?.(line.cgroupDir(path));
        }
        // The plan holds only limits whose controller the kernel offers (the rest refused or skipped).
        for (const w of cgroup.limits) record?.(line.limit(w));
      }),

    launch: ({ service: sp }, signal) =>
      run('launch', signal, (): LaunchResult => {
        const parent = requireInit('launch');
        // How the model process behaves (its stop signal, its fate in the fault plan) is the config's.
        const service = config.services.find((x) => x.name === sp.name);
        if (!service) throw effectError('launch', 'EINVAL', `service ${sp.name} is not in vm ${config.name}'s config`);
        const domain = vm.domains.get(sp.name) ?? null;
        if (sp.landlock !== null && domain === null) {
          throw effectError('launch', 'EINVAL', `no Landlock ruleset prepared for ${sp.name}`);
        }
        let proc: Proc | null = null;
        // clone3(CLONE_INTO_CGROUP) then, in the child: own mount ns, uid drop, no_new_privs,
        // Landlock, exec — the record is taken at exec.
        proc = kernel.spawn({
          name: sp.name, vm: config.name, pidns: parent.pidns, mntns: kernel.newNamespace(),
          uid: sp.uid, gid: sp.gid, cgroup: sp.cgroup,
          landlock: domain, noNewPrivs: true, onSignal: behaviour(service, () => proc!), by: manager,
        });
        for (const t of sp.tmpfs) kernel.mount(proc.mntns, t.path, config.name, manager);
        if (sp.storage.access !== 'none') kernel.mount(proc.mntns, sp.storage.path, config.name, manager);
        kernel.exec(proc, manager);
        const fd = kernel.pidfdOpen(proc.pid);
        services.set(sp.name, { proc, fd, config: service });
        record?.(line.spawn(sp));
        trace(`effect: launched ${sp.name} pid ${proc.pid} uid ${sp.uid}`);
        scheduleServiceFate(service, proc);
        return { service: sp.name, pid: proc.pid };
      }),

    requestStop: ({ vmm: vmmName }, signal) =>
      run('requestStop', signal, () => {
        const vmm = services.get(vmmName);
        if (!vmm?.proc.alive) return;
        const method = vmm.config.stop;
        if ('signal' in method) kernel.pidfdSignal(vmm.fd, method.signal, manager);
        else {
          const via = Object.keys(method)[0];
          if (vmmExitAt !== null && clock.now() >= vmmExitAt - VMM_SOCKET_CLOSE_MS) {
            throw kernelError('ECONNRESET', `${via}: ${vmm.config.name} closed its socket: it is exiting`);
          }
          trace(`effect: stop request to ${vmm.config.name} over ${via}`);
          vmm.proc.onSignal('POWERDOWN');
        }
      }),

    terminateServices: (_input, signal) =>
      run('terminateServices', signal, () => {
        const others = [...services.values()].filter((s) => !s.config.vmm && s.proc.alive);
        for (const s of others) {
          try {
            kernel.pidfdSignal(s.fd, 'SIGTERM', manager);
          } catch (e) {
            if (!(e instanceof KernelError && e.errno === 'ESRCH')) throw e;
          }
        }
        return waitUntil(() => others.every((s) => !s.proc.alive), signal, 'terminateServices');
      }),

    killAll: (_input, signal) =>
      run('killAll', signal, () => {
        // Only the journalled cgroup (the init lives in it once it exists) and this run's own init.
        const dir = store.journal().cgroup;
        if (dir !== null && kernel.cgroups.has(dir)) kernel.cgroupKill(dir, manager);
        if (init?.proc.alive) kernel.pidfdSignal(init.fd, 'SIGKILL', manager);
        return waitUntil(() => !journalledAlive(), signal, 'killAll').then(() => sleep(plan.delays.killAll ?? 0));
      }),

    cleanup: (_input, signal) =>
      run('cleanup', signal, async () => {
        await sleep(plan.delays.cleanup ?? 0);
        // Exactly what the journal holds, each struck off once it is gone.
        const root = store.journal().cgroup;
        const leaves = root === null ? [] : kernel.childCgroups(root).sort((a, b) => b.length - a.length);
        for (const path of root === null ? [] : [...leaves, root]) {
          if (!kernel.cgroups.has(path)) continue;
          for (let attempt = 1; ; attempt++) {
            try {
              if (path === root && busyLeft > 0) {
                busyLeft--;
                throw kernelError('EBUSY', `rmdir ${path}`);
              }
              kernel.rmdirCgroup(path, manager);
              break;
            } catch (e) {
              if (!(e instanceof KernelError && e.errno === 'EBUSY') || attempt >= CLEANUP_RETRIES) throw e;
              await sleep(CLEANUP_RETRY_MS);
              if (signal.aborted) throw aborted('cleanup');
            }
          }
        }
        if (root !== null) store.setJournal({ ...store.journal(), cgroup: null });
        const dir = store.journal().runtimeDir;
        if (dir !== null) {
          kernel.rmDir(dir, manager);
          store.setJournal({ ...store.journal(), runtimeDir: null });
        }
      }),
  };

  /** mkdir -p in the cgroup tree: the parents shared by every VM are nobody's VM's. */
  function mkdirCgroupP(path: string): void {
    const segments = path.split('/');
    for (let i = 1; i <= segments.length; i++) {
      const p = segments.slice(0, i).join('/');
      if (kernel.cgroups.has(p)) continue;
      const vmOwned = p === cgroupRoot || p.startsWith(`${cgroupRoot}/`);
      kernel.mkdirCgroup(p, manager, vmOwned ? config.name : null);
    }
  }

  /**
   * A mount operation of the plan in the model: mounts (including a move's target and a placed tree) appear in the
   * VM's namespace, a detach takes the mounts at and below its path; the rest (mkdir, mknod,
   * setattr, …) changes nothing the invariants look at.
   */
  function applyMountOp(ns: number, op: MountOp): void {
    if (op.verb === 'mount' && !(op.flags & MS.REMOUNT)) kernel.mount(ns, op.target, config.name, manager);
    else if (op.verb === 'place') kernel.mount(ns, op.path, config.name, manager);
    else if (op.verb === 'umount') kernel.unmount(ns, op.path, manager);
  }

  function requireInit(op: Op): Proc {
    if (!init?.proc.alive) throw effectError(op, 'ESRCH', 'the sandbox init is not running');
    return init.proc;
  }

  function scheduleServiceFate(service: ServiceConfig, proc: Proc): void {
    const index = [...services.keys()].indexOf(service.name);
    const crash = plan.crash;
    if (crash && crash.index === index) {
      clock.schedule(Math.max(0, crash.at - clock.now()), () => kernel.exit(proc.pid, crash.code, crash.signal, proc.gen));
    }
    if (service.vmm && plan.powerOffAt !== null) {
      clock.schedule(Math.max(0, plan.powerOffAt - clock.now()), () => kernel.exit(proc.pid, 0, null, proc.gen));
    }
  }

  return {
    plan: () => planned,
    effects,
    events$: events$.asObservable(),
    vm,
    executed,
    get landlockReport() {
      return landlockReport;
    },
  };
}

function effectError(op: Op, errno: string, message: string): EffectError {
  return new EffectError(op, errno, message);
}

function aborted(op: Op): EffectError {
  return effectError(op, 'ECANCELED', 'aborted by the machine');
}

/**
 * PID reuse at the worst moment: a PID the VM frees is taken by a host process (or another VM's)
 * right away, as happens on a busy host after the PID counter wraps. Code that signals by a
 * stale PID instead of a pidfd then hits a stranger, and the invariants see it.
 */
function reuseFreedPids(kernel: SimKernel, clock: VirtualClock, plan: FaultPlan, vmName: string): void {
  const r = new Prng(plan.seed ^ 0x0c4e5e);
  kernel.onExit(({ proc }) => {
    if (proc.vm !== vmName || !r.chance(plan.pidReuse)) return;
    clock.schedule(r.int(0, 5), () => {
      if (kernel.procs.has(proc.pid)) return;
      const p = kernel.spawn({
        pid: proc.pid, name: r.chance(0.5) ? 'other-vm-vmm' : 'host-proc', vm: r.chance(0.5) ? 'other-vm' : null,
        pidns: 0, mntns: 0, uid: 1000, gid: 1000, cgroup: null, landlock: null, noNewPrivs: false, by: 0,
      });
      kernel.exec(p, 0);
      clock.schedule(r.int(10, 1000), () => kernel.exit(p.pid, 0, null, p.gen));
    });
  });
}
