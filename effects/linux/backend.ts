// The Linux backend of the effects port: real namespaces, mounts, Landlock, cgroup v2 and uids,
// as root, without user namespaces. See docs/linux-backend.md and docs/threat-model.md.
//
// Who does what:
// - the manager (this file, in Node): cgroupfs by plain file I/O, clone3 of the init through the
//   shim, pidfds (signals, reaping), the runtime directory, QMP;
// - vmsandbox-init (PID 1 of the VM's PID + mount namespace): mounts, spawning services (own mount
//   namespace, uid drop, caps, no_new_privs, Landlock, cgroup leaf via CLONE_INTO_CGROUP), reaping,
//   exit reports, signals by service name.

import { existsSync, lchownSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Subject, type Observable } from 'rxjs';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { planSandbox } from '../../plan/index.js';
import { line } from '../../plan/record.js';
import type { PlanResult, SandboxPlan } from '../../plan/types.js';
import { memoryJournal, type JournalStore } from '../owner.js';
import type { Backend, KernelEvent, LandlockReport, LaunchResult, SandboxEffects } from '../port.js';
import { EffectError } from '../port.js';
import {
  cgroupRoot,
  isPopulated,
  killCgroup,
  listProcs,
  mkdirCgroup,
  removeCgroupTree,
  serviceLeaf,
  vmCgroupDir,
  waitUnpopulated,
  writeLimit,
} from './cgroup.js';
import {
  cloneInit,
  closeFd,
  nativeBuildDir,
  openDirPath,
  pidfdOpen,
  pidfdSendSignal,
  prctl,
  PR_SET_PDEATHSIG,
  signalName,
  signalNumber,
  socketpair,
  waitPidfd,
} from './native.js';
import { describeOp, opArgs } from '../../plan/mounts.js';
import { explainMountError, explainSpawnStep, explainedError } from './explain.js';
import { linuxHostFacts } from './hostFacts.js';
import { spawnFields } from './spawnRequest.js';
import { InitClient, InitStepError, type InitMessage } from './protocol.js';
import { outputLimiter, type ServiceOutput } from './output.js';
import { SERVICE_OUTPUT } from '../../plan/output.js';
import { qmpCommand } from './qmp.js';
import { cloudHypervisorPowerButton, runStopCommand } from './stop.js';
import { STOP_COMMAND_LEAF } from '../../plan/cgroup.js';

export interface LinuxBackendOptions {
  /** Path of vmsandbox-init (default: native/build/vmsandbox-init). */
  initPath?: string;
  /**
   * Ask the kernel for this signal when the manager's parent (s6-supervise) dies, and turn it into
   * PARENT_DIED. Default: none.
   */
  parentDeathSignal?: NodeJS.Signals;
  /** Diagnostics (skipped optional limits, ...). */
  log?: (msg: string) => void;
  /**
   * Where the backend journals what it creates (the VM's cgroup, the runtime directory) before
   * creating it; killAll and cleanup act on exactly what is journalled. `vmsandbox run` and
   * `finish` pass the VM's lock (effects/linux/owner.ts), so a later owner finds what a dead one
   * left. Default: memory (this backend's own run only).
   */
  journal?: JournalStore;
  /**
   * The plan to execute (plan/index.ts). `vmsandbox run` passes the one it planned from the same
   * host facts as its preflight; default: planned from this host's facts at the first setup step.
   * Teardown (killAll, cleanup) needs no plan: it works from the journal.
   */
  plan?: SandboxPlan;
}

/** What the backend knows about a running service. */
export interface ServiceState {
  name: string;
  /** pid in the VM's PID namespace, as the init reports it. */
  nsPid: number;
  /** pid in the manager's PID namespace (null if the service was gone before it was looked up). */
  hostPid: number | null;
  pidfd: number | null;
  exited: boolean;
}

