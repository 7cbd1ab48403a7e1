// A model kernel: just enough of Linux's process, PID-namespace, mount, cgroup v2, Landlock and
// signal semantics for the sandbox's effects to be exercised deterministically.
//
// What it models on purpose, because the real kernel does it and the sandbox must cope:
// - PIDs are reused quickly (a small PID space and host processes that come and go), so signalling
//   a stale PID hits a stranger; pidfds (generation-checked handles) do not.
// - When a PID namespace's init dies, every process in that namespace is killed.
// - A mount namespace's mounts go away when its last process is gone.
// - rmdir of a populated cgroup fails with EBUSY; cgroup.kill kills a whole subtree.
//
// And, for the one-owner rule (effects/owner.ts): a table of VM locks (sim/owner.ts implements the
// ownership port over it), and every action a manager takes on a VM's objects (a signal, a
// cgroup.kill, creating or removing a process, cgroup, mount or runtime directory) attributed to
// that manager and checked, as it happens, against the holder of the VM's lock. Managers are
// numbered: the first 1, a second manager for the same VM 2, `vmsandbox finish` 3; 0 is the kernel
// itself or the world outside (a crash, a process exiting by itself, PID reuse), never attributed.
// Actions by the holder are counted; actions by anyone else are kept whole (each is a violation).

import type { OwnerRecord } from '../effects/owner.js';
import type { VirtualClock } from './clock.js';

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

/** An action of a manager on a VM's objects (kept when the manager did not hold the VM's lock). */
export interface Action {
  at: number;
  /** The acting manager (1, 2, 3 …). */
  by: number;
  /** Who held the VM's lock at that moment (0: nobody). */
  holder: number;
  /** The VM whose object it is. */
  vm: string;
  /** A signal name, or spawn, mkdir, rmdir, move, mount, unmount, cgroup.kill, mkdir-dir, rm-dir. */
  verb: string;
  /** A process name, a cgroup path, a mount target, a directory. */
  object: string;
  /** The process's pid (signals, spawn, move), else 0. */
  pid: number;
}

/** One lock of the table: its holder (0: free) and the last holder's record (like a lock file). */
export interface LockSlot {
  holder: number;
  record: OwnerRecord | null;
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
  return new KernelError(errno, message);
}

export class SimKernel {
  readonly procs = new Map<number, Proc>();
  readonly cgroups = new Map<string, Set<number>>();
  readonly mounts: Mount[] = [];
  readonly deliveries: Delivery[] = [];
  /** Runtime directories, with the VM each belongs to. */
  readonly dirs = new Map<string, string>();
  /** Every execve of a VM process, kept after the process is gone, with the manager that started it. */
  readonly execs: { name: string; vm: string; by: number; rec: ExecRecord }[] = [];
  /** Actions on a VM's objects by a manager that did not hold the VM's lock, in order. */
  readonly foreign: Action[] = [];
  /** How many actions on VMs' objects each manager took (index: manager), foreign ones included. */
  readonly acted: number[] = [0, 0, 0, 0];
  /** The VM locks, by VM name, and the runtime-directory locks, by path (effects/linux/owner.ts has both). */
  readonly vmLocks = new Map<string, LockSlot>();
  readonly dirLocks = new Map<string, LockSlot>();
  /** The VM each cgroup was created for (null: a shared parent). */
  private readonly cgroupVm = new Map<string, string | null>();
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

  /** The holder of a VM's lock (0: nobody). */
  holderOf(vm: string): number {
    return this.vmLocks.get(vm)?.holder ?? 0;
  }

  private act(by: number, vm: string, verb: string, object: string, pid: number): void {
    this.acted[by] = (this.acted[by] ?? 0) + 1;
    const holder = this.holderOf(vm);
    if (holder !== by) this.foreign.push({ at: this.clock.now(), by, holder, vm, verb, object, pid });
  }

