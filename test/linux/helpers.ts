// Shared helpers for the real-kernel tests: configs, driving the real machine, leak checks.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createActor, type Actor } from 'xstate';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
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
        resolve({ outcome: 'setupFailed', exitCode: 111, errors: [String(e)], teardownFailed: true });
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
