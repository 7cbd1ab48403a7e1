// Shared helpers for the real-kernel tests: configs, driving the real machine, leak checks.

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createActor, type Actor } from 'xstate';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { failuresPath, linuxOwnership, readRecord, runtimeDirLockPath, vmLockPath } from '../../effects/linux/owner.js';
import { createLinuxBackend, type LinuxBackend } from '../../effects/linux/backend.js';
import { findCgroup2Mount } from '../../effects/linux/cgroup.js';
import { landlockAbi, nativeBuildDir } from '../../effects/linux/native.js';
import { bindEffects } from '../../machines/bindBackend.js';
import type { SandboxOutput } from '../../machines/sandbox.js';
import type { KernelEvent } from '../../effects/port.js';

export const CGROUP_PARENT = 'vmsandbox-test';
export const repoRoot = join(import.meta.dirname, '..', '..');

/** Build native/ if its outputs are missing. */
export function ensureNative(): void {
  const dir = nativeBuildDir();
  if (!existsSync(join(dir, 'vmsandbox-init')) || !existsSync(join(dir, 'libvmsandbox.so'))) {
    execFileSync('make', ['-C', join(repoRoot, 'native')], { stdio: 'inherit' });
  }
}

/** Why the real-kernel tests cannot run here, or null. */
export function skipReason(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root';
  const status = readFileSync('/proc/self/status', 'utf8');
  const eff = BigInt('0x' + (/^CapEff:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? '0'));
  if ((eff & (1n << 21n)) === 0n) return 'no CAP_SYS_ADMIN';
  if (!findCgroup2Mount()) return 'no cgroup2 mount';
  return null;
}

export function landlockSkipReason(minAbi: number): string | null {
  const r = skipReason();
  if (r) return r;
  const abi = safeAbi();
  return abi < minAbi ? `Landlock ABI ${abi} < ${minAbi}` : null;
}

function safeAbi(): number {
  try {
    ensureNative();
    return landlockAbi();
  } catch {
    return 0;
  }
}

let counter = 0;

export interface TestVm {
  /** The VM's PID namespace (readlink of /proc/<init>/ns/pid), once known. */
  pidNs?: string[];
  name: string;
  storage: string;
  runtimeDir: string;
  scratch: string;
}

/** Unique names and temp dirs for one test VM. */
export function newTestVm(): TestVm {
  const name = `vmsandbox-t${process.pid}-${++counter}`;
  const storage = mkdtempSync('/tmp/vmsandbox-storage-');
  const scratch = mkdtempSync('/tmp/vmsandbox-scratch-');
  return { name, storage, runtimeDir: `/run/vmsandbox-test/${name}`, scratch };
}

/** Paths every test service may read: enough to run /bin/sh and coreutils. */
export const SYSTEM_READ = ['/usr', '/bin', '/lib', '/lib64', '/etc'];

export function service(over: Partial<ServiceConfig> & { name: string; argv: string[] }): ServiceConfig {
  return {
    env: { PATH: '/usr/bin:/bin' },
    uid: 62001,
    gid: 62001,
    groups: [],
    vmm: false,
    storage: 'none',
    tmp: false,
    shm: false,
    landlock: { read: SYSTEM_READ, write: [] },
    limits: {},
    caps: [],
    devices: [],
    stop: { signal: 'SIGTERM' },
    onExit: 'ignore',
    ...over,
  };
}

export function vmConfig(vm: TestVm, services: ServiceConfig[], over: Partial<VmConfig> = {}): VmConfig {
  return {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts: { setupMs: 10_000, stopMs: 3_000, killMs: 3_000 },
    cgroup: { parent: CGROUP_PARENT, limits: {}, limitsOptional: false },
    landlock: { minAbi: 1, allowDegraded: false },
    services,
    ...over,
  };
}

export const SLEEPER = service({ name: 'vmm', argv: ['/bin/sleep', '1000'], vmm: true });

export interface Run {
  backend: LinuxBackend;
  actor: Actor<ReturnType<typeof bindEffects>>;
  done: Promise<SandboxOutput>;
  waitFor(state: string, timeoutMs?: number): Promise<void>;
  events: KernelEvent[];
}

/** Remember the PID namespace of a VM's init, so leftovers() can look for exactly its processes. */
export function trackNamespace(vm: TestVm, initPid: number): void {
  const ns = readlinkSafe(`/proc/${initPid}/ns/pid`);
  if (ns) (vm.pidNs ??= []).push(ns);
}

