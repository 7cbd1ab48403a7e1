// One owner per VM (effects/owner.ts, effects/linux/owner.ts), through the commands s6 runs:
// `vmsandbox run` twice, `vmsandbox finish` during a run, after a SIGKILLed manager, and --force.
// The harm these guard against is shown first, with the lock bypassed (the positive control).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLinuxBackend } from '../../effects/linux/backend.js';
import { linuxOwnership, readRecord, runtimeDirLockPath, vmLockPath } from '../../effects/linux/owner.js';
import { memoryJournal } from '../../effects/owner.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun, writeRunConfig, type RunningManager } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { cgroupParentDir, repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/ownership skipped: ${skip}`);

const VMM = ['/bin/sleep', '1000'];

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/** The vmm's host pid, from the manager's `running` record. */
async function runningVmm(m: RunningManager): Promise<number> {
  await m.waitForState('running');
  const rec = m.lines.find((l) => l.state === 'running') as { services: Record<string, number> };
  return rec.services.vmm!;
}

function finish(file: string, ...args: string[]): { code: number | null; records: Record<string, unknown>[] } {
  const r = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['finish', file, ...args], { encoding: 'utf8' });
  const records = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code: r.status, records };
}

/** leftovers(), once a killed init's zombie has been reaped by whoever inherited it. */
async function settled(vm: TestVm): Promise<string[]> {
  await until(() => leftovers(vm).length === 0, 3000, 20);
  return leftovers(vm);
}

function cgroupOf(vm: TestVm): string {
  return join(cgroupParentDir(), vm.name);
}

/** Everything that shows the VM is live: its vmm process, its cgroup and runtime dir. */
function intact(vm: TestVm, vmmPid: number): string[] {
  return [
    ...(alive(vmmPid) ? [] : [`vmm ${vmmPid} is gone`]),
    ...(existsSync(cgroupOf(vm)) ? [] : ['cgroup is gone']),
    ...(existsSync(vm.runtimeDir) ? [] : ['runtime dir is gone']),
  ];
}

