// The Linux backend of the effects port: real namespaces, mounts, Landlock, cgroup v2 and uids,
// as root, without user namespaces. See docs/linux-backend.md and docs/threat-model.md.
//
// Who does what:
// - the manager (this file, in Node): cgroupfs by plain file I/O, clone3 of the init through the
//   shim, pidfds (signals, reaping), the runtime directory, QMP;
// - vmsandbox-init (PID 1 of the VM's PID + mount namespace): mounts, spawning services (own mount
//   namespace, uid drop, caps, no_new_privs, Landlock, cgroup leaf via CLONE_INTO_CGROUP), reaping,
//   exit reports, signals by service name.

import { existsSync, mkdirSync } from 'node:fs';
import { chown, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Subject, type Observable } from 'rxjs';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { vmmOf } from '../../config/types.js';
import { memoryJournal, type JournalStore } from '../owner.js';
import type { Backend, EffectInput, KernelEvent, LandlockReport, LaunchResult, SandboxEffects } from '../port.js';
import { EffectError } from '../port.js';
import {
  applyLimits,
  cgroupRoot,
  INIT_LEAF,
  isPopulated,
  killCgroup,
  listProcs,
  mkdirCgroup,
  removeCgroupTree,
  serviceLeaf,
  vmCgroupDir,
  waitUnpopulated,
} from './cgroup.js';
import {
  cloneInit,
  closeFd,
  landlockAbi,
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
import { describeOp, landlockRules, opArgs, planMounts, serviceRuntimeDir, spawnFields } from './plan.js';
import { explainedError, explainMountError, explainSpawnStep } from './explain.js';
import { InitClient, InitStepError, type InitMessage } from './protocol.js';
import { qmpCommand } from './qmp.js';
import { cloudHypervisorPowerButton, runStopCommand } from './stop.js';

export interface LinuxBackendOptions {
  /** Path of vmsandbox-init (default: native/build/vmsandbox-init). */
  initPath?: string;
  /**
   * Turn the manager's SIGTERM/SIGINT into STOP_REQUESTED: SIGTERM asks for the graceful stop, a
   * second SIGTERM or any SIGINT forces it. Default false.
   */
  handleSignals?: boolean;
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
  /** Release process-level hooks (signal handlers). Does not stop the VM: that is killAll. */
  dispose(): void;
}

/** Landlock protections by the ABI that introduced them (what a lower ABI lacks). */
export const LANDLOCK_FEATURES: Array<[number, string]> = [
  [1, 'filesystem access rules'],
  [2, 'file reparenting (refer) control'],
  [3, 'truncate control'],
  [5, 'device ioctl control'],
  [6, 'signal scoping'],
  [6, 'abstract unix socket scoping'],
];

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
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
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
  mkdirSync(dir, { recursive: true, mode: 0o755 });
}