/** Drive the real machine with the Linux backend (vm: to track its PID namespace for leftovers()). */
export function start(config: VmConfig, vm?: TestVm): Run {
  const backend = createLinuxBackend(config, { log: (m) => console.warn(`[${config.name}] ${m}`) });
  const actor = createActor(bindEffects(backend.effects), { input: { config } });
  const events: KernelEvent[] = [];
  const sub = backend.events$.subscribe((e) => {
    events.push(e);
    actor.send(e);
  });
  const done = new Promise<SandboxOutput>((resolve) => {
    actor.subscribe({
      next: (snap) => {
        if (snap.status === 'done') {
          sub.unsubscribe();
          backend.dispose();
          resolve(snap.output as SandboxOutput);
        }
      },
      error: (e) => {
        sub.unsubscribe();
        resolve({ outcome: 'setupFailed', exitCode: 111, errors: [String(e)], teardownFailed: true, stopRequests: 0 });
      },
    });
  });
  if (vm) {
    let tracked = false;
    actor.subscribe((snap) => {
      const pid = snap.context.initPid;
      if (!tracked && pid !== null) {
        tracked = true;
        trackNamespace(vm, pid);
      }
    });
  }
  actor.start();
  const waitFor = (state: string, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
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
  return { backend, actor, done, waitFor, events };
}

export function cgroupParentDir(): string {
  return join(findCgroup2Mount()!, CGROUP_PARENT);
}

/** Host pids (other than ours) that live in a PID namespace other than ours. */
export function pidsInOtherNamespaces(): number[] {
  const mine = readlinkSafe('/proc/self/ns/pid');
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const ns = readlinkSafe(`/proc/${d}/ns/pid`);
    if (ns && mine && ns !== mine) out.push(Number(d));
  }
  return out;
}

function readlinkSafe(p: string): string | null {
  try {
    return readlinkSync(p);
  } catch {
    return null;
  }
}

/** Kill and remove whatever a test VM left behind, so one failure does not leak into the next. */
export function forceCleanup(vm: TestVm): void {
  const dir = join(cgroupParentDir(), vm.name);
  if (existsSync(dir)) {
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      /* gone */
    }
    for (let i = 0; i < 100; i++) {
      try {
        if (!/populated 1/.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'))) break;
      } catch {
        break;
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
    for (const leaf of safeReaddir(dir)) {
      try {
        rmdirSync(join(dir, leaf));
      } catch {
        /* not a dir or busy */
      }
    }
    try {
      rmdirSync(dir);
    } catch {
      /* reported by the leak check */
    }
  }
  rmSync(vm.runtimeDir, { recursive: true, force: true });
  rmSync(vm.storage, { recursive: true, force: true });
  rmSync(vm.scratch, { recursive: true, force: true });
  // The test VM's lock files (tests only: its name is never used again, nobody holds them now).
  for (const f of [vmLockPath(vm.name), runtimeDirLockPath(vm.runtimeDir), failuresPath(vm.name)]) rmSync(f, { force: true });
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
}

/** What the VM left: processes in other PID namespaces, cgroup dirs, mounts, runtime dir. */
export function leftovers(vm: TestVm): string[] {
  const out: string[] = [];
  // Processes of this VM: in its PID namespace, or in its cgroup. (Not "any other PID namespace":
  // another test run may be using the machine at the same time.)
  const pids = pidsInOtherNamespaces().filter((p) => {
    const ns = readlinkSafe(`/proc/${p}/ns/pid`);
    let cg = '';
    try {
      cg = readFileSync(`/proc/${p}/cgroup`, 'utf8');
    } catch {
      /* gone */
    }
    return (ns !== null && (vm.pidNs ?? []).includes(ns)) || cg.includes(`/${vm.name}/`) || cg.endsWith(`/${vm.name}\n`);
  });
  if (pids.length) out.push(`processes of the VM: ${pids.join(' ')}`);
  if (existsSync(join(cgroupParentDir(), vm.name))) out.push(`cgroup dir ${vm.name}`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(vm.name) || l.includes(vm.storage) || l.includes(vm.runtimeDir));
  if (mounts.length) out.push(`mounts: ${mounts.join(' | ')}`);
  if (existsSync(vm.runtimeDir)) out.push(`runtime dir ${vm.runtimeDir}`);
  // The VM lock's journal must be empty too: it is what the next run or finish would remove.
  const rec = readRecord(vmLockPath(vm.name));
  if (rec && (rec.journal.cgroup !== null || rec.journal.runtimeDir !== null)) out.push(`journal of vm ${vm.name}: ${JSON.stringify(rec.journal)}`);
  return out;
}

/** Remove the shared test parents (call in afterAll). */
export function removeTestParents(): void {
  try {
    rmdirSync(cgroupParentDir());
  } catch {
    /* absent, or still used (the leak check reports that) */
  }
  try {
    rmdirSync('/run/vmsandbox-test');
  } catch {
    /* absent or not empty */
  }
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

/** Request a stop and wait for the machine to finish. */
export async function stop(run: Run): Promise<SandboxOutput> {
  run.actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
  return run.done;
}

// ---- helpers for escape, leak and parent-death tests ----

export async function until(cond: () => boolean, ms: number, stepMs = 5): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}

/** Processes of the VM (in its PID namespace or its cgroup), with their state letter ("Z" = zombie). */
export function vmProcesses(vm: TestVm): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const p of pidsInOtherNamespaces()) {
    const ns = readlinkSafe(`/proc/${p}/ns/pid`);
    let cg = '';
    let state = '?';
    try {
      cg = readFileSync(`/proc/${p}/cgroup`, 'utf8');
      state = /^\d+ \(.*\) (\S)/s.exec(readFileSync(`/proc/${p}/stat`, 'utf8'))?.[1] ?? '?';
    } catch {
      continue; /* gone */
    }
    if ((ns !== null && (vm.pidNs ?? []).includes(ns)) || cg.includes(`/${vm.name}/`) || cg.endsWith(`/${vm.name}\n`)) out.push({ pid: p, state });
  }
  return out;
}

