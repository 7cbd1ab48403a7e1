// Is a service's tmpfs use charged to its cgroup? A service writes N MiB to its private /tmp and
// /dev/shm (`tmp`, `shm`: tmpfs mounts in its own mount namespace); we read
// memory.current (and memory.stat's shmem) of its leaf, of the VM's cgroup and of the manager's
// cgroup before and after, then what happens when the writes exceed memory.max. Runs in the
// kernel lab (`npm run test:lab`, docs/lab.md); skips with the reason on a host without the memory
// controller. The numbers are in docs/linux-backend.md ("tmpfs and the memory controller").

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serviceLeaf } from '../../effects/linux/cgroup.js';
import { start, stop, type Run } from '../linux/helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { until } from '../linux/helpers/until.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from '../linux/helpers/vm.js';
import { controllersSkipReason, MiB, mib, ownCgroupDir, readKeyed, readNumber, report } from './helpers.js';

const skip = controllersSkipReason(['memory']);
if (skip) console.warn(`test/lab/tmpfs skipped: ${skip}`);

const N = 64; // MiB written to each of /tmp and /dev/shm

interface Sample {
  leaf: number | null;
  leafShmem: number;
  vm: number | null;
  manager: number | null;
  vmmLeaf: number | null;
}

function sample(run: Run, svc: string): Sample {
  const dir = run.backend.state.cgroupDir;
  return {
    leaf: readNumber(join(dir, serviceLeaf(svc), 'memory.current')),
    leafShmem: readKeyed(join(dir, serviceLeaf(svc), 'memory.stat')).shmem ?? 0,
    vm: readNumber(join(dir, 'memory.current')),
    manager: readNumber(join(ownCgroupDir(), 'memory.current')),
    vmmLeaf: readNumber(join(dir, serviceLeaf('vmm'), 'memory.current')),
  };
}

const inMiB = (s: Sample) => ({ leaf: mib(s.leaf), leafShmem: mib(s.leafShmem), vm: mib(s.vm), manager: mib(s.manager), vmmLeaf: mib(s.vmmLeaf) });

/** The writer: `step NAME` lines in its output file; waits for `go-NAME` in its runtime dir between steps. */
function writerScript(dir: string, n: number): string {
  const wait = (s: string) => `while [ ! -e ${dir}/go-${s} ]; do sleep 0.05; done`;
  return [
    `echo step ready`,
    wait('tmp'),
    `head -c ${n}M /dev/zero > /tmp/fill; echo "step tmp $?"`,
    wait('shm'),
    `head -c ${n}M /dev/zero > /dev/shm/fill; echo "step shm $?"`,
    wait('rm'),
    `rm -f /tmp/fill /dev/shm/fill; echo "step rm $?"`,
    `exec sleep 1000`,
  ].join('\n');
}

