// `vmsandbox status`: a real `vmsandbox run`, read while it runs (state, readiness, services with
// their pids, uids and cgroups) and after it ended (not running, the last run's outcome).

import { spawnSync } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderStatus, statusMain, vmStatus, type VmStatus } from '../../cli/status.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun, writeRunConfig } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { cgroupParentDir, repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, type TestVm } from './helpers/vm.js';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linuxOwnership } from '../../effects/linux/owner.js';
import { claimVm } from '../../effects/owner.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/status skipped: ${skip}`);

function capture() {
  const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t) };
  return io;
}

async function until(pred: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  for (const start = Date.now(); Date.now() - start < timeoutMs; await new Promise((r) => setTimeout(r, 50))) if (await pred()) return;
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

describe.skipIf(skip)('vmsandbox status', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('shows a running VM (state, ready, each service\'s pid, uid and cgroup), then not running with the last run\'s outcome', async () => {
    vm = newTestVm();
    const m = spawnRun(writeRunConfig(vm, ['/bin/sleep', '1000']).file);
    await m.waitForState('running');
    let s: VmStatus = await vmStatus(vm.name);
    await until(async () => (s = await vmStatus(vm.name)).ready !== null, 'ready in status');
    expect(s).toMatchObject({ vm: vm.name, running: true, manager: { pid: m.pid, phase: 'running' }, state: { name: 'running' } });
    expect(s.ready).toMatchObject({ condition: expect.any(String), ms: expect.any(Number) });
    const vmm = s.services.find((x) => x.name === 'vmm');
    expect(vmm).toMatchObject({ uid: 62002, cgroup: `vmsandbox-test/${vm.name}/svc-vmm` });
    // The host's pid: in the vmm's leaf, the vmm's program.
    expect(readFileSync(join(cgroupParentDir(), '..', vmm!.cgroup!, 'cgroup.procs'), 'utf8')).toContain(`${vmm!.pid}\n`);
    expect(readFileSync(`/proc/${vmm!.pid}/cmdline`, 'utf8')).toBe('/bin/sleep\u00001000\u0000');
    // The text a person reads, from the same data.
    const text = renderStatus(s);
    expect(text).toMatch(new RegExp(`^${vm.name}: running, ready, since .* ago\\); manager pid ${m.pid}\\n`));
    expect(text).toMatch(/^ {2}services {2}name +pid +uid +memory +pids +cgroup$/m);
    expect(text).toMatch(new RegExp(`^ {12}vmm +\\d+ +62002 .*vmsandbox-test/${vm.name}/svc-vmm$`, 'm'));
    // The command: exit 0 while it runs; --json is the same data.
    const io = capture();
    expect(await statusMain([vm.name, '--json'], io)).toBe(0);
    expect(JSON.parse(io.stdout)).toMatchObject([{ vm: vm.name, running: true }]);

    m.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    const after = await vmStatus(vm.name);
    expect(after).toMatchObject({ running: false, manager: null, lastRun: { exitCode: 0, outcome: 'stopped', pid: m.pid, reason: null } });
    // Through the command as an operator runs it: "not running", exit 3 (systemctl's).
    const cli = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['status', vm.name], { encoding: 'utf8' });
    expect(cli.status).toBe(3);
    expect(cli.stdout).toMatch(new RegExp(`^${vm.name}: not running\\n {2}last run {2}exit 0 \\(stopped\\), ended .* ago\\), after \\d+s\\n$`));
    expect(leftovers(vm)).toEqual([]);
  }, 30_000);

  it('a VM being set up (its lock taken, its status socket not open yet): running, and the note says so', async () => {
    vm = newTestVm();
    // What run holds between taking the lock and launching the services: the lock's record in
    // phase starting, with the runtime dir journalled, and no status socket in it yet.
    const dir = mkdtempSync(join(tmpdir(), 'vmsandbox-status-locks-'));
    chmodSync(dir, 0o700);
    const config = { ...writeRunConfig(vm, ['/bin/sleep', '1000']).config, runtimeDir: mkdtempSync(join(tmpdir(), 'vmsandbox-status-rt-')) };
    const claim = await claimVm(linuxOwnership({ dir }), config, { pid: process.pid });
    if (!claim.ok) throw new Error('the lock was not taken');
    try {
      claim.lock.setJournal({ ...claim.lock.journal(), runtimeDir: config.runtimeDir });
      const s = await vmStatus(vm.name, dir);
      expect(s).toMatchObject({ running: true, manager: { pid: process.pid, phase: 'starting' }, state: null });
      expect(s.notes).toEqual(['its manager is setting up the sandbox (the status socket opens once its services are launched)']);
    } finally {
      claim.lock.release();
      rmSync(dir, { recursive: true, force: true });
      rmSync(config.runtimeDir, { recursive: true, force: true });
    }
  });

  it('a VM with no record: not running, never ran here; exit 3', async () => {
    vm = newTestVm();
    const io = capture();
    expect(await statusMain([vm.name], io)).toBe(3);
    expect(io.stdout).toBe(`${vm.name}: not running (no run recorded on this host)\n`);
  });
});
