// The manager's syscalls: libc through ffi-rs (syscall, prctl: variadic, every argument I64) and the
// few helpers of native/build/libvmsandbox.so where ffi-rs is awkward (out-parameters, clone3).
// Every wrapper returns a number >= 0 or throws an EffectError carrying the errno name.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EffectError } from '../port.js';

/** native/build, found from this file in the source tree, in dist/, and from the manager's bundle in dist/bundle/. */
export function nativeBuildDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '../../native/build'), resolve(here, '../../../native/build')];
  return candidates.find((d) => existsSync(join(d, 'libvmsandbox.so'))) ?? candidates[0]!;
}

export const SYS = {
  pidfd_send_signal: 424,
  pidfd_open: 434,
  landlock_create_ruleset: 444,
} as const;

export const PR_SET_PDEATHSIG = 1;
export const LANDLOCK_CREATE_RULESET_VERSION = 1;

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}

export function errnoName(n: number): string {
  return errnoNames.get(n) ?? `errno ${n}`;
}

const signalNumbers = osConstants.signals as Record<string, number>;

export function signalNumber(name: string): number {
  const n = signalNumbers[name] ?? signalNumbers[`SIG${name}`];
  if (n === undefined) throw new EffectError('signal', 'EINVAL', `unknown signal ${name}`);
  return n;
}

export function signalName(n: number): string {
  for (const [name, num] of Object.entries(signalNumbers)) if (num === n) return name;
  return `SIG${n}`;
}

type Fns = ReturnType<typeof bind>;
let fns: Fns | null = null;

/**
 * ffi-rs's loader asks process.report.getReport() one thing, whether libc is glibc (the header's
 * glibcVersionRuntime), to pick its binary; a whole report costs 4-7 ms of every manager's start.
 * While it loads, that question is answered from this process's own mappings (glibc's libc.so.6
 * or musl's loader), and nothing else is asked of the report.
 */
function requireFfi(): typeof import('ffi-rs') {
  const report = process.report;
  const getReport = report.getReport;
  const glibc = /\/libc\.so\.6$/m.test(readFileSync('/proc/self/maps', 'utf8'));
  report.getReport = (() => ({ header: { glibcVersionRuntime: glibc ? 'glibc' : undefined } })) as unknown as typeof getReport;
  try {
    return createRequire(import.meta.url)('ffi-rs') as typeof import('ffi-rs');
  } finally {
    report.getReport = getReport;
  }
}

/**
 * ffi-rs (a native addon, outside the manager's bundle) is loaded on first use, not with this
 * module: a command that ends before its first syscall (a config error) never pays for it.
 */
function bind(lib: string) {
  const { DataType, define, open } = requireFfi();
  open({ library: 'libc', path: 'libc.so.6' });
  open({ library: 'vmsandbox', path: lib });
  const I64 = DataType.I64;
  return define({
    syscall: { library: 'libc', retType: I64, paramsType: [I64, I64, I64, I64, I64, I64], errno: true },
    prctl: { library: 'libc', retType: I64, paramsType: [I64, I64, I64, I64, I64], errno: true },
    flock: { library: 'libc', retType: I64, paramsType: [I64, I64], errno: true },
    vms_socketpair: { library: 'vmsandbox', retType: I64, paramsType: [] },
    vms_open_dir_path: { library: 'vmsandbox', retType: I64, paramsType: [DataType.String] },
    vms_close: { library: 'vmsandbox', retType: I64, paramsType: [I64] },
    vms_clone_init: { library: 'vmsandbox', retType: I64, paramsType: [DataType.String, I64, I64, I64, I64, I64] },
    vms_waitid_pidfd: { library: 'vmsandbox', retType: I64, paramsType: [I64, I64] },
    // struct pollfd { int fd; short events; short revents; } passed as two int32s (events in the
    // low half of the second); the return value (fds with revents != 0) is all we read back.
    poll: { library: 'libc', retType: I64, paramsType: [DataType.I32Array, I64, I64], errno: true },
  });
}

function lib(): Fns {
  if (!fns) {
    const path = join(nativeBuildDir(), 'libvmsandbox.so');
    if (!existsSync(path)) {
      throw new EffectError('native', 'ENOENT', `${path} is missing: build it with \`make -C native\``);
    }
    fns = bind(path);
  }
  return fns;
}

function check(op: string, r: { value: number; errnoCode: number }, what: string): number {
  if (r.value < 0) throw new EffectError(op, errnoName(r.errnoCode), what);
  return r.value;
}