describe.skipIf(skip)('tmpfs charging (kernel lab)', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  async function writer(limit: string | null): Promise<{ run: Run; outFile: string; step: (s: string, timeoutMs?: number) => Promise<string> }> {
    vm = newTestVm();
    const dir = `${vm.runtimeDir}/writer`;
    const outFile = `${dir}/out`;
    const w = service({
      name: 'writer',
      argv: ['/bin/sh', '-c', `exec >${outFile} 2>&1\n${writerScript(dir, N)}`],
      // tmpfs sizes well above N, so that the cgroup's memory.max is what bites, not the size.
      tmp: '256M',
      shm: '256M',
      // Without a memory limit vmsandbox does not enable the memory controller on the leaf (it
      // would have no memory.current): "unlimited" is a limit far above what is written.
      limits: { 'memory.max': limit ?? '1G' },
    });
    const run = start(vmConfig(vm, [SLEEPER, w]), vm);
    await run.waitFor('running');
    const out = () => (existsSync(outFile) ? readFileSync(outFile, 'utf8') : '');
    const step = async (s: string, timeoutMs = 30_000) => {
      const re = new RegExp(`^step ${s}.*$`, 'm');
      if (s !== 'ready') writeFileSync(join(dir, `go-${s}`), '');
      const exited = () => run.events.some((e) => e.type === 'SERVICE_EXITED' && e.service === 'writer');
      await until(() => re.test(out()) || exited(), timeoutMs, 20);
      return re.exec(out())?.[0] ?? `(no "step ${s}": ${exited() ? 'the writer exited' : 'timeout'}; output ${JSON.stringify(out())})`;
    };
    return { run, outFile, step };
  }

  it(`${N} MiB in the private /tmp and ${N} MiB in /dev/shm are charged to the service's leaf (and so its VM), not the manager`, async () => {
    const { run, step } = await writer(null);
    await step('ready');
    const s0 = sample(run, 'writer');
    const tmp = await step('tmp');
    const s1 = sample(run, 'writer');
    const shm = await step('shm');
    const s2 = sample(run, 'writer');
    const rm = await step('rm');
    const s3 = sample(run, 'writer');
    report('tmpfs-unlimited', { N, steps: [tmp, shm, rm], before: inMiB(s0), afterTmp: inMiB(s1), afterShm: inMiB(s2), afterRm: inMiB(s3) });
    expect([tmp, shm, rm]).toEqual(['step tmp 0', 'step shm 0', 'step rm 0']);
    const grew = (a: number | null, b: number | null) => (b ?? 0) - (a ?? 0);
    // Each write: about N MiB more in the leaf (and its VM cgroup, which contains it), shmem too.
    expect(grew(s0.leaf, s1.leaf)).toBeGreaterThan((N - 4) * MiB);
    expect(grew(s1.leaf, s2.leaf)).toBeGreaterThan((N - 4) * MiB);
    expect(s2.leafShmem).toBeGreaterThan((2 * N - 4) * MiB);
    expect(grew(s0.vm, s2.vm)).toBeGreaterThan((2 * N - 4) * MiB);
    // Not the manager's cgroup, not the other service's leaf.
    if (s0.manager !== null) expect(Math.abs(grew(s0.manager, s2.manager))).toBeLessThan(N * MiB / 2);
    expect(Math.abs(grew(s0.vmmLeaf, s2.vmmLeaf))).toBeLessThan(4 * MiB);
    // rm gives it back.
    expect(grew(s3.leaf, s2.leaf)).toBeGreaterThan((2 * N - 8) * MiB);
    expect((await stop(run)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });

  it(`at memory.max (${N / 2} MiB) the write into the private /tmp is cut short: the OOM killer kills the writer in its leaf`, async () => {
    const { run, step } = await writer(`${N / 2}M`);
    await step('ready');
    const s0 = sample(run, 'writer');
    let leafEvents: Record<string, number> = {};
    let atExit: Sample | null = null;
    run.backend.events$.subscribe((e) => {
      if (e.type === 'SERVICE_EXITED' && e.service === 'writer') {
        leafEvents = readKeyed(join(run.backend.state.cgroupDir, serviceLeaf('writer'), 'memory.events'));
        atExit = sample(run, 'writer');
      }
    });
    const tmp = await step('tmp');
    await until(() => run.events.some((e) => e.type === 'SERVICE_EXITED' && e.service === 'writer'), 5_000, 20);
    const s1 = sample(run, 'writer');
    // The service is gone (its processes killed): is its private tmpfs (and its charge) gone too?
    await new Promise((r) => setTimeout(r, 1000));
    const s2 = sample(run, 'writer');
    const exit = run.events.find((e) => e.type === 'SERVICE_EXITED' && e.service === 'writer');
    report('tmpfs-at-memory.max', { N, limitMiB: N / 2, step: tmp, exit, leafEvents, before: inMiB(s0), atExit: atExit && inMiB(atExit), after: inMiB(s1), after1s: inMiB(s2) });
    // What the kernel did, recorded above; the test only requires that the limit held.
    expect(leafEvents.max ?? 0).toBeGreaterThan(0);
    expect(atExit === null || (atExit as Sample).leaf! <= (N / 2) * MiB).toBe(true);
    expect(s1.leaf ?? 0).toBeLessThanOrEqual((N / 2) * MiB);
    await stop(run);
    expect(leftovers(vm)).toEqual([]);
  });
});
