// cgroup limits written for real. On hosts whose cgroup2 hierarchy lacks the memory and pids
// controllers (these development machines: cgroup v1 holds them) this skips with the reason; the
// simulator covers refusing and degrading there (test/sim.test.ts "limit whose controller is
// missing"), and test/linux/lifecycle.test.ts covers the refusal on this host.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serviceLeaf, vmCgroupDir } from '../../effects/linux/cgroup.js';
import { start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents, trackNamespace } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { CGROUP_PARENT, cgroupParentDir } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, SLEEPER, vmConfig, type TestVm } from './helpers/vm.js';

function limitsSkipReason(): string | null {
  const base = skipReason();
  if (base) return base;
  // Where the VM's cgroups would be created: the controllers the parent can hand down.
  let dir = cgroupParentDir();
  while (!existsSync(join(dir, 'cgroup.controllers'))) dir = join(dir, '..');
  const available = readFileSync(join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
  const missing = ['memory', 'pids'].filter((c) => !available.includes(c));
  return missing.length ? `the cgroup2 hierarchy here has no ${missing.join(' or ')} controller (held by cgroup v1 on this host)` : null;
}

const skip = limitsSkipReason();
if (skip) console.warn(`test/linux/limits skipped: ${skip}`);

describe.skipIf(skip)('cgroup limits on a host that has the controllers', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('writes the VM-wide and per-service limits into the right cgroups', async () => {
    vm = newTestVm();
    const config = vmConfig(vm, [{ ...SLEEPER, limits: { 'memory.max': '64M', 'pids.max': 16 } }], {
      cgroup: { parent: CGROUP_PARENT, limits: { 'pids.max': 64 }, limitsOptional: false },
    });
    const run = start(config, vm);
    await run.waitFor('running');
    trackNamespace(vm, run.backend.state.initPid!);
    const dir = vmCgroupDir(config);
    expect(readFileSync(join(dir, 'pids.max'), 'utf8').trim()).toBe('64');
    expect(readFileSync(join(dir, serviceLeaf('vmm'), 'memory.max'), 'utf8').trim()).toBe(String(64 * 1024 * 1024));
    expect(readFileSync(join(dir, serviceLeaf('vmm'), 'pids.max'), 'utf8').trim()).toBe('16');
    expect((await stop(run)).exitCode).toBe(0);
    expect(leftovers(vm)).toEqual([]);
  });
});
