// What a test VM leaves on the host (processes in its PID namespace or cgroup, its cgroup, mounts,
// runtime dir, journal), and removing it by force so one failure does not leak into the next test.

import { existsSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { failuresPath, lastRunPath, readRecord, runtimeDirLockPath, vmLockPath } from '../../../effects/linux/owner.js';
import { cgroupParentDir, TEST_RUNTIME_ROOT } from './paths.js';
import type { TestVm } from './vm.js';

/** Remember the PID namespace of a VM's init, so leftovers() can look for exactly its processes. */
export function trackNamespace(vm: TestVm, initPid: number): void {
  const ns = readlinkSafe(`/proc/${initPid}/ns/pid`);
  if (ns) (vm.pidNs ??= []).push(ns);
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
  for (const f of [vmLockPath(vm.name), runtimeDirLockPath(vm.runtimeDir), failuresPath(vm.name), lastRunPath(vm.name)]) rmSync(f, { force: true });
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
    rmdirSync(TEST_RUNTIME_ROOT);
  } catch {
    /* absent or not empty */
  }
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
