// cgroup limits enforced for real (not only written): a service OOM-killed at its memory.max in its
// own leaf, fork failing at pids.max, cpu.max throttling in cpu.stat. Runs in the kernel lab
// (`npm run test:lab`, docs/lab.md); skips with the reason on a host without the controllers.

import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serviceLeaf } from '../../effects/linux/cgroup.js';
import { start, stop } from '../linux/helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { runProbe } from '../linux/helpers/probe.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from '../linux/helpers/vm.js';
import { controllersSkipReason, readKeyed, readNumber, report } from './helpers.js';

const skip = controllersSkipReason(['memory', 'pids', 'cpu']);
if (skip) console.warn(`test/lab/limits skipped: ${skip}`);

describe.skipIf(skip)('cgroup limits enforced (kernel lab)', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('memory.max: the service is OOM-killed in its own leaf, the VM stops with serviceCrashed and says so', async () => {
    vm = newTestVm();
    // dash keeps a command substitution's output in memory: 128 MiB against a 32 MiB limit.
    const hog = service({
      name: 'hog',
      argv: ['/bin/sh', '-c', 'x=$(head -c 134217728 /dev/zero | tr "\\000" a); echo survived ${#x}'],
      limits: { 'memory.max': '32M' },
      onExit: 'stop',
    });
    const logs: string[] = [];
    const config = vmConfig(vm, [SLEEPER, hog]);
    const run = start(config, vm, { backend: { log: (m) => logs.push(m) } });
    // Read the leaf's counters when the exit is reported, before teardown removes the cgroup.
    let events: Record<string, number> = {};
    let vmEvents: Record<string, number> = {};
    let sleeperEvents: Record<string, number> = {};
    run.backend.events$.subscribe((e) => {
      if (e.type === 'SERVICE_EXITED' && e.service === 'hog') {
        const dir = run.backend.state.cgroupDir;
        events = readKeyed(join(dir, serviceLeaf('hog'), 'memory.events'));
        sleeperEvents = readKeyed(join(dir, serviceLeaf('vmm'), 'memory.events'));
        vmEvents = readKeyed(join(dir, 'memory.events.local'));
      }
    });
    const out = await run.done;
    report('oom', { outcome: out.outcome, exitCode: out.exitCode, errors: out.errors, hogLeaf: events, vmmLeaf: sleeperEvents, vmLocal: vmEvents, logs });
    expect(run.events).toContainEqual(expect.objectContaining({ type: 'SERVICE_EXITED', service: 'hog', signal: 'SIGKILL' }));
    expect(out.outcome).toBe('serviceCrashed');
    expect(out.errors.join('\n')).toMatch(/hog killed by SIGKILL/);
    expect(events.oom_kill).toBeGreaterThanOrEqual(1);
    expect(events.max).toBeGreaterThanOrEqual(1);
    expect(sleeperEvents.oom_kill ?? 0).toBe(0); // only the hog's leaf
    expect(vmEvents.oom_kill ?? 0).toBe(0);
    expect(logs.join('\n')).toMatch(/hog.*OOM/);
    expect(out.errors.join('\n')).toMatch(/out of memory|OOM/i);
    expect(leftovers(vm)).toEqual([]);
  });

  it('pids.max: fork fails in the service, pids.events counts it', async () => {
    vm = newTestVm();
    // pids.max 4: the shell and three children; the other forks fail (dash: "Cannot fork").
    const r = await runProbe(vm, 'for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait; echo done', {
      over: { limits: { 'pids.max': 4 } },
      exitTimeoutMs: 60_000,
    });
    const leaf = join(r.run.backend.state.cgroupDir, serviceLeaf('probe'));
    const ev = readKeyed(join(leaf, 'pids.events'));
    report('pids', { code: r.code, signal: r.signal, out: r.out, pidsEvents: ev, pidsMax: readNumber(join(leaf, 'pids.max')) });
    expect(r.out).toMatch(/fork|Resource temporarily unavailable/i);
    expect(ev.max).toBeGreaterThanOrEqual(1);
    expect((await stop(r.run)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });

  it('cpu.max: a busy service is throttled, visible in cpu.stat', async () => {
    vm = newTestVm();
    // A busy loop for 2 s of wall time (the shell's own clock: no fork per iteration).
    const r = await runProbe(vm, 'timeout 2 sh -c "while :; do :; done"; echo busy-done', {
      over: { limits: { 'cpu.max': '10000 100000' } },
      exitTimeoutMs: 60_000,
    });
    const leaf = join(r.run.backend.state.cgroupDir, serviceLeaf('probe'));
    const st = readKeyed(join(leaf, 'cpu.stat'));
    report('cpu', { out: r.out, cpuMax: '10000 100000', cpuStat: st });
    expect(r.out).toMatch(/busy-done/);
    expect(st.nr_throttled).toBeGreaterThan(0);
    expect(st.throttled_usec).toBeGreaterThan(0);
    // 2 s of wall time at 10 % of one CPU: about 0.2 s of CPU, far from the 2 s it would use.
    expect(st.usage_usec).toBeLessThan(800_000);
    expect((await stop(r.run)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });
});