/** Lines of our mountinfo that mention the VM (its name, storage or runtime dir). */
export function vmMounts(vm: TestVm): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(vm.name) || l.includes(vm.storage) || l.includes(vm.runtimeDir));
}

/**
 * What `vmsandbox finish` does after a SIGKILLed manager: take the VM's lock (free: its owner is
 * dead), and with a fresh backend on the lock's journal, killAll + cleanup, twice (idempotent: the
 * second round finds nothing and must succeed too).
 */
export async function finishFromJournal(config: VmConfig): Promise<void> {
  const claim = linuxOwnership().tryClaim(config, { pid: process.pid, phase: 'finish' });
  if (!claim.ok) throw new Error(`vm ${config.name} is still owned: ${JSON.stringify(claim.holder)}`);
  const fresh = createLinuxBackend(config, { journal: claim.lock });
  const ac = new AbortController();
  try {
    for (let round = 0; round < 2; round++) {
      await fresh.effects.killAll({ config }, ac.signal);
      await fresh.effects.cleanup({ config }, ac.signal);
    }
  } finally {
    fresh.dispose();
    claim.lock.release();
  }
}

/** A `vmsandbox run CONFIG` child, its stdout parsed as pino JSON lines as they arrive. */
export interface RunningManager {
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
  stderr(): string;
  /** Everything it printed, for assertion messages. */
  log(): string;
  kill(sig: NodeJS.Signals): void;
  /** Resolves once a line with this state was logged; rejects with the log after timeoutMs. */
  waitForState(state: string, timeoutMs?: number): Promise<void>;
}

