// check and run tell the same truth. For every capability and every rule that depends on the host
// (files, devices, Landlock ABI, cgroup controllers, what exists under the VM's names), the same
// config goes to `vmsandbox check` and to `vmsandbox run`: check exiting 0 means run gets ready
// and stops with 0 on SIGTERM; check exiting 100 or 111 means run exits the same, having created
// nothing.

import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkMain } from '../../cli/check.js';
import { CAPABILITIES, LANDLOCK_ABI_MAX } from '../../config/rules.js';
import { landlockAbi } from '../../effects/linux/native.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { CGROUP_PARENT, cgroupParentDir } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, SYSTEM_READ, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`skipping check/run agreement: ${skip}`);

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function rawConfig(vm: TestVm): Raw {
  return {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts: { setupMs: 10_000, stopMs: 3000, killMs: 2000 },
    cgroup: { parent: CGROUP_PARENT },
    landlock: { minAbi: 1 },
    services: [{ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: 62002, gid: 62002, landlock: { read: [...SYSTEM_READ], write: [] } }],
  };
}


/** check's exit code, then run's: ready and stopped with 0 when check said 0. */
async function agree(label: string, edit: (c: Raw, vm: TestVm) => void): Promise<{ check: number; run: number; fails: string }> {
  const vm = newTestVm();
  try {
    const raw = rawConfig(vm);
    edit(raw, vm);
    // What a case plants under the VM's names is not the run's: it must still be there after it.
    const planted = leftovers(vm);
    const file = join(vm.scratch, 'vm.json');
    writeFileSync(file, JSON.stringify(raw));
    let said = '';
    const io = { out: (t: string) => void (said += t), err: (t: string) => void (said += t) };
    const check = await checkMain([file], { io });
    const fails = said.split('\n').filter((l) => l.startsWith('FAIL')).join('\n');
    const run = spawnRun(file);
    if (check === 0) {
      const ready = await new Promise<boolean>((resolve) => {
        const t = setInterval(() => {
          if (run.lines.some((l) => l.event === 'ready')) done(true);
        }, 20);
        const done = (v: boolean) => {
          clearInterval(t);
          resolve(v);
        };
        void run.exited.then(() => done(run.lines.some((l) => l.event === 'ready')));
      });
      expect(ready, `${label}: check said 0, run never got ready:\n${run.log()}`).toBe(true);
      run.kill('SIGTERM');
    }
    const code = await run.exited;
    expect(code, `${label}: check exited ${check} (${fails}), run ${code}:\n${run.log()}`).toBe(check);
    expect(leftovers(vm), label).toEqual(planted);
    return { check, run: code ?? -1, fails };
  } finally {
    forceCleanup(vm);
  }
}

describe.skipIf(skip)('check and run agree', () => {
  afterAll(() => removeTestParents());

  it('for every capability (a forbidden one: 100 both; any other: ready, then 0)', async () => {
    ensureNative();
    const seen: Record<string, number> = {};
    // Two at a time: each run is a Node start, a sandbox, a stop.
    const caps = [...CAPABILITIES];
    const next = async (): Promise<void> => {
      const cap = caps.shift();
      if (cap === undefined) return;
      seen[cap] = (await agree(`CAP_${cap}`, (c) => (c.services[0].caps = [`CAP_${cap}`]))).check;
      return next();
    };
    await Promise.all([next(), next()]);
    expect(Object.keys(seen)).toHaveLength(CAPABILITIES.length);
    expect(seen.SYS_ADMIN).toBe(100);
    expect(seen.NET_BIND_SERVICE).toBe(0);
  }, 240_000);

  const hostCases: Array<[string, number | null, (c: Raw, vm: TestVm) => void]> = [
    ['storage that does not exist', 111, (c) => (c.storage = '/nonexistent/vmsandbox-storage')],
    ['a Landlock read path that does not exist', 111, (c) => c.services[0].landlock.read.push('/nonexistent/path')],
    ['argv[0] that does not exist', 111, (c) => (c.services[0].argv = ['/nonexistent/vmm'])],
    ['argv[0] outside the Landlock rules', 111, (c) => (c.services[0].landlock.read = ['/etc'])],
    ['a device node that does not exist', 111, (c) => (c.services[0].devices = ['/dev/vmsandbox-nonexistent'])],
    ['a stop command that does not exist', 111, (c) => (c.services[0].stop = { command: ['/nonexistent/stop'] })],
    ['a runtime dir that exists and no run created', 111, (c, vm) => mkdirSync(vm.runtimeDir, { recursive: true })],
    ['a VM cgroup that exists and no run created', 111, (c, vm) => mkdirSync(join(cgroupParentDir(), vm.name), { recursive: true })],
    ['landlock.minAbi at the host\'s ABI', 0, (c) => (c.landlock = { minAbi: Math.max(1, Math.min(LANDLOCK_ABI_MAX, landlockAbi())) })],
    ['a config error', 100, (c) => (c.services[0].bogus = true)],
    ['storage in /proc (the host\'s root through /proc/self/root)', 100, (c) => (c.storage = '/proc/self/root')],
    ['storage inside the runtime dir', 100, (c, vm) => (c.storage = `${vm.runtimeDir}/disk`)],
    ['a runtime dir under a world-writable directory', 111, (c, vm) => (c.runtimeDir = `/tmp/${vm.name}-rt`)],
    ['storage reached through a symlink into /proc', 111, (c, vm) => {
      const link = join(vm.scratch, 'storage-link');
      symlinkSync('/proc/self/root', link);
      c.storage = link;
    }],
  ];
  const controllers = (() => {
    try {
      return readFileSync(join(cgroupParentDir(), '..', 'cgroup.controllers'), 'utf8').split(/\s+/);
    } catch {
      return [];
    }
  })();
  for (const ctl of ['memory', 'pids', 'cpu']) {
    const key = ctl === 'cpu' ? 'cpu.weight' : `${ctl}.max`;
    const has = controllers.includes(ctl);
    hostCases.push([`a ${key} limit (${ctl} controller ${has ? 'available' : 'absent'} here)`, has ? 0 : 111, (c) => (c.cgroup.limits = { [key]: ctl === 'cpu' ? 50 : 100_000_000 })]);
    hostCases.push([`a ${key} limit with limitsOptional`, 0, (c) => Object.assign(c.cgroup, { limits: { [key]: ctl === 'cpu' ? 50 : 100_000_000 }, limitsOptional: true })]);
  }

  for (const [label, expected, edit] of hostCases) {
    it(`for ${label}: check ${expected}, run the same`, async () => {
      ensureNative();
      const r = await agree(label, edit);
      expect(r.check, `${label}: ${r.fails}`).toBe(expected);
    }, 30_000);
  }
});