  /** `by`: the manager creating the process (0: the world outside). */
  spawn(
    p: Omit<Proc, 'pid' | 'gen' | 'alive' | 'exec' | 'onSignal'> & { onSignal?: (sig: string) => void; pid?: number; by: number },
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
    if (p.by !== 0 && p.vm !== null) this.act(p.by, p.vm, 'spawn', p.name, pid);
    return proc;
  }

  /** Move a process into a cgroup (a write to cgroup.procs). */
  moveToCgroup(proc: Proc, path: string, by: number): void {
    this.cgroupOf(path).add(proc.pid);
    if (proc.cgroup !== null) this.cgroups.get(proc.cgroup)?.delete(proc.pid);
    proc.cgroup = path;
    if (by !== 0 && proc.vm !== null) this.act(by, proc.vm, 'move', path, proc.pid);
  }

  /** execve: records the credentials and confinement the program starts with. */
  exec(proc: Proc, by: number): void {
    proc.exec = {
      at: this.clock.now(),
      uid: proc.uid,
      gid: proc.gid,
      cgroup: proc.cgroup,
      landlock: proc.landlock,
      noNewPrivs: proc.noNewPrivs,
      pidns: proc.pidns,
    };
    if (proc.vm !== null) this.execs.push({ name: proc.name, vm: proc.vm, by, rec: proc.exec });
  }

  pidfdOpen(pid: number): Pidfd {
    const p = this.procs.get(pid);
    if (!p?.alive) throw kernelError('ESRCH', `pidfd_open(${pid})`);
    return { pid, gen: p.gen };
  }

  /** pidfd_send_signal: reaches the process the pidfd was opened for, or fails with ESRCH. */
  pidfdSignal(fd: Pidfd, sig: string, by: number): void {
    const p = this.procs.get(fd.pid);
    if (!p?.alive || p.gen !== fd.gen) throw kernelError('ESRCH', `pidfd_send_signal(${fd.pid}, ${sig})`);
    this.deliver(p, sig, by);
  }

  /** kill(2) by raw PID: whoever holds the number now gets it. Correct code does not use this. */
  killPid(pid: number, sig: string, by: number): void {
    const p = this.procs.get(pid);
    if (!p?.alive) throw kernelError('ESRCH', `kill(${pid}, ${sig})`);
    this.deliver(p, sig, by);
  }

  private deliver(p: Proc, sig: string, by: number): void {
    this.deliveries.push({ at: this.clock.now(), sig, pid: p.pid, targetVm: p.vm, targetName: p.name });
    if (by !== 0 && p.vm !== null) this.act(by, p.vm, sig, p.name, p.pid);
    this.trace(`kernel: ${sig} -> ${p.name}[${p.pid}]`);
    // What a kill takes with it (a namespace's processes, its mounts) is the killer's doing too.
    if (sig === 'SIGKILL') this.clock.schedule(KILL_LATENCY_MS, () => this.exit(p.pid, null, 'SIGKILL', p.gen, by));
    else p.onSignal(sig);
  }

  /** `by`: the manager whose kill this exit is (0: the process exited by itself, or the world killed it). */
  exit(pid: number, code: number | null, signal: string | null, gen?: number, by = 0): void {
    const p = this.procs.get(pid);
    if (!p?.alive || (gen !== undefined && p.gen !== gen)) return;
    p.alive = false;
    this.procs.delete(pid);
    if (p.cgroup !== null) this.cgroups.get(p.cgroup)?.delete(pid);
    this.trace(`kernel: exit ${p.name}[${pid}] ${signal ? signal : `code ${code}`}`);
    // The death of a PID namespace's init takes the whole namespace with it.
    if (this.isNsInit(p)) {
      for (const q of [...this.procs.values()]) {
        if (q.pidns === p.pidns) this.clock.schedule(KILL_LATENCY_MS, () => this.exit(q.pid, null, 'SIGKILL', q.gen, by));
      }
    }
    this.releaseMountNs(p.mntns, by);
    for (const fn of this.exitListeners) fn({ proc: p, code, signal });
  }

  private readonly nsInits = new Map<number, number>();

  markNsInit(proc: Proc): void {
    this.nsInits.set(proc.pidns, proc.gen);
  }