export interface LinuxBackend extends Backend {
  /** Introspection for tests and operators. */
  readonly state: {
    readonly initPid: number | null;
    readonly cgroupDir: string;
    readonly services: ReadonlyMap<string, ServiceState>;
    readonly landlockAbi: number | null;
  };
  /** One line per plan operation executed, in order (plan/record.ts). */
  readonly executed: readonly string[];
  /**
   * What the services write to stdout/stderr, line by line through the init (never the manager's
   * own fds), rate-bounded per service (plan/output.ts); `vmsandbox run` logs each as a record
   * tagged with the service.
   */
  readonly output$: Observable<ServiceOutput>;
  /** Release process-level hooks (signal handlers). Does not stop the VM: that is killAll. */
  dispose(): void;
}

export { LANDLOCK_FEATURES } from '../../plan/landlock.js';

function aborted(op: string): EffectError {
  return new EffectError(op, 'ECANCELED', 'aborted');
}

/** Reject as soon as the signal aborts; the underlying work is left to settle (or be killed). */
function abortable<T>(op: string, p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(aborted(op));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(aborted(op));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The host pid of the process in `leafDir` whose innermost NSpid is nsPid, with a pidfd to it. */
async function findHostPid(leafDir: string, nsPid: number): Promise<{ pid: number; pidfd: number } | null> {
  for (const pid of await listProcs(leafDir)) {
    const matches = async () => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).map(Number) ?? [];
        return ns.length > 1 && ns[ns.length - 1] === nsPid;
      } catch {
        return false;
      }
    };
    if (!(await matches())) continue;
    let pidfd: number;
    try {
      pidfd = pidfdOpen(pid);
    } catch {
      continue;
    }
    // Re-check with the pidfd held: the pid cannot be recycled under it any more.
    if (await matches()) return { pid, pidfd };
    closeFd(pidfd);
  }
  return null;
}

/**
 * Create the runtime directory (journalled first), or accept it if the journal says a run of this
 * VM created it. One that exists and is not journalled is not ours: refused. Idempotent. (`run`
 * calls it before the machine starts, for its status socket; the mount step calls it again.)
 */
export function claimRuntimeDir(config: VmConfig, store: JournalStore): void {
  const dir = config.runtimeDir;
  const j = store.journal();
  if (j.runtimeDir !== dir) {
    if (existsSync(dir)) {
      throw new EffectError(
        'mount',
        'EEXIST',
        `runtime dir ${dir} (runtimeDir) exists, and no run of vm ${config.name} created it (a leftover of an older vmsandbox, ` +
          `or not vmsandbox's): see what it holds and remove it, or \`vmsandbox finish --force CONFIG\` removes it`,
      );
    }
    store.setJournal({ ...j, runtimeDir: dir });
  }
  // Search, not list: services reach the sockets handed over here by name and see nothing else.
  mkdirSync(dir, { recursive: true, mode: 0o711 });
}