describe.skipIf(skip)('one owner per VM', () => {
  const vms: TestVm[] = [];
  const fresh = () => {
    const vm = newTestVm();
    vms.push(vm);
    return vm;
  };
  beforeAll(() => ensureNative());
  afterEach(() => {
    for (const vm of vms.splice(0)) forceCleanup(vm);
  });
  afterAll(() => removeTestParents());

  it('positive control: without the lock, a second teardown of the same VM kills the live one', async () => {
    const vm = fresh();
    const { file, config } = writeRunConfig(vm, VMM);
    const first = spawnRun(file);
    const vmm = await runningVmm(first);
    // What a second manager did before it had to own the VM: teardown "by name".
    const second = createLinuxBackend(config, { journal: memoryJournal({ cgroup: cgroupOf(vm), runtimeDir: vm.runtimeDir }) });
    await second.effects.killAll({}, new AbortController().signal);
    second.dispose();
    expect(await until(() => !alive(vmm), 2000)).toBe(true);
    expect(await first.exited, first.log()).not.toBe(0);
  });

  it('a second run of the same config exits 101 naming the owner, and changes nothing; the first stops cleanly', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    const first = spawnRun(file);
    const vmm = await runningVmm(first);
    const cgroupProcs = readFileSync(join(cgroupOf(vm), 'svc-vmm', 'cgroup.procs'), 'utf8');
    const t0 = performance.now();
    const second = spawnRun(file);
    expect(await second.exited, second.log()).toBe(101);
    const ms = performance.now() - t0;
    const refusal = second.lines.find((l) => l.exitCode === 101)!;
    expect(refusal.msg).toContain(`vm ${vm.name} is already running (manager pid `);
    expect((refusal.owner as { pid: number }).pid).toBeGreaterThan(0);
    expect(second.lines.some((l) => l.state)).toBe(false);
    console.log(`[ownership] second run refused in ${ms.toFixed(0)} ms (node start included)`);
    // The first is untouched: same vmm, same cgroup members, still running.
    expect(intact(vm, vmm)).toEqual([]);
    expect(readFileSync(join(cgroupOf(vm), 'svc-vmm', 'cgroup.procs'), 'utf8')).toBe(cgroupProcs);
    expect(first.lines.some((l) => l.state && l.state !== 'running' && first.lines.indexOf(l) > first.lines.findIndex((x) => x.state === 'running'))).toBe(false);
    first.kill('SIGTERM');
    expect(await first.exited, first.log()).toBe(0);
    expect(leftovers(vm)).toEqual([]);
  });

  it('same name with another config, and another name on the same runtime dir: both refused with 101', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    const first = spawnRun(file);
    const vmm = await runningVmm(first);

    const sameName = { ...vm, runtimeDir: `${vm.runtimeDir}-other`, scratch: join(vm.scratch, 'b') };
    mkdirSync(sameName.scratch);
    const b = spawnRun(writeRunConfig(sameName, VMM).file);
    expect(await b.exited, b.log()).toBe(101);
    expect(b.lines.find((l) => l.exitCode === 101)!.msg).toContain(`vm ${vm.name} is already running`);
    expect(existsSync(sameName.runtimeDir)).toBe(false);

    const sameDir = { ...fresh(), runtimeDir: vm.runtimeDir };
    const c = spawnRun(writeRunConfig(sameDir, VMM).file);
    expect(await c.exited, c.log()).toBe(101);
    expect(c.lines.find((l) => l.exitCode === 101)!.msg).toContain(`runtime dir ${vm.runtimeDir} is in use by vm ${vm.name}`);
    expect(existsSync(cgroupOf(sameDir))).toBe(false);

    expect(intact(vm, vmm)).toEqual([]);
    first.kill('SIGTERM');
    expect(await first.exited, first.log()).toBe(0);
    expect(leftovers(vm)).toEqual([]);
  });

  it('finish during a run refuses and changes nothing; finish --force kills the VM without a graceful stop', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    const m = spawnRun(file);
    const vmm = await runningVmm(m);
    const f = finish(file);
    expect(f.code).toBe(1);
    const rec = f.records.find((r) => r.event === 'finish')!;
    expect(rec.msg).toMatch(new RegExp(`vm ${vm.name} is already running \\(manager pid \\d+\\): finish changes nothing`));
    expect(rec.removed).toEqual([]);
    expect(intact(vm, vmm)).toEqual([]);

    const forced = finish(file, '--force');
    expect(forced.code).toBe(0);
    expect(forced.records.some((r) => /finish --force: .* killing it without a graceful stop/.test(String(r.msg)))).toBe(true);
    expect(forced.records.find((r) => r.event === 'finish')!.removed).toEqual(expect.arrayContaining([`runtime dir ${vm.runtimeDir}`]));
    expect(alive(vmm)).toBe(false);
    // The manager notices its sandbox died under it and ends with a failure code s6 restarts on.
    expect([5, 7]).toContain(await m.exited);
    expect(await settled(vm)).toEqual([]);
  });

  it('after a SIGKILLed manager the lock is free: finish removes exactly what it left', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    const m = spawnRun(file);
    await runningVmm(m);
    m.kill('SIGKILL');
    await m.exited;
    expect(existsSync(cgroupOf(vm))).toBe(true);
    const journal = JSON.parse(readFileSync(vmLockPath(vm.name), 'utf8')) as { journal: unknown; phase: string };
    expect(journal).toMatchObject({ phase: 'running', journal: { cgroup: cgroupOf(vm), runtimeDir: vm.runtimeDir } });
    const f = finish(file, '256', '9');
    expect(f.code).toBe(0);
    expect(f.records.find((r) => r.event === 'finish')!.removed).toEqual(expect.arrayContaining([`cgroup ${cgroupOf(vm)}`, `runtime dir ${vm.runtimeDir}`]));
    expect(await settled(vm)).toEqual([]);
    // Its journal emptied and nobody left to read the record: the lock's files are gone too.
    expect(existsSync(vmLockPath(vm.name))).toBe(false);
    expect(existsSync(runtimeDirLockPath(vm.runtimeDir))).toBe(false);
  });

  it('a run after a SIGKILLed manager removes what it left, then starts', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    const m = spawnRun(file);
    const oldVmm = await runningVmm(m);
    m.kill('SIGKILL');
    await m.exited;
    const next = spawnRun(file);
    const vmm = await runningVmm(next);
    expect(vmm).not.toBe(oldVmm);
    const stale = next.lines.find((l) => l.event === 'stale')!;
    expect(stale.msg).toMatch(/removed what a manager \(pid \d+\) that ended without tearing down \(last seen running\) left/);
    next.kill('SIGTERM');
    expect(await next.exited, next.log()).toBe(0);
    expect(await settled(vm)).toEqual([]);
  });

  it('a new run waits for an owner that is stopping (a restarted supervisor), then takes the VM', async () => {
    const vm = fresh();
    const stubborn = ['/bin/sh', '-c', `trap "" TERM; : > ${vm.runtimeDir}/vmm/armed; while :; do sleep 1; done`];
    const { file } = writeRunConfig(vm, stubborn, { stopMs: 1500, killMs: 2000 });
    const first = spawnRun(file);
    await runningVmm(first);
    expect(await until(() => existsSync(`${vm.runtimeDir}/vmm/armed`), 5000, 20)).toBe(true);
    first.kill('SIGTERM');
    const phase = () => readRecord(vmLockPath(vm.name))?.phase;
    expect(await until(() => phase() === 'stopping', 5000, 10)).toBe(true);
    const next = spawnRun(file);
    const vmm = await runningVmm(next);
    expect(await first.exited, first.log()).toBe(2);
    expect(next.lines.some((l) => /the previous manager \(pid \d+\) is stopping; waiting up to \d+ ms for it/.test(String(l.msg)))).toBe(true);
    expect(alive(vmm)).toBe(true);
    expect(await until(() => existsSync(`${vm.runtimeDir}/vmm/armed`), 5000, 20)).toBe(true);
    next.kill('SIGTERM');
    expect(await next.exited, next.log()).toBe(2);
    expect(await settled(vm)).toEqual([]);
  });

  it('a cgroup or runtime dir that no run of the VM created is refused (111) and left alone', async () => {
    const vm = fresh();
    const { file } = writeRunConfig(vm, VMM);
    mkdirSync(cgroupOf(vm), { recursive: true });
    const a = spawnRun(file);
    expect(await a.exited, a.log()).toBe(111);
    expect(a.log()).toContain(`cgroup ${cgroupOf(vm)} exists, and no run of vm ${vm.name} created it`);
    expect(existsSync(cgroupOf(vm))).toBe(true);
    rmdirSync(cgroupOf(vm));

    mkdirSync(vm.runtimeDir, { recursive: true });
    writeFileSync(join(vm.runtimeDir, 'not-ours'), 'x');
    const b = spawnRun(file);
    expect(await b.exited, b.log()).toBe(111);
    expect(b.log()).toContain(`runtime dir ${vm.runtimeDir} (runtimeDir) exists, and no run of vm ${vm.name} created it`);
    expect(existsSync(join(vm.runtimeDir, 'not-ours'))).toBe(true);
    expect(existsSync(cgroupOf(vm))).toBe(false);
    // --force is the operator's way to remove it.
    expect(finish(file, '--force').code).toBe(0);
    expect(leftovers(vm)).toEqual([]);
  });

  it('the lock is held by the manager alone: neither the init nor a service has it open', async () => {
    const vm = fresh();
    const { file, config } = writeRunConfig(vm, VMM);
    const m = spawnRun(file);
    await runningVmm(m);
    const lockFile = vmLockPath(vm.name);
    const holders = (pids: number[]) =>
      pids.filter((p) => {
        try {
          return readdirSync(`/proc/${p}/fd`).some((fd) => {
            try {
              return readlinkSync(`/proc/${p}/fd/${fd}`) === lockFile;
            } catch {
              return false;
            }
          });
        } catch {
          return false;
        }
      });
    const vmPids = execFileSync('sh', ['-c', `cat ${cgroupOf(vm)}/*/cgroup.procs`], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
    expect(vmPids.length).toBeGreaterThanOrEqual(3); // init, helper, vmm
    expect(holders(vmPids)).toEqual([]);
    // And it is held: nobody else can take it.
    expect(linuxOwnership().tryClaim(config, { pid: process.pid, phase: 'finish' }).ok).toBe(false);
    m.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    // A clean stop leaves nothing under /run, the lock's files included.
    expect(existsSync(vmLockPath(vm.name))).toBe(false);
    expect(existsSync(runtimeDirLockPath(vm.runtimeDir))).toBe(false);
    const after = linuxOwnership().tryClaim(config, { pid: process.pid, phase: 'finish' });
    expect(after.ok).toBe(true);
    if (after.ok) after.lock.release();
    expect(existsSync(vmLockPath(vm.name))).toBe(false);
  });
});