  private isNsInit(p: Proc): boolean {
    return this.nsInits.get(p.pidns) === p.gen;
  }

  private releaseMountNs(ns: number, by: number): void {
    if (ns === 0) return;
    for (const q of this.procs.values()) if (q.mntns === ns) return;
    for (let i = this.mounts.length - 1; i >= 0; i--) {
      const m = this.mounts[i]!;
      if (m.ns !== ns) continue;
      this.mounts.splice(i, 1);
      if (by !== 0) this.act(by, m.vm, 'unmount', m.target, 0);
    }
  }

  mount(ns: number, target: string, vm: string, by: number): void {
    this.mounts.push({ ns, target, vm });
    if (by !== 0) this.act(by, vm, 'mount', target, 0);
  }

  /** umount(MNT_DETACH): the mounts at `target` and below it in namespace `ns` go. */
  unmount(ns: number, target: string, by: number): void {
    for (let i = this.mounts.length - 1; i >= 0; i--) {
      const m = this.mounts[i]!;
      if (m.ns !== ns || (m.target !== target && !m.target.startsWith(`${target}/`))) continue;
      this.mounts.splice(i, 1);
      if (by !== 0) this.act(by, m.vm, 'unmount', m.target, 0);
    }
  }

  /** `vm`: the VM the cgroup is for (null: a parent shared by every VM). */
  mkdirCgroup(path: string, by: number, vm: string | null): void {
    const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    if (!this.cgroups.has(parent)) throw kernelError('ENOENT', `mkdir ${path}: parent missing`);
    if (this.cgroups.has(path)) throw kernelError('EEXIST', `mkdir ${path}`);
    this.cgroups.set(path, new Set());
    this.cgroupVm.set(path, vm);
    if (by !== 0 && vm !== null) this.act(by, vm, 'mkdir', path, 0);
  }

  rmdirCgroup(path: string, by: number): void {
    const members = this.cgroups.get(path);
    if (!members) throw kernelError('ENOENT', `rmdir ${path}`);
    if (members.size > 0 || this.childCgroups(path).length > 0) throw kernelError('EBUSY', `rmdir ${path}`);
    this.cgroups.delete(path);
    const vm = this.cgroupVm.get(path) ?? null;
    this.cgroupVm.delete(path);
    if (by !== 0 && vm !== null) this.act(by, vm, 'rmdir', path, 0);
  }

  /** Create a VM's runtime directory. */
  mkdirDir(path: string, vm: string, by: number): void {
    this.dirs.set(path, vm);
    if (by !== 0) this.act(by, vm, 'mkdir-dir', path, 0);
  }

  /** Remove a runtime directory (and what it holds); nothing if it is not there. */
  rmDir(path: string, by: number): void {
    const vm = this.dirs.get(path);
    if (vm === undefined) return;
    this.dirs.delete(path);
    if (by !== 0) this.act(by, vm, 'rm-dir', path, 0);
  }

  childCgroups(path: string): string[] {
    return [...this.cgroups.keys()].filter((c) => c.startsWith(path + '/'));
  }

  /** True while any process is in the cgroup or below it (cgroup.events "populated 1"). */
  populated(path: string): boolean {
    // Without building the list of children: teardown asks this after every exit.
    for (const p of this.procs.values()) {
      const c = p.cgroup;
      if (c !== null && c.startsWith(path) && (c.length === path.length || c.charCodeAt(path.length) === 47 /* / */)) return true;
    }
    return false;
  }

  /** cgroup.kill: SIGKILL every process in the subtree. */
  cgroupKill(path: string, by: number): void {
    const vm = this.cgroupVm.get(path) ?? null;
    if (by !== 0 && vm !== null) this.act(by, vm, 'cgroup.kill', path, 0);
    for (const c of [path, ...this.childCgroups(path)]) {
      for (const pid of this.cgroups.get(c) ?? []) {
        const p = this.procs.get(pid);
        if (p) this.deliver(p, 'SIGKILL', by);
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