export function createLinuxBackend(config: VmConfig, opts: LinuxBackendOptions = {}): LinuxBackend {
  const log = opts.log ?? (() => undefined);
  const store = opts.journal ?? memoryJournal();
  const initPath = opts.initPath ?? join(nativeBuildDir(), 'vmsandbox-init');
  const subject = new Subject<KernelEvent>();
  const events$: Observable<KernelEvent> = subject.asObservable();
  const output = new Subject<ServiceOutput>();
  // A second bound: the init already forwards at most linesPerSecond lines in each of its windows
  // (outrate=); its windows and this one do not line up, so twice that here: it does not cut what
  // the init let through (unless a delivery delay spans a whole window), and still bounds an init
  // that was given no rate.
  const limiter = outputLimiter(SERVICE_OUTPUT.managerLinesPerSecond, (o) => output.next(o));

  let root: string | null = null;
  const cgRoot = (): string => (root ??= cgroupRoot());
  const cgroupDir = (): string => vmCgroupDir(config, cgRoot());

  let client: InitClient | null = null;
  let init: { pid: number; pidfd: number | null } | null = null;
  let initExit: { code: number | null; signal: string | null } | null = null;
  let tearingDown = false;
  let abi: number | null = null;
  const executed: string[] = [];
  let planned: PlanResult | null = opts.plan ? { ok: true, plan: opts.plan } : null;
  const plan = (): PlanResult => (planned ??= planSandbox(config, linuxHostFacts(config)));
  const services = new Map<string, ServiceState>();
  const exitWaiters = new Set<() => void>();
  /**
   * Exits the init reported before the launch that started the service had its reply in hand: a
   * service that exits at once can have its `exit` read in the same chunk as the spawn's reply,
   * before launch records it. By name, with the ns pid, for launch to find.
   */
  const exitedBeforeLaunch = new Map<string, number>();

  // ---- serialization: every operation runs after the previous one settled ----
  let tail: Promise<unknown> = Promise.resolve();
  function serialize<T>(op: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    const run = tail.then(() => {
      if (signal.aborted) throw aborted(op);
      return fn();
    });
    tail = run.catch(() => undefined);
    return run;
  }

  // ---- init lifecycle ----
  function reapInit(): boolean {
    if (!init || init.pidfd === null) return true;
    const r = waitPidfd(init.pidfd);
    if (!r) return false;
    initExit = r;
    closeFd(init.pidfd);
    init.pidfd = null;
    return true;
  }

  async function waitInitGone(signal: AbortSignal | null, maxMs: number): Promise<boolean> {
    const start = Date.now();
    for (;;) {
      if (reapInit()) return true;
      if (signal?.aborted || Date.now() - start > maxMs) return false;
      await sleep(2);
    }
  }

  function onInitMessage(m: InitMessage): void {
    if (m.type === 'out') return limiter.line(m.service, m.stream, m.line, m.cut);
    if (m.type === 'outdrop') return limiter.socketDropped(m.service, m.stream, m.count);
    if (m.type === 'outlimit') return limiter.rateDropped(m.service, m.count);
    if (m.type !== 'exit') return;
    const s = services.get(m.service);
    if (s) s.exited = true;
    else exitedBeforeLaunch.set(m.service, m.pid);
    if (s?.pidfd != null) {
      closeFd(s.pidfd);
      s.pidfd = null;
    }
    for (const w of exitWaiters) w();
    const sig = m.signo === null ? null : signalName(m.signo);
    // Killed by SIGKILL: was it the OOM killer? Its leaf's memory.events says (read now, before
    // teardown removes the leaf; absent without the memory controller).
    const oomKill = sig === 'SIGKILL' && oomKills(m.service) > 0;
    if (oomKill) log(`service ${m.service}: OOM-killed (memory.events oom_kill in ${serviceLeaf(m.service)}: its memory.max was reached)`);
    subject.next({
      type: 'SERVICE_EXITED',
      service: m.service,
      pid: s?.hostPid ?? m.pid,
      code: m.code,
      signal: sig,
      ...(oomKill ? { oomKill } : {}),
    });
  }

  function oomKills(service: string): number {
    try {
      return Number(/^oom_kill (\d+)$/m.exec(readFileSync(join(cgroupDir(), serviceLeaf(service), 'memory.events'), 'utf8'))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  function watchInit(c: InitClient): void {
    void c.closed.then(async () => {
      await waitInitGone(null, 5000);
      if (!tearingDown) {
        subject.next({ type: 'INIT_EXITED', code: initExit?.code ?? null, signal: initExit?.signal ?? null });
      }
    });
  }

  function requireClient(op: string): InitClient {
    if (!client || client.isClosed) throw new EffectError(op, 'ESRCH', 'the sandbox init is not running');
    return client;
  }

  async function signalService(s: ServiceState, sig: number, op: string): Promise<void> {
    if (s.exited) return;
    if (s.pidfd !== null) {
      try {
        pidfdSendSignal(s.pidfd, sig);
      } catch (e) {
        if (!(e instanceof EffectError && e.errno === 'ESRCH')) throw e;
      }
      return;
    }
    try {
      await requireClient(op).request(op, 'kill', s.name, String(sig));
    } catch (e) {
      if (!(e instanceof EffectError && e.errno === 'ESRCH')) throw e;
    }
  }

  // ---- the port ----
  const effects: SandboxEffects = {
    createNamespaces: ({ cgroup, namespaces }, signal) =>
      serialize('createNamespaces', signal, async () => {
        const dir = cgroupDir();
        const j = store.journal();
        if (j.cgroup !== dir && existsSync(dir)) {
          throw new EffectError(
            'createNamespaces',
            'EEXIST',
            `cgroup ${dir} exists, and no run of vm ${config.name} created it (a leftover of an older vmsandbox, or another ` +
              `tool's): see what it holds (${dir}/cgroup.procs) and remove it, or \`vmsandbox finish --force CONFIG\` kills and removes it`,
          );
        }
        // Journalled by an earlier run and still populated: its teardown did not finish.
        if ((await isPopulated(dir)) === true) {
          throw new EffectError('createNamespaces', 'EBUSY', `cgroup ${dir} still has processes of an earlier run of vm ${config.name}: \`vmsandbox finish CONFIG\` removes them`);
        }
        if (j.cgroup !== dir) store.setJournal({ ...j, cgroup: dir });
        const initDir = join(cgRoot(), cgroup.init);
        await mkdirCgroup(initDir);
        executed.push(line.cgroupDir(cgroup.init));
        if (signal.aborted) throw aborted('createNamespaces');
        const vmFd = openDirPath('createNamespaces', dir);
        let initFd = -1;
        let pair: [number, number] | null = null;
        try {
          initFd = openDirPath('createNamespaces', initDir);
          pair = socketpair();
          const { pid, pidfd } = cloneInit(initPath, pair[1], vmFd, initFd, namespaces);
          init = { pid, pidfd };
          executed.push(line.init(cgroup.init, namespaces));
        } catch (e) {
          if (pair) closeFd(pair[0]);
          throw e;
        } finally {
          closeFd(vmFd);
          if (initFd >= 0) closeFd(initFd);
          if (pair) closeFd(pair[1]);
        }
        let hello!: (pid: number) => void;
        const helloP = new Promise<number>((r) => (hello = r));
        const c = new InitClient(pair[0], (m) => (m.type === 'hello' ? hello(m.pid) : onInitMessage(m)));
        client = c;
        watchInit(c);
        const closedP = c.closed.then(() => {
          throw new EffectError('createNamespaces', 'EPIPE', 'the sandbox init exited before it was ready (see its stderr)');
        });
        await abortable('createNamespaces', Promise.race([helloP, closedP]), signal);
        return { initPid: init.pid };
      }),

    mount: (plan, signal) =>
      serialize('mount', signal, async () => {
        const c = requireClient('mount');
        claimRuntimeDir(config, store);
        executed.push(line.runtimeDir(plan.runtimeDir));
        for (const d of plan.dirs) {
          // Before any service runs, in the runtime dir this run made (root's): nothing can have
          // been planted here. lchown all the same: root never chowns what a symlink points to.
          mkdirSync(d.path, { recursive: true, mode: d.mode });
          lchownSync(d.path, d.uid, d.gid);
          executed.push(line.dir(d));
        }
        // Pipelined: every request is written at once and the init answers them in order, so the
        // plan costs one round trip, not one per operation. The first failure is the one reported;
        // the requests after it run in the VM's own mount namespace (a slave of the host's: nothing
        // propagates back), which the failed setup then tears down with the init.
        const replies = c.batch(() => plan.mounts.map((op) => c.request('mount', op.verb, ...opArgs(op))));
        for (const r of replies) r.catch(() => undefined); // each is awaited below, in order
        for (const [i, op] of plan.mounts.entries()) {
          if (signal.aborted) throw aborted('mount');
          try {
            await abortable('mount', replies[i]!, signal);
          } catch (e) {
            if (e instanceof EffectError && e.errno !== 'ECANCELED') throw explainMountError(config, op, describeOp(op), e);
            throw e;
          }
          executed.push(line.mount(op));
        }
      }),

    prepareLandlock: ({ landlock }, signal) =>
      serialize('prepareLandlock', signal, async (): Promise<LandlockReport> => {
        // The ABI was decided by the plan (a kernel below landlock.minAbi without allowDegraded is
        // refused there); each service's ruleset is built by the init at spawn, from the plan.
        if (landlock.degraded.length) log(`landlock: ABI ${landlock.abi} lacks: ${landlock.degraded.join(', ')}`);
        abi = landlock.abi;
        executed.push(line.landlock(landlock));
        return { abi: landlock.abi, degraded: landlock.degraded };
      }),

    createCgroups: ({ cgroup }, signal) =>
      serialize('createCgroups', signal, async () => {
        for (const rel of [cgroup.vm, ...cgroup.leaves]) {
          if (signal.aborted) throw aborted('createCgroups');
          await mkdirCgroup(join(cgRoot(), rel));
          executed.push(line.cgroupDir(rel));
        }
        for (const w of cgroup.limits) {
          if (signal.aborted) throw aborted('createCgroups');
          await writeLimit(cgRoot(), w);
          executed.push(line.limit(w));
        }
        if (cgroup.skipped.length) log(`cgroup: limits skipped (cgroup.limitsOptional): ${cgroup.skipped.join('; ')}`);
      }),

    launch: ({ service: sp }, signal) =>
      serialize('launch', signal, async (): Promise<LaunchResult> => {
        // The config's service, for explaining a failed step by its fields.
        const s: ServiceConfig | undefined = config.services.find((x) => x.name === sp.name);
        if (!s) throw new EffectError('launch', 'EINVAL', `service ${sp.name} is not in vm ${config.name}'s config`);
        const c = requireClient('launch');
        const [nsPidText] = await abortable('launch', c.request(`launch ${s.name}`, 'spawn', ...spawnFields(sp)), signal).catch((e: unknown) => {
          if (!(e instanceof InitStepError)) throw e;
          throw explainedError(`launch ${s.name}`, e.errno, e.step, explainSpawnStep(config, s, e.step, e.errno, join(cgRoot(), sp.cgroup)));
        });
        executed.push(line.spawn(sp));
        const nsPid = Number(nsPidText);
        const state: ServiceState = { name: s.name, nsPid, hostPid: null, pidfd: null, exited: exitedBeforeLaunch.get(s.name) === nsPid };
        exitedBeforeLaunch.delete(s.name);
        services.set(s.name, state);
        if (state.exited) return { service: s.name, pid: nsPid };
        const found = await findHostPid(join(cgRoot(), sp.cgroup), nsPid);
        if (found && !state.exited) {
          state.hostPid = found.pid;
          state.pidfd = found.pidfd;
        } else if (found) closeFd(found.pidfd);
        return { service: s.name, pid: state.hostPid ?? nsPid };
      }),

    requestStop: ({ vmm, uid, stop: how }, signal) =>
      serialize('requestStop', signal, async () => {
        const s = services.get(vmm);
        if (!s || s.exited) return;
        if ('signal' in how) {
          await signalService(s, signalNumber(how.signal), 'requestStop');
        } else if ('qmp' in how) {
          await qmpCommand(how.qmp, 'system_powerdown', signal, uid);
        } else if ('cloudHypervisorApi' in how) {
          await cloudHypervisorPowerButton(how.cloudHypervisorApi, signal, uid);
        } else if ('command' in how) {
          // On the host, as root, unsandboxed: trusted tooling only (docs/config.md). In a leaf of the
          // journalled VM cgroup, so killAll (and `finish` after a SIGKILLed manager) takes it.
          const vmCg = store.journal().cgroup;
          if (!vmCg) throw new EffectError('requestStop', 'ENOENT', `stop command ${JSON.stringify(how.command)}: the VM has no journalled cgroup to run it in; not run`);
          await runStopCommand(how.command, { vm: config.name, runtimeDir: config.runtimeDir, vmmPid: s.hostPid, cgroup: join(vmCg, STOP_COMMAND_LEAF) }, signal, log);
        } else {
          const method = Object.keys(how)[0] ?? 'unknown';
          throw new EffectError('requestStop', 'ENOTSUP', `stop method ${method} is not supported by the Linux backend`);
        }
      }),

    terminateServices: ({ vmm }, signal) =>
      serialize('terminateServices', signal, async () => {
        const others = [...services.values()].filter((s) => !s.exited && s.name !== vmm);
        for (const s of others) await signalService(s, signalNumber('SIGTERM'), 'terminateServices');
        let check = (): void => undefined;
        try {
          await abortable(
            'terminateServices',
            new Promise<void>((resolve) => {
              check = () => {
                if (others.every((s) => s.exited) || !client || client.isClosed) resolve();
              };
              exitWaiters.add(check);
              check();
            }),
            signal,
          );
        } finally {
          exitWaiters.delete(check);
        }
      }),

    killAll: (_input, signal) =>
      serialize('killAll', signal, async () => {
        tearingDown = true;
        // Only the journalled cgroup: one this VM's runs created. (The init lives in it.)
        const dir = store.journal().cgroup;
        if (dir) await killCgroup(dir);
        if (init?.pidfd != null) {
          try {
            pidfdSendSignal(init.pidfd, signalNumber('SIGKILL'));
          } catch (e) {
            if (!(e instanceof EffectError && e.errno === 'ESRCH')) throw e;
          }
        }
        if (dir) await waitUnpopulated(dir, signal);
        if (!(await waitInitGone(signal, 5000))) {
          throw new EffectError('killAll', signal.aborted ? 'ECANCELED' : 'ETIMEDOUT', `sandbox init (pid ${init?.pid}) did not exit`);
        }
        for (const s of services.values()) {
          if (s.pidfd !== null) closeFd(s.pidfd);
          s.pidfd = null;
          s.exited = true;
        }
        client?.destroy();
      }),

    cleanup: (_input, signal) =>
      serialize('cleanup', signal, async () => {
        // Exactly what the journal holds, each struck off once it is gone.
        const { cgroup, runtimeDir } = store.journal();
        if (cgroup) {
          await removeCgroupTree(cgroup);
          store.setJournal({ ...store.journal(), cgroup: null });
        }
        // The runtime dir only once the cgroup is gone: removeCgroupTree throws (EBUSY) while any
        // process of the VM lives (the init, so every service of its PID namespace, and the stop
        // command's leaf), so nothing that could change the dir runs while root removes it; and
        // rm removes the symlinks services left, never follows them (test/linux/root-paths.test.ts).
        // (No cgroup in the journal: none was made, or it is already removed: no process of the VM lives.)
        if (runtimeDir) {
          rmSync(runtimeDir, { recursive: true, force: true });
          store.setJournal({ ...store.journal(), runtimeDir: null });
        }
      }),
  };

  // ---- process-level hooks ----
  const hooks: Array<() => void> = [];
  if (opts.parentDeathSignal) {
    const sig = opts.parentDeathSignal;
    // The parent to die with. process.ppid read here is already the adoptive parent (PID 1 or a
    // subreaper) if the supervisor died while Node was starting (a window of hundreds of ms), and
    // then the re-check below cannot fire: `vmsandbox run --supervisor-pid PID` covers that window
    // with a pidfd of the named supervisor (cli/supervisor.ts), which is how s6's run script starts it.
    const parent = process.ppid;
    const h = () => subject.next({ type: 'PARENT_DIED' });
    process.on(sig, h);
    hooks.push(() => process.off(sig, h));
    prctl(PR_SET_PDEATHSIG, signalNumber(sig));
    // The parent may have died before the prctl: then we are already re-parented.
    if (process.ppid !== parent) queueMicrotask(h);
  }

  return {
    plan,
    effects,
    events$,
    state: {
      get initPid() {
        return init?.pid ?? null;
      },
      get cgroupDir() {
        return cgroupDir();
      },
      services,
      get landlockAbi() {
        return abi;
      },
    },
    executed,
    output$: output.asObservable(),
    dispose() {
      for (const h of hooks.splice(0)) h();
      limiter.close();
    },
  };
}