export function spawnRun(file: string): RunningManager {
  const child = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const log = () => `${lines.map((l) => JSON.stringify(l)).join('\n')}\n--- stderr ---\n${stderr}`;
  return {
    lines,
    exited,
    stderr: () => stderr,
    log,
    kill: (sig) => child.kill(sig),
    waitForState: (state, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no state ${state} within ${timeoutMs} ms; log:\n${log()}`)), timeoutMs);
        const check = () => {
          if (lines.some((l) => l.state === state)) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      }),
  };
}

/** The raw JSON config `vmsandbox run` reads (a helper sleeper and a vmm), written to the scratch dir. */
export function writeRunConfig(vm: TestVm, vmmArgv: string[], timeouts = { stopMs: 3000, killMs: 2000 }): { file: string; config: VmConfig } {
  const raw = {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts,
    cgroup: { parent: CGROUP_PARENT },
    landlock: { minAbi: 1 },
    services: [
      { name: 'helper', argv: ['/bin/sleep', '1000'], uid: 62001, gid: 62001, tmp: true, landlock: { read: SYSTEM_READ, write: [] } },
      { name: 'vmm', vmm: true, argv: vmmArgv, uid: 62002, gid: 62002, env: { PATH: '/usr/bin:/bin' }, landlock: { read: SYSTEM_READ, write: [] } },
    ],
  };
  const file = join(vm.scratch, 'vm.json');
  writeFileSync(file, JSON.stringify(raw));
  // The same VM as a typed config, for a fresh backend's killAll/cleanup (they use name, cgroup, runtimeDir).
  const config = vmConfig(vm, [service({ name: 'helper', argv: ['/bin/sleep', '1000'] }), service({ name: 'vmm', argv: vmmArgv, vmm: true, uid: 62002, gid: 62002 })], {
    timeouts: { setupMs: 10_000, ...timeouts },
  });
  return { file, config };
}

/** A small seeded PRNG (mulberry32): the same seed gives the same delays. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let ccReason: string | null | undefined;

/** Why `cc -static` cannot build the C test helpers here, or null. */
export function staticCcSkipReason(): string | null {
  if (ccReason !== undefined) return ccReason;
  const dir = mkdtempSync('/tmp/vmsandbox-cc-');
  try {
    writeFileSync(join(dir, 't.c'), 'int main(void) { return 0; }\n');
    execFileSync('cc', ['-static', '-o', join(dir, 't'), join(dir, 't.c')], { stdio: 'pipe' });
    execFileSync(join(dir, 't'));
    ccReason = null;
  } catch (e) {
    ccReason = `cc -static does not work here: ${(e as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return ccReason;
}

/** Compile `source` with `cc -static` into `out` (mode 0755). */
export function compileStatic(source: string, out: string): void {
  const src = `${out}.c`;
  writeFileSync(src, source);
  execFileSync('cc', ['-static', '-O1', '-Wall', '-o', out, src], { stdio: 'pipe' });
  chmodSync(out, 0o755);
}

/**
 * The escape helper, one static binary with subcommands; each prints `<what> rc=<n>` or
 * `<what> rc=-1 errno=<NAME>`:
 *   ptrace-attach PID | ptrace-seize PID   PTRACE_ATTACH / PTRACE_SEIZE a process (detaches on success)
 *   ptrace-child                            control: attach and seize a child of its own
 *   pidfd PID                               pidfd_open + pidfd_send_signal(SIGTERM)
 *   pidfd-child                             control: pidfd_open + pidfd_send_signal(SIGKILL) to its own child
 *   cgmove FILE                             write its own pid into FILE (a cgroup.procs)
 *   ids                                     print real/effective/saved uid, then try setuid(0)
 */
export const ESCAPE_HELPER_C = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    if (rc < 0) printf("%s rc=-1 errno=%s\n", what, strerrorname_np(errno));
    else printf("%s rc=%ld\n", what, rc);
    fflush(stdout);
}

static long do_ptrace(int req, pid_t pid) {
    long rc = ptrace(req, pid, 0, 0);
    if (rc == 0) {
        int e = errno;
        if (req == PTRACE_ATTACH) waitpid(pid, NULL, __WALL);
        else { ptrace(PTRACE_INTERRUPT, pid, 0, 0); waitpid(pid, NULL, __WALL); }
        ptrace(PTRACE_DETACH, pid, 0, 0);
        errno = e;
    }
    return rc;
}

static pid_t child(void) {
    pid_t p = fork();
    if (p == 0) { for (;;) pause(); }
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    pid_t target = argc > 2 ? (pid_t)atoi(argv[2]) : 0;
    if (!strcmp(cmd, "ptrace-attach")) { report("ptrace-attach", do_ptrace(PTRACE_ATTACH, target)); return 0; }
    if (!strcmp(cmd, "ptrace-seize")) { report("ptrace-seize", do_ptrace(PTRACE_SEIZE, target)); return 0; }
    if (!strcmp(cmd, "ptrace-child")) {
        pid_t c = child();
        report("ptrace-child-attach", do_ptrace(PTRACE_ATTACH, c));
        report("ptrace-child-seize", do_ptrace(PTRACE_SEIZE, c));
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        return 0;
    }
    if (!strcmp(cmd, "pidfd")) {
        long fd = syscall(SYS_pidfd_open, target, 0);
        report("pidfd_open", fd);
        if (fd >= 0) report("pidfd_send_signal", syscall(SYS_pidfd_send_signal, (int)fd, SIGTERM, NULL, 0));
        return 0;
    }
    if (!strcmp(cmd, "pidfd-child")) {
        pid_t c = child();
        long fd = syscall(SYS_pidfd_open, c, 0);
        report("pidfd-child-open", fd);
        report("pidfd-child-signal", fd < 0 ? -1 : syscall(SYS_pidfd_send_signal, (int)fd, SIGKILL, NULL, 0));
        int st = 0;
        waitpid(c, &st, 0);
        printf("pidfd-child-status %s %d\n", WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return 0;
    }
    if (!strcmp(cmd, "cgmove")) {
        /* Write our own pid into a cgroup.procs file: the move cgroup v2 would do. */
        FILE *f = fopen(argv[2], "w");
        if (!f) { report("cgmove-open", -1); return 0; }
        int n = fprintf(f, "%d\n", (int)getpid());
        int e = errno;
        int c = fclose(f);
        if (n < 0 || c != 0) { errno = n < 0 ? e : errno; report("cgmove-write", -1); return 0; }
        report("cgmove-write", 0);
        return 0;
    }
    if (!strcmp(cmd, "ids")) {
        uid_t r, e, s;
        getresuid(&r, &e, &s);
        printf("ruid=%u euid=%u suid=%u\n", r, e, s);
        report("setuid0", setuid(0));
        getresuid(&r, &e, &s);
        printf("after ruid=%u euid=%u suid=%u\n", r, e, s);
        return 0;
    }
    return 2;
}
`;

/**
 * A subreaper that runs a command and reports, one line each on stdout, `child <pid>` and then
 * `reaped <pid> exit <code>` / `reaped <pid> signal <signo>` for every process it reaps (its own
 * child and every orphan re-parented to it); it exits when it has no child left.
 */
export const REAPER_C = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) { perror("subreaper"); return 1; }
    pid_t p = fork();
    if (p < 0) return 1;
    if (p == 0) { execv(argv[1], argv + 1); _exit(127); }
    printf("child %d\n", p);
    fflush(stdout);
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0) { if (errno == EINTR) continue; break; }
        if (WIFEXITED(st)) printf("reaped %d exit %d\n", w, WEXITSTATUS(st));
        else printf("reaped %d signal %d\n", w, WTERMSIG(st));
        fflush(stdout);
    }
    return 0;
}
`;

export interface ReaperRun {
  /** The reaper's direct child (what it ran). */
  child: Promise<number>;
  /** Every stdout line that is not the reaper's own (the child's output, JSON logs, ...). */
  lines: string[];
  /** `exit <code>` or `signal <signo>` of every process the reaper reaped, by pid. */
  reaped: Map<number, string>;
  /** Resolves with how `pid` ended once the reaper reaped it, or null after timeoutMs. */
  waitReaped(pid: number, timeoutMs: number): Promise<string | null>;
  /** Resolves with the first line matching, or null after timeoutMs. */
  waitLine(re: RegExp, timeoutMs: number): Promise<string | null>;
  /** The reaper's own exit (it exits once it has no child left). */
  exited: Promise<number | null>;
  stderr(): string;
}

/** Run argv under the subreaper (REAPER_C, compiled at `reaper`): orphans are reaped at once and reported. */
export function underReaper(reaper: string, argv: string[], env: NodeJS.ProcessEnv = process.env): ReaperRun {
  const proc = spawn(reaper, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  const reaped = new Map<number, string>();
  const waiters = new Set<() => void>();
  let buf = '';
  let err = '';
  let childPid: (pid: number) => void = () => undefined;
  const child = new Promise<number>((r) => (childPid = r));
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let m: RegExpExecArray | null;
      if ((m = /^child (\d+)$/.exec(line))) childPid(Number(m[1]));
      else if ((m = /^reaped (\d+) ((?:exit|signal) \d+)$/.exec(line))) reaped.set(Number(m[1]), m[2]!);
      else lines.push(line);
    }
    for (const w of [...waiters]) w();
  });
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const wait = <T>(get: () => T | null, timeoutMs: number): Promise<T | null> =>
    new Promise((resolve) => {
      const check = () => {
        const v = get();
        if (v !== null) {
          clearTimeout(t);
          waiters.delete(check);
          resolve(v);
        }
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        resolve(get());
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return {
    child,
    lines,
    reaped,
    exited,
    stderr: () => err,
    waitReaped: (pid, timeoutMs) => wait(() => reaped.get(pid) ?? null, timeoutMs),
    waitLine: (re, timeoutMs) => wait(() => lines.find((l) => re.test(l)) ?? null, timeoutMs),
  };
}