export function createLinuxBackend(config: VmConfig, opts: LinuxBackendOptions = {}): LinuxBackend {
  const log = opts.log ?? (() => undefined);
  const store = opts.journal ?? memoryJournal();
  const initPath = opts.initPath ?? join(nativeBuildDir(), 'vmsandbox-init');
  const subject = new Subject<KernelEvent>();
  const events$: Observable<KernelEvent> = subject.asObservable();

  let root: string | null = null;
  const cgroupDir = (): string => {
    root ??= cgroupRoot();
    return vmCgroupDir(config, root);
  };

  let client: InitClient | null = null;
  let init: { pid: number; pidfd: number | null } | null = null;
  let initExit: { code: number | null; signal: string | null } | null = null;
  let tearingDown = false;
  let abi: number | null = null;
  const services = new Map<string, ServiceState>();
  const exitWaiters = new Set<() => void>();

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
    if (m.type !== 'exit') return;
    const s = services.get(m.service);
    if (s) s.exited = true;
    if (s?.pidfd != null) {
      closeFd(s.pidfd);
      s.pidfd = null;
    }
    for (const w of exitWaiters) w();
    subject.next({
      type: 'SERVICE_EXITED',
      service: m.service,
      pid: s?.hostPid ?? m.pid,
      code: m.code,
      signal: m.signo === null ? null : signalName(m.signo),
    });
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
    createNamespaces: (_input: EffectInput, signal) =>
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
        await mkdirCgroup(join(dir, INIT_LEAF));
        if (signal.aborted) throw aborted('createNamespaces');
        const vmFd = openDirPath('createNamespaces', dir);
        let initFd = -1;
        let pair: [number, number] | null = null;
        try {
          initFd = openDirPath('createNamespaces', join(dir, INIT_LEAF));
          pair = socketpair();
          const { pid, pidfd } = cloneInit(initPath, pair[1], vmFd, initFd);
          init = { pid, pidfd };
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

    mount: (_input, signal) =>
      serialize('mount', signal, async () => {
        const c = requireClient('mount');
        claimRuntimeDir(config, store);
        for (const s of config.services) {
          const d = serviceRuntimeDir(config, s);
          await mkdir(d, { recursive: true, mode: 0o755 });
          await chown(d, s.uid, s.gid);
        }
        for (const op of planMounts(config)) {
          if (signal.aborted) throw aborted('mount');
          try {
            await abortable('mount', c.request('mount', op.verb, ...opArgs(op)), signal);
          } catch (e) {
            if (e instanceof EffectError && e.errno !== 'ECANCELED') throw explainMountError(config, op, describeOp(op), e);
            throw e;
          }
        }
      }),

    prepareLandlock: (_input, signal) =>
      serialize('prepareLandlock', signal, async (): Promise<LandlockReport> => {
        const found = landlockAbi();
        const degraded = LANDLOCK_FEATURES.filter(([v]) => found < v).map(([, what]) => what);
        if (found < config.landlock.minAbi) {
          if (!config.landlock.allowDegraded) {
            const min = config.landlock.minAbi;
            throw explainedError('landlock', 'ENOTSUP', null, {
              object: 'Landlock',
              field: 'landlock.minAbi',
              fix:
                `the kernel offers Landlock ABI ${found}, the config needs ${min} (missing: ${degraded.join(', ') || 'none'}): ` +
                `use a kernel with Landlock ABI ${min} (and "landlock" in lsm=), lower landlock.minAbi, or set landlock.allowDegraded`,
            });
          }
          log(`landlock: running degraded at ABI ${found}: ${degraded.join(', ')}`);
        }
        // Validate every service's rules now, so a bad path fails setup here, not at launch.
        for (const s of config.services) landlockRules(config, s);
        abi = found;
        return { abi: found, degraded };
      }),

    createCgroups: (_input, signal) =>
      serialize('createCgroups', signal, async () => {
        const dir = cgroupDir();
        await mkdirCgroup(dir);
        for (const s of config.services) {
          if (signal.aborted) throw aborted('createCgroups');
          await mkdirCgroup(join(dir, serviceLeaf(s.name)));
        }
        const optional = config.cgroup.limitsOptional;
        const skipped = await applyLimits(root!, dir, config.cgroup.limits, optional);
        for (const [i, s] of config.services.entries()) {
          if (signal.aborted) throw aborted('createCgroups');
          const leaf = join(dir, serviceLeaf(s.name));
          skipped.push(...(await applyLimits(root!, leaf, s.limits, optional, `services[${i}].limits`)).map((k) => `${s.name}: ${k}`));
        }
        if (skipped.length) log(`cgroup: limits skipped (controller unavailable, limitsOptional): ${skipped.join(', ')}`);
      }),

    launch: (input: EffectInput & { service: ServiceConfig }, signal) =>
      serialize('launch', signal, async (): Promise<LaunchResult> => {
        const s = input.service;
        const c = requireClient('launch');
        const fields = spawnFields(config, s, abi ?? landlockAbi());
        const [nsPidText] = await abortable('launch', c.request(`launch ${s.name}`, 'spawn', ...fields), signal).catch((e: unknown) => {
          if (!(e instanceof InitStepError)) throw e;
          const leaf = join(cgroupDir(), serviceLeaf(s.name));
          throw explainedError(`launch ${s.name}`, e.errno, e.step, explainSpawnStep(config, s, e.step, e.errno, leaf));
        });
        const nsPid = Number(nsPidText);
        const state: ServiceState = { name: s.name, nsPid, hostPid: null, pidfd: null, exited: false };
        services.set(s.name, state);
        const found = await findHostPid(join(cgroupDir(), serviceLeaf(s.name)), nsPid);
        if (found && !state.exited) {
          state.hostPid = found.pid;
          state.pidfd = found.pidfd;
        } else if (found) closeFd(found.pidfd);
        return { service: s.name, pid: state.hostPid ?? nsPid };
      }),

    requestStop: (_input, signal) =>
      serialize('requestStop', signal, async () => {
        const vmm = vmmOf(config);
        const s = services.get(vmm.name);
        if (!s || s.exited) return;
        const how = vmm.stop;
        if ('signal' in how) {
          await signalService(s, signalNumber(how.signal), 'requestStop');
        } else if ('qmp' in how) {
          await qmpCommand(how.qmp, 'system_powerdown', signal);
        } else if ('cloudHypervisorApi' in how) {
          await cloudHypervisorPowerButton(how.cloudHypervisorApi, signal);
        } else if ('command' in how) {
          // On the host, as root, unsandboxed: trusted tooling only (docs/config.md).
          await runStopCommand(how.command, { vm: config.name, runtimeDir: config.runtimeDir, vmmPid: s.hostPid }, signal, log);
        } else {
          const method = Object.keys(how)[0] ?? 'unknown';
          throw new EffectError('requestStop', 'ENOTSUP', `stop method ${method} is not supported by the Linux backend`);
        }
      }),

    terminateServices: (_input, signal) =>
      serialize('terminateServices', signal, async () => {
        const others = [...services.values()].filter((s) => !s.exited && s.name !== vmmOf(config).name);
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
        if (runtimeDir) {
          await rm(runtimeDir, { recursive: true, force: true });
          store.setJournal({ ...store.journal(), runtimeDir: null });
        }
      }),
  };

  // ---- process-level hooks ----
  const hooks: Array<() => void> = [];
  if (opts.handleSignals) {
    let count = 0;
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      const h = () => {
        count += 1;
        subject.next({ type: 'STOP_REQUESTED', signal: sig, force: sig === 'SIGINT' || count > 1 });
      };
      process.on(sig, h);
      hooks.push(() => process.off(sig, h));
    }
  }
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
    dispose() {
      for (const h of hooks.splice(0)) h();
    },
  };
}