/** A shim result: >= 0, or -errno. */
function checkNeg(op: string, v: number, what: string): number {
  if (v < 0) throw new EffectError(op, errnoName(-v), what);
  return v;
}

export function sys(op: string, nr: number, a = 0, b = 0, c = 0, d = 0, e = 0): number {
  return check(op, lib().syscall([nr, a, b, c, d, e]), `syscall ${nr} failed`);
}

export function prctl(option: number, arg2 = 0): number {
  return check('prctl', lib().prctl([option, arg2, 0, 0, 0]), `prctl(${option}, ${arg2}) failed`);
}

export function socketpair(): [number, number] {
  const v = checkNeg('socketpair', lib().vms_socketpair([]), 'socketpair(AF_UNIX, SOCK_STREAM)');
  return [Math.floor(v / 2 ** 32), v % 2 ** 32];
}

export function openDirPath(op: string, path: string): number {
  return checkNeg(op, lib().vms_open_dir_path([path]), `open(${path}, O_PATH|O_DIRECTORY)`);
}

export function closeFd(fd: number): void {
  lib().vms_close([fd]);
}

/** clone(2) flags of the namespaces a plan may add to the init's PID + mount namespaces (uapi sched.h). */
export const CLONE_NS = { ipc: 0x08000000, net: 0x40000000 } as const;

/**
 * clone3 the init into new PID + mount namespaces and the plan's further ones (`ns`), bringing `lo`
 * up in a new network namespace when `loopback`; returns its pid (host view) and a pidfd.
 */
export function cloneInit(
  initPath: string,
  ctlFd: number,
  cgroupDirFd: number,
  initLeafFd: number,
  ns: { clone: ReadonlyArray<keyof typeof CLONE_NS>; loopback: boolean },
): { pid: number; pidfd: number } {
  const flags = ns.clone.reduce((f, n) => f | CLONE_NS[n], 0);
  const what = `starting ${initPath} in new pid,mnt${ns.clone.map((n) => `,${n}`).join('')} namespaces${ns.loopback ? ' with lo up' : ''}`;
  const v = checkNeg('clone3', lib().vms_clone_init([initPath, ctlFd, cgroupDirFd, initLeafFd, flags, ns.loopback ? 1 : 0]), what);
  return { pid: v % 2 ** 32, pidfd: Math.floor(v / 2 ** 32) };
}

export interface WaitResult {
  code: number | null;
  signal: string | null;
}

/** waitid(P_PIDFD, WEXITED|WNOHANG): null while the process runs. */
export function waitPidfd(pidfd: number): WaitResult | null {
  const v = checkNeg('waitid', lib().vms_waitid_pidfd([pidfd, 1]), 'waitid(P_PIDFD)');
  if (v === 0) return null;
  const code = (v >> 8) & 0xff;
  const status = v & 0xff;
  return code === 1 ? { code: status, signal: null } : { code: null, signal: signalName(status) };
}

export function pidfdOpen(pid: number): number {
  return sys('pidfd_open', SYS.pidfd_open, pid, 0);
}

export function pidfdSendSignal(pidfd: number, sig: number): void {
  sys('pidfd_send_signal', SYS.pidfd_send_signal, pidfd, sig, 0, 0);
}

/** The Landlock ABI version the kernel offers; 0 if Landlock is unavailable or disabled. */
export function landlockAbi(): number {
  try {
    return sys('landlock_create_ruleset', SYS.landlock_create_ruleset, 0, 0, LANDLOCK_CREATE_RULESET_VERSION);
  } catch {
    return 0;
  }
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/** flock(fd, LOCK_EX|LOCK_NB): true if taken, false if another open file holds it. */
export function flockExclusive(fd: number): boolean {
  const r = lib().flock([fd, LOCK_EX | LOCK_NB]);
  if (r.value === 0) return true;
  const name = errnoName(r.errnoCode);
  if (name === 'EWOULDBLOCK' || name === 'EAGAIN') return false;
  throw new EffectError('flock', name, `flock(${fd}, LOCK_EX|LOCK_NB) failed`);
}

export const POLLIN = 0x001;

/**
 * poll(fd, POLLIN, 0): true when fd is readable (or hung up / in error) right now. On a pidfd,
 * readable means the process has exited.
 */
export function pollReadable(fd: number): boolean {
  const r = lib().poll([[fd, POLLIN], 1, 0]);
  if (r.value < 0) {
    if (errnoName(r.errnoCode) === 'EINTR') return false;
    throw new EffectError('poll', errnoName(r.errnoCode), `poll(${fd}) failed`);
  }
  return r.value > 0;
}
