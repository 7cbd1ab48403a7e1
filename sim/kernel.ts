// A model kernel: just enough of Linux's process, PID-namespace, mount, cgroup v2, Landlock and
// signal semantics for the sandbox's effects to be exercised deterministically.
//
// What it models on purpose, because the real kernel does it and the sandbox must cope:
// - PIDs are reused quickly (a small PID space and host processes that come and go), so signalling
//   a stale PID hits a stranger; pidfds (generation-checked handles) do not.
// - When a PID namespace's init dies, every process in that namespace is killed.
// - A mount namespace's mounts go away when its last process is gone.
// - rmdir of a populated cgroup fails with EBUSY; cgroup.kill kills a whole subtree.

import type { VirtualClock } from './clock.js';
import { withoutStack } from './errors.js';

export interface ExecRecord {
  at: number;
  uid: number;
  gid: number;
  cgroup: string | null;
  landlock: number | null;
  noNewPrivs: boolean;
  pidns: number;
}

export interface Proc {
  pid: number;
  /** Distinguishes successive holders of one PID: a pidfd names (pid, gen). */
  gen: number;
  name: string;
  /** The VM this process belongs to, or null for the host's own processes. */
  vm: string | null;
  pidns: number;
  mntns: number;
  uid: number;
  gid: number;
  cgroup: string | null;
  landlock: number | null;
  noNewPrivs: boolean;
  alive: boolean;
  exec: ExecRecord | null;
  /** How the process reacts to a catchable signal; SIGKILL is never asked. */
  onSignal: (sig: string) => void;
}

export interface Pidfd {
  pid: number;
  gen: number;
}

export interface Delivery {
  at: number;
  sig: string;
  pid: number;
  targetVm: string | null;
  targetName: string;
}

export interface Mount {
  ns: number;
  target: string;
  vm: string;
}

export interface ExitInfo {
  proc: Proc;
  code: number | null;
  signal: string | null;
}

const PID_MIN = 300;
const PID_MAX = 363;
/** Processes take a little while to die after SIGKILL (exit_mm, files, …). */
const KILL_LATENCY_MS = 1;

export class KernelError extends Error {
  constructor(
    readonly errno: string,
    message: string,
  ) {
    super(`${errno}: ${message}`);
  }
}

export function kernelError(errno: string, message: string): KernelError {
  return withoutStack(() => new KernelError(errno, message));
}

export class SimKernel {
  readonly procs = new Map<number, Proc>();
  readonly cgroups = new Map<string, Set<number>>();
  readonly mounts: Mount[] = [];
  readonly deliveries: Delivery[] = [];
  readonly dirs = new Set<string>();
  /** Every execve of a VM process, kept after the process is gone. */
  readonly execs: { name: string; vm: string; rec: ExecRecord }[] = [];
  private nextPid = PID_MIN;
  private nextGen = 1;
  private nextNs = 1;
  private nextDomain = 1;
  private exitListeners: ((e: ExitInfo) => void)[] = [];

  constructor(
    readonly clock: VirtualClock,
    readonly landlockAbi: number,
    readonly controllers: ReadonlySet<string>,
    private readonly trace: (line: string) => void,
  ) {
    this.cgroups.set('', new Set());
  }

  onExit(fn: (e: ExitInfo) => void): void {
    this.exitListeners.push(fn);
  }

  newNamespace(): number {
    return this.nextNs++;
  }

  newLandlockDomain(): number {
    return this.nextDomain++;
  }

  spawn(
    p: Omit<Proc, 'pid' | 'gen' | 'alive' | 'exec' | 'onSignal'> & { onSignal?: (sig: string) => void; pid?: number },
  ): Proc {
    const pid = p.pid !== undefined && !this.procs.has(p.pid) ? p.pid : this.allocPid();
    // Spelled out rather than spread: spawn runs several times per simulated run.
    const proc: Proc = {
      pid,
      gen: this.nextGen++,
      name: p.name,
      vm: p.vm,
      pidns: p.pidns,
      mntns: p.mntns,
      uid: p.uid,
      gid: p.gid,
      cgroup: p.cgroup,
      landlock: p.landlock,
      noNewPrivs: p.noNewPrivs,
      alive: true,
      exec: null,
      onSignal: p.onSignal ?? ((sig) => this.exit(pid, null, sig)),
    };
    this.procs.set(pid, proc);
    if (proc.cgroup !== null) this.cgroupOf(proc.cgroup).add(pid);
    return proc;
  }

  /** execve: records the credentials and confinement the program starts with. */
  exec(proc: Proc): void {
    proc.exec = {
      at: this.clock.now(),
      uid: proc.uid,
      gid: proc.gid,
      cgroup: proc.cgroup,
      landlock: proc.landlock,
      noNewPrivs: proc.noNewPrivs,
      pidns: proc.pidns,
    };
    if (proc.vm !== null) this.execs.push({ name: proc.name, vm: proc.vm, rec: proc.exec });
  }

  pidfdOpen(pid: number): Pidfd {
    const p = this.procs.get(pid);
    if (!p?.alive) throw kernelError('ESRCH', `pidfd_open(${pid})`);
    return { pid, gen: p.gen };
  }

  /** pidfd_send_signal: reaches the process the pidfd was opened for, or fails with ESRCH. */
  pidfdSignal(fd: Pidfd, sig: string): void {
    const p = this.procs.get(fd.pid);
    if (!p?.alive || p.gen !== fd.gen) throw kernelError('ESRCH', `pidfd_send_signal(${fd.pid}, ${sig})`);
    this.deliver(p, sig);
  }

  /** kill(2) by raw PID: whoever holds the number now gets it. Correct code does not use this. */
  killPid(pid: number, sig: string): void {
    const p = this.procs.get(pid);
    if (!p?.alive) throw kernelError('ESRCH', `kill(${pid}, ${sig})`);
    this.deliver(p, sig);
  }

  private deliver(p: Proc, sig: string): void {
    this.deliveries.push({ at: this.clock.now(), sig, pid: p.pid, targetVm: p.vm, targetName: p.name });
    this.trace(`kernel: ${sig} -> ${p.name}[${p.pid}]`);
    if (sig === 'SIGKILL') this.clock.schedule(KILL_LATENCY_MS, () => this.exit(p.pid, null, 'SIGKILL', p.gen));
    else p.onSignal(sig);
  }

  exit(pid: number, code: number | null, signal: string | null, gen?: number): void {
    const p = this.procs.get(pid);
    if (!p?.alive || (gen !== undefined && p.gen !== gen)) return;
    p.alive = false;
    this.procs.delete(pid);
    if (p.cgroup !== null) this.cgroups.get(p.cgroup)?.delete(pid);
    this.trace(`kernel: exit ${p.name}[${pid}] ${signal ? signal : `code ${code}`}`);
    // The death of a PID namespace's init takes the whole namespace with it.
    if (this.isNsInit(p)) {
      for (const q of [...this.procs.values()]) {
        if (q.pidns === p.pidns) this.clock.schedule(KILL_LATENCY_MS, () => this.exit(q.pid, null, 'SIGKILL', q.gen));
      }
    }
    this.releaseMountNs(p.mntns);
    for (const fn of this.exitListeners) fn({ proc: p, code, signal });
  }

  private readonly nsInits = new Map<number, number>();

  markNsInit(proc: Proc): void {
    this.nsInits.set(proc.pidns, proc.gen);
  }

  private isNsInit(p: Proc): boolean {
    return this.nsInits.get(p.pidns) === p.gen;
  }

  private releaseMountNs(ns: number): void {
    if (ns === 0) return;
    for (const q of this.procs.values()) if (q.mntns === ns) return;
    for (let i = this.mounts.length - 1; i >= 0; i--) if (this.mounts[i]!.ns === ns) this.mounts.splice(i, 1);
  }

  mount(ns: number, target: string, vm: string): void {
    this.mounts.push({ ns, target, vm });
  }

  mkdirCgroup(path: string): void {
    const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    if (!this.cgroups.has(parent)) throw kernelError('ENOENT', `mkdir ${path}: parent missing`);
    if (this.cgroups.has(path)) throw kernelError('EEXIST', `mkdir ${path}`);
    this.cgroups.set(path, new Set());
  }

  rmdirCgroup(path: string): void {
    const members = this.cgroups.get(path);
    if (!members) throw kernelError('ENOENT', `rmdir ${path}`);
    if (members.size > 0 || this.childCgroups(path).length > 0) throw kernelError('EBUSY', `rmdir ${path}`);
    this.cgroups.delete(path);
  }

  childCgroups(path: string): string[] {
    return [...this.cgroups.keys()].filter((c) => c.startsWith(path + '/'));
  }

  /** True while any process is in the cgroup or below it (cgroup.events "populated 1"). */
  populated(path: string): boolean {
    for (const c of [path, ...this.childCgroups(path)]) if ((this.cgroups.get(c)?.size ?? 0) > 0) return true;
    return false;
  }

  /** cgroup.kill: SIGKILL every process in the subtree. */
  cgroupKill(path: string): void {
    for (const c of [path, ...this.childCgroups(path)]) {
      for (const pid of this.cgroups.get(c) ?? []) {
        const p = this.procs.get(pid);
        if (p) this.deliver(p, 'SIGKILL');
      }
    }
  }

  private cgroupOf(path: string): Set<number> {
    const s = this.cgroups.get(path);
    if (!s) throw kernelError('ENOENT', `cgroup ${path} does not exist`);
    return s;
  }

  private allocPid(): number {
    for (let i = 0; i <= PID_MAX - PID_MIN; i++) {
      const pid = this.nextPid;
      this.nextPid = pid >= PID_MAX ? PID_MIN : pid + 1;
      if (!this.procs.has(pid)) return pid;
    }
    throw kernelError('EAGAIN', 'PID space exhausted');
  }
}
