// vmsandbox under a real s6 supervision tree: s6-svscan on a temporary scan directory, a service
// directory generated from examples/s6/vm-demo with a per-test config, driven with s6-svc, watched
// with s6-svwait and s6-svstat. The vmm is examples/fake-vmm.mjs (a QMP-speaking QEMU stand-in).

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../config/load.js';
import { Scan, s6Unavailable, writeServiceDir } from '../../s6/scan.js';
import { stopBoundMs } from '../../s6/run.js';
import { failuresPath } from '../../effects/linux/owner.js';
import { forceCleanup, leftovers, removeTestParents, trackNamespace } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { CGROUP_PARENT, cgroupParentDir, repoRoot } from '../linux/helpers/paths.js';
import { skipReason } from '../linux/helpers/skip.js';
import { newTestVm, SYSTEM_READ, type TestVm } from '../linux/helpers/vm.js';
// @ts-expect-error plain JavaScript module without types
import { QEMU, VIRTIOFSD, makeVmConfig } from '../../examples/vm/make-config.mjs';

const skip = skipReason() ?? s6Unavailable();
if (skip) console.warn(`test/s6 skipped: ${skip}`);

const NAME = 'vm';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Fixture {
  vm: TestVm;
  scan: Scan;
  configFile: string;
  bound: number;
  /** Every line s6-log wrote so far (manager JSON records and services' plain text). */
  log(): string[];
  records(): Record<string, unknown>[];
}

interface Options {
  vmmArgs?: string[];
  vmmArgv?: string[];
  timeouts?: { stopMs: number; killMs: number };
  rawConfig?: string;
  /** The whole config, made for the test VM (instead of the fake vmm's). */
  makeConfig?: (vm: TestVm) => object;
  /** Write the service directory with `vmsandbox s6-service` (the operator's generator). */
  generated?: boolean;
}

let fx: Fixture | null = null;

/** The config of a test VM: a sleeper, and the fake vmm stopped and probed over QMP. */
function writeConfig(vm: TestVm, opts: Options): { file: string; bound: number } {
  chmodSync(vm.storage, 0o755);
  copyFileSync(join(repoRoot, 'examples', 'fake-vmm.mjs'), join(vm.storage, 'fake-vmm.mjs'));
  const qmp = `${vm.runtimeDir}/vmm/qmp.sock`;
  const raw = {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts: { setupMs: 10_000, ...(opts.timeouts ?? { stopMs: 3000, killMs: 2000 }) },
    cgroup: { parent: CGROUP_PARENT },
    landlock: { minAbi: 1 },
    services: [
      { name: 'helper', argv: ['/bin/sleep', '1000'], uid: 62001, gid: 62001, landlock: { read: SYSTEM_READ, write: [] } },
      {
        name: 'vmm',
        vmm: true,
        argv: opts.vmmArgv ?? [process.execPath, `${vm.storage}/fake-vmm.mjs`, '--qmp', qmp, '--boot-ms', '100', ...(opts.vmmArgs ?? [])],
        env: { PATH: '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' },
        uid: 62002,
        gid: 62002,
        storage: 'ro',
        landlock: { read: [...SYSTEM_READ, vm.storage], write: [] },
        stop: { qmp },
        ready: { qmp },
      },
    ],
  };
  const file = join(vm.scratch, 'vm.json');
  const made = opts.makeConfig?.(vm);
  writeFileSync(file, opts.rawConfig ?? JSON.stringify(made ?? raw));
  return { file, bound: stopBoundMs(parseConfig(made ?? raw)) };
}

async function setup(opts: Options = {}): Promise<Fixture> {
  const vm = newTestVm();
  const { file, bound } = writeConfig(vm, opts);
  const scan = new Scan(join(mkdtempSync('/tmp/vmsandbox-s6-'), 'scan'));
  const svc = scan.service(NAME);
  if (opts.generated) {
    const gen = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['s6-service', file, svc, '--down'], { encoding: 'utf8' });
    expect(gen.status, gen.stderr).toBe(0);
  } else {
    writeServiceDir(svc, file, null, { down: true });
    writeFileSync(join(svc, 'timeout-kill'), `${bound + 2000}\n`);
  }
  scan.start();
  const logFile = join(svc, 'log', 'main', 'current');
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : []);
  const records = () =>
    log().flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  fx = { vm, scan, configFile: file, bound, log, records };
  await scan.supervised(NAME);
  await scan.supervised(join(NAME, 'log'));
  return fx;
}

/** Wait until `pred` holds (polling), or fail with the log. */
async function until(f: Fixture, what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await pred()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms; log:\n${f.log().join('\n')}\ns6-svscan: ${f.scan.errors}`);
    await sleep(10);
  }
}

function vmCgroup(vm: TestVm): string {
  return join(cgroupParentDir(), vm.name);
}

function procsOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Remember the running sandbox's PID namespace, so leftovers() looks for its processes. */
function track(vm: TestVm): number {
  const init = procsOf(join(vmCgroup(vm), 'init'))[0];
  expect(init, 'the sandbox init is in its cgroup leaf').toBeDefined();
  trackNamespace(vm, init!);
  return init!;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * leftovers(), after giving exited processes a moment to be reaped; each leftover process is
 * described (state, parent) so a zombie that only waits for its reaper is told from a live one.
 */
async function settled(vm: TestVm, timeoutMs = 2000): Promise<string[]> {
  const start = Date.now();
  let left = leftovers(vm);
  while (left.length && Date.now() - start < timeoutMs) {
    await sleep(20);
    left = leftovers(vm);
  }
  return left.map((l) =>
    l.startsWith('processes of the VM: ')
      ? `${l} (${l.slice(21).split(' ').map((p) => { try { const st = readFileSync(`/proc/${p}/stat`, 'utf8'); return st.slice(0, st.indexOf(')') + 1) + st.slice(st.indexOf(')') + 1).split(' ').slice(1, 3).join(' ppid '); } catch { return `${p} gone`; } }).join(', ')})`
      : l,
  );
}

/** Stop the fixture's s6 tree and remove everything of its VM. */
async function dropFixture(): Promise<void> {
  const f = fx;
  fx = null;
  if (!f) return;
  await f.scan.stop();
  forceCleanup(f.vm);
  rmSync(failuresPath(f.vm.name), { force: true });
  rmSync(join(f.scan.dir, '..'), { recursive: true, force: true });
}

/** `s6-svc -d`, then `s6-svwait -D` (run and finish done); returns the ms in between. */
async function stopAndWaitDown(f: Fixture): Promise<number> {
  const t = Date.now();
  await f.scan.svc(NAME, '-d');
  expect(await f.scan.svwait(NAME, '-D', f.bound + 3000)).toBe(true);
  return Date.now() - t;
}

async function startReady(f: Fixture): Promise<number> {
  const t = Date.now();
  await f.scan.svc(NAME, '-u');
  expect(await f.scan.svwait(NAME, '-U', 15_000), `not ready; log:\n${f.log().join('\n')}`).toBe(true);
  return Date.now() - t;
}

describe.skipIf(skip)('vmsandbox under s6', () => {
  beforeAll(() => ensureNative());
  afterEach(dropFixture);
  afterAll(() => removeTestParents());

  it('s6-svwait -U returns once the vmm answers QMP; s6-svc -d stops it gracefully; nothing left', async () => {
    const f = await setup();
    const readyMs = await startReady(f);
    const st = await f.scan.svstat(NAME);
    expect(st).toMatchObject({ up: true, ready: true });
    const ready = f.records().filter((r) => r.event === 'ready');
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ notified: true, condition: expect.stringContaining('QMP greeting') });
    // Where its start went: each step reached in order, from the manager's code loaded to ready.
    const startup = ready[0]!.startup as Record<string, number>;
    expect(Object.keys(startup)).toEqual(expect.arrayContaining(['main', 'config', 'preflight', 'lock', 'machine', 'setup.setupNamespaces', 'setup.launch', 'ready']));
    const at = Object.values(startup);
    expect(at.every((t, i) => i === 0 || t >= at[i - 1]!)).toBe(true);
    expect(startup.ready! - startup.main!).toBeGreaterThanOrEqual(Number(ready[0]!.ms) - 1); // ms: since the config was read (Date.now())
    track(f.vm);

    const downMs = await stopAndWaitDown(f);
    console.log(`s6: ready ${readyMs} ms after s6-svc -u (manager: ${String(ready[0]!.ms)} ms after its start); s6-svc -d → down+finished ${downMs} ms`);
    expect(downMs).toBeLessThan(f.bound);
    expect(f.log().some((l) => l.includes('system_powerdown received: guest shutting down'))).toBe(true);
    const states = f.records().map((r) => r.state).filter(Boolean);
    expect(states).toContain('gracefulStop.vmm.requesting');
    expect(f.records().find((r) => 'exitCode' in r && 'outcome' in r && r.event === undefined)).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(f.records().find((r) => r.event === 'finish')).toMatchObject({ runExitCode: 0, exitCode: 0, removed: [] });
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 0, wantedup: false });
    expect(await settled(f.vm)).toEqual([]);
  });

  it('the directory vmsandbox s6-service writes runs the VM: ready, stopped gracefully, nothing left', async () => {
    const f = await setup({ generated: true, timeouts: { stopMs: 4000, killMs: 1500 } });
    const svc = join(f.scan.dir, NAME);
    // timeout-kill from the config: stopMs + killMs + cleanup (2000), plus 2000 for Node to start.
    expect(readFileSync(join(svc, 'timeout-kill'), 'utf8')).toBe(`${4000 + 1500 + 2000 + 2000}\n`);
    expect(readFileSync(join(svc, 'notification-fd'), 'utf8').trim()).toBe('3');
    // The manager by absolute path: s6-svscan's PATH need not hold it.
    expect(readFileSync(join(svc, 'run'), 'utf8')).toContain(`exec ${join(repoRoot, 'bin', 'vmsandbox')} run --notify-fd 3 --supervisor-pid "$PPID" ./config.json`);
    expect(readFileSync(join(svc, 'finish'), 'utf8')).toContain(`${join(repoRoot, 'bin', 'vmsandbox')} finish ./config.json $@`);
    await startReady(f);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: true, ready: true });
    track(f.vm);
    await stopAndWaitDown(f);
    expect(f.records().find((r) => r.event === 'finish')).toMatchObject({ runExitCode: 0, exitCode: 0 });
    expect(await settled(f.vm)).toEqual([]);
    // A second generation into the same (now non-empty) directory refuses rather than overwrite a live service's files.
    const again = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['s6-service', f.configFile, svc], { encoding: 'utf8' });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/exists and is not empty/);
  });

  it('a vmm that ignores the stop request is forced at stopMs: exit 2, nothing left', async () => {
    const f = await setup({ vmmArgs: ['--ignore-powerdown'], timeouts: { stopMs: 500, killMs: 2000 } });
    await startReady(f);
    track(f.vm);
    const downMs = await stopAndWaitDown(f);
    console.log(`s6: forced stop (stopMs 500) → down+finished ${downMs} ms`);
    expect(downMs).toBeLessThan(f.bound);
    expect(f.log().some((l) => l.includes('system_powerdown received: ignored'))).toBe(true);
    expect(f.records().some((r) => r.reason === 'graceful stop did not finish within 500 ms')).toBe(true);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 2 });
    expect(await settled(f.vm)).toEqual([]);
  });

  it('s6-svc -d right after s6-svwait -U, the guest still booting (fake-vmm --arm-ms): the request is repeated until it takes: exit 0', async () => {
    const f = await setup({ vmmArgs: ['--arm-ms', '2500'], timeouts: { stopMs: 10_000, killMs: 2000 } });
    await startReady(f);
    track(f.vm);
    const downMs = await stopAndWaitDown(f);
    const exit = f.records().find((r) => 'exitCode' in r && 'outcome' in r && r.event === undefined);
    console.log(`s6: guest arming 2.5 s after its start, s6-svc -d at ready → down+finished ${downMs} ms, ${String(exit?.stopRequests)} stop requests`);
    expect(exit, f.log().join('\n')).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(exit!.stopRequests as number).toBeGreaterThan(1);
    expect(f.log().some((l) => /system_powerdown #1 received .*: dropped/.test(l))).toBe(true);
    expect(downMs).toBeLessThan(2500 + 1000 + 5000);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 0 });
    expect(await settled(f.vm)).toEqual([]);
  });

  const realVm = existsSync(QEMU) && existsSync(VIRTIOFSD);
  it.skipIf(!realVm)('the real guest (QEMU + virtiofsd), s6-svc -d the moment it is ready, while it boots: it powers itself off, exit 0', async () => {
    const built = spawnSync('sh', [join(repoRoot, 'guest', 'build.sh')], { encoding: 'utf8', timeout: 300_000 });
    const guest = built.stdout.trim().split('\n').at(-1) ?? '';
    if (built.status !== 0 || !existsSync(join(guest, 'vmlinux'))) {
      console.warn(`s6: real guest skipped: guest/build.sh failed: ${(built.stderr || '').trim().split('\n').slice(-2).join(' | ')}`);
      return;
    }
    const f = await setup({
      makeConfig: (vm) => {
        const raw = makeVmConfig({ name: vm.name, storage: vm.storage, runtimeDir: vm.runtimeDir, guest, cgroupParent: CGROUP_PARENT, stopMs: 20_000 });
        for (const s of raw.services) if (s.vmm) s.ready = { qmp: s.stop.qmp };
        return raw;
      },
    });
    await startReady(f);
    track(f.vm);
    const booted = existsSync(join(f.vm.storage, 'guest-booted'));
    const downMs = await stopAndWaitDown(f);
    const exit = f.records().find((r) => 'exitCode' in r && 'outcome' in r && r.event === undefined);
    console.log(`s6: real guest, s6-svc -d at ready (booted: ${booted}) → down+finished ${downMs} ms, ${String(exit?.stopRequests)} stop requests`);
    expect(exit, f.log().join('\n')).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(booted).toBe(false);
    expect(exit!.stopRequests as number).toBeGreaterThan(1);
    expect(readFileSync(join(f.vm.storage, 'guest-powerdown'), 'utf8')).toMatch(/^powerdown /);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 0 });
    expect(await settled(f.vm)).toEqual([]);
  });

  it('s6-svc -i (SIGINT) forces the stop at once, even as the first signal: exit 2 long before stopMs', async () => {
    const f = await setup({ vmmArgs: ['--ignore-powerdown'], timeouts: { stopMs: 30_000, killMs: 2000 } });
    await startReady(f);
    track(f.vm);
    const t = Date.now();
    await f.scan.svc(NAME, '-O'); // once: s6 would restart it after the forced stop otherwise
    await f.scan.svc(NAME, '-i');
    expect(await f.scan.svwait(NAME, '-D', 10_000)).toBe(true);
    const ms = Date.now() - t;
    console.log(`s6: s6-svc -i → forced, down+finished ${ms} ms`);
    expect(ms).toBeLessThan(5000);
    expect(f.records().some((r) => r.msg === 'received STOP_REQUESTED (SIGINT, forced)')).toBe(true);
    expect(f.records().map((r) => r.state)).not.toContain('gracefulStop.vmm.requesting');
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 2 });
    expect(await settled(f.vm)).toEqual([]);
  });

  it('the vmm crashes: the manager exits 4, s6 restarts the sandbox and it becomes ready again', async () => {
    const f = await setup();
    await startReady(f);
    track(f.vm);
    const first = (await f.scan.svstat(NAME)).pid;
    const vmmPid = procsOf(join(vmCgroup(f.vm), 'svc-vmm'))[0];
    expect(vmmPid).toBeDefined();
    process.kill(vmmPid!, 'SIGKILL');
    const ms = await until(f, 'ready again', async () => {
      const st = await f.scan.svstat(NAME);
      return st.up && st.ready && st.pid !== first;
    }, 15_000);
    console.log(`s6: vmm SIGKILLed → restarted and ready again after ${ms} ms`);
    track(f.vm);
    expect(f.records().find((r) => r.outcome === 'serviceCrashed' && 'exitCode' in r)).toMatchObject({ exitCode: 4 });
    expect(f.records().find((r) => r.event === 'finish')).toMatchObject({ runExitCode: 4, exitCode: 0 });
    expect(f.records().filter((r) => r.event === 'ready')).toHaveLength(2);
    await f.scan.svc(NAME, '-d');
    expect(await f.scan.svwait(NAME, '-D', f.bound + 3000)).toBe(true);
    expect(await settled(f.vm)).toEqual([]);
  });

  it('kill -9 of s6-supervise: the whole sandbox is gone within a second (exit 6)', async () => {
    const f = await setup();
    await startReady(f);
    const init = track(f.vm);
    const manager = (await f.scan.svstat(NAME)).pid!;
    const supervise = Number(readFileSync(`/proc/${manager}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
    expect(readFileSync(`/proc/${supervise}/comm`, 'utf8').trim()).toBe('s6-supervise');
    const services = procsOf(join(vmCgroup(f.vm), 'svc-vmm')).concat(procsOf(join(vmCgroup(f.vm), 'svc-helper')));
    expect(services.length).toBeGreaterThanOrEqual(2);
    const t = Date.now();
    process.kill(supervise, 'SIGKILL');
    const goneMs = await until(f, 'sandbox gone', () => ![init, ...services].some(alive), 1000);
    const managerMs = await until(f, 'manager gone', () => !alive(manager), 5000);
    console.log(`s6: s6-supervise SIGKILLed → init and services gone in ${goneMs} ms, manager exited after ${Date.now() - t} ms (${managerMs} ms more)`);
    await until(f, 'manager logged exit 6', () => f.records().some((r) => r.outcome === 'parentDied' && r.exitCode === 6), 3000);
    expect(await settled(f.vm)).toEqual([]);
  });

  it('kill -9 of the manager: the finish script removes what it left, nothing remains', async () => {
    const f = await setup();
    await startReady(f);
    track(f.vm);
    const manager = (await f.scan.svstat(NAME)).pid!;
    await f.scan.svc(NAME, '-O'); // once: do not restart after this death
    const t = Date.now();
    process.kill(manager, 'SIGKILL');
    expect(await f.scan.svwait(NAME, '-D', 10_000)).toBe(true);
    const ms = Date.now() - t;
    const finish = f.records().find((r) => r.event === 'finish');
    console.log(`s6: manager SIGKILLed → finish done after ${ms} ms (finish itself ${String(finish?.ms)} ms): removed ${JSON.stringify(finish?.removed)}`);
    expect(finish).toMatchObject({ runSignal: 'SIGKILL', exitCode: 0 });
    expect((finish!.removed as string[]).some((r) => r.startsWith('cgroup '))).toBe(true);
    expect(finish!.removed).toContain(`runtime dir ${f.vm.runtimeDir}`);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, signal: 'SIGKILL' });
    expect(await settled(f.vm)).toEqual([]);
  });

  it('an invalid config: exit 100 with the problem in the log, finish says 125, s6 does not restart it', async () => {
    const f = await setup({ rawConfig: '{"name": "broken", "services": []}' });
    await f.scan.svc(NAME, '-u');
    await until(f, 'finish 125', () => f.records().some((r) => r.event === undefined && r.exitCode === 125), 10_000);
    await sleep(1500);
    const st = await f.scan.svstat(NAME);
    expect(st).toMatchObject({ up: false, exitcode: 100 });
    expect(st.updownfor).toBeGreaterThanOrEqual(1);
    const errors = f.records().filter((r) => r.exitCode === 100);
    expect(errors).toHaveLength(1);
    expect(String(errors[0]!.msg)).toMatch(/config invalid .*storage/);
    expect(await settled(f.vm)).toEqual([]);
  });

  it('a missing vmm binary: exit 111 naming it in the log (refused before setup), three tries, then finish says 125: no restart loop', async () => {
    const f = await setup({ vmmArgv: ['/nonexistent/vmm'] });
    await f.scan.svc(NAME, '-u');
    await until(f, 'finish 125', () => f.records().some((r) => r.event === 'finish' && r.exitCode === 125), 15_000);
    await sleep(1500);
    const st = await f.scan.svstat(NAME);
    expect(st).toMatchObject({ up: false, exitcode: 111 });
    expect(st.updownfor).toBeGreaterThanOrEqual(1);
    const exits = f.records().filter((r) => r.outcome === 'setupFailed' && 'exitCode' in r);
    expect(exits.map((r) => r.exitCode)).toEqual([111, 111, 111]);
    // Refused by run's preflight (the host check `vmsandbox check` makes), before anything exists.
    const refusals = f.records().filter((r) => Array.isArray(r.problems) && r.exitCode === 111);
    expect(refusals.map((r) => r.problems)).toEqual(Array(3).fill(['services[1].argv[0]: /nonexistent/vmm does not exist: install it or fix the path']));
    expect(f.records().filter((r) => r.event === 'finish').map((r) => r.exitCode)).toEqual([0, 0, 125]);
    expect(existsSync(failuresPath(f.vm.name))).toBe(false);
    expect(await settled(f.vm)).toEqual([]);
  });
});

describe.skipIf(skip)('vmsandbox under s6: crash loops and duplicate starts', () => {
  beforeAll(() => ensureNative());
  afterEach(dropFixture);
  afterAll(() => removeTestParents());

  it('a vmm that crashes at once on every start: exit 4 three times, then finish says 125 and s6 stops restarting it', async () => {
    const f = await setup({ vmmArgv: ['/bin/sh', '-c', 'echo "vmm: cannot open the kernel image" >&2; exit 1'] });
    const t = Date.now();
    await f.scan.svc(NAME, '-u');
    await until(f, 'finish 125', () => f.records().some((r) => r.event === 'finish' && r.exitCode === 125), 20_000);
    const loopMs = Date.now() - t;
    await sleep(2500);
    const finishes = f.records().filter((r) => r.event === 'finish');
    expect(finishes.map((r) => r.runExitCode)).toEqual([4, 4, 4]);
    expect(finishes.map((r) => r.exitCode)).toEqual([0, 0, 125]);
    expect(finishes.every((r) => typeof r.uptimeMs === 'number' && r.uptimeMs < 10_000)).toBe(true);
    expect(String(finishes[2]!.msg)).toMatch(/3 in a row \(exit codes 4, 4, 4\): a crash loop, not restarting/);
    expect(await f.scan.svstat(NAME)).toMatchObject({ up: false, exitcode: 4 });
    expect(existsSync(failuresPath(f.vm.name))).toBe(false);
    expect(await settled(f.vm)).toEqual([]);
    console.log(`s6: crash loop (vmm exits at once) stopped after 3 starts, ${loopMs} ms after s6-svc -u`);
  });

  it('a second start of a running VM (a manager started by hand) exits 101, changes nothing, and is not retried forever', async () => {
    const f = await setup();
    // The VM is owned by a manager outside s6.
    const byHand = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', f.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    byHand.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => byHand.on('exit', (c) => r(c)));
    for (const start = Date.now(); !/"event":"ready"/.test(out); await sleep(20)) {
      if (Date.now() - start > 15_000) throw new Error(`the manager started by hand is not ready:\n${out}`);
    }
    const vmmPid = (JSON.parse(out.split('\n').find((l) => l.includes('"state":"running"'))!) as { services: { vmm: number } }).services.vmm;
    await f.scan.svc(NAME, '-u');
    await until(f, 'finish 125', () => f.records().some((r) => r.event === 'finish' && r.exitCode === 125), 20_000);
    const refusals = f.records().filter((r) => r.exitCode === 101 && r.owner);
    expect(refusals).toHaveLength(3);
    expect(String(refusals[0]!.msg)).toContain(`is already running (manager pid ${byHand.pid}`);
    expect(f.records().filter((r) => r.event === 'finish').map((r) => r.exitCode)).toEqual([1, 1, 125]);
    // The VM of the manager started by hand is untouched and stops cleanly.
    expect(alive(vmmPid)).toBe(true);
    byHand.kill('SIGTERM');
    expect(await exited, out).toBe(0);
    expect(await settled(f.vm)).toEqual([]);
  });
});

describe.skipIf(skip)('vmsandbox run --supervisor-pid', () => {
  let vm: TestVm | null = null;
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => removeTestParents());

  function startManager(file: string, supervisor: number) {
    const child = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', file, '--supervisor-pid', String(supervisor)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { child, exited, out: () => out };
  }

  it('the given supervisor exiting (its pidfd readable) tears the sandbox down: exit 6 within a second', async () => {
    vm = newTestVm();
    const { file } = writeConfig(vm, {});
    const supervisor = spawn('sleep', ['1000'], { stdio: 'ignore' });
    const m = startManager(file, supervisor.pid!);
    for (const start = Date.now(); !m.out().includes('"event":"ready"'); await sleep(20)) {
      if (Date.now() - start > 15_000) throw new Error(`not ready: ${m.out()}`);
    }
    expect(m.out()).toContain(`"supervisor":{"pid":${supervisor.pid},"comm":"sleep","source":"argument"}`);
    track(vm);
    const t = Date.now();
    supervisor.kill('SIGKILL');
    expect(await m.exited).toBe(6);
    const ms = Date.now() - t;
    console.log(`--supervisor-pid: supervisor SIGKILLed → manager exited 6 after ${ms} ms`);
    expect(ms).toBeLessThan(1000);
    expect(m.out()).toContain('supervisor (pid');
    expect(await settled(vm)).toEqual([]);
  });

  it('a pid that started after the manager cannot be its supervisor: exit 100, nothing built', async () => {
    vm = newTestVm();
    const { file } = writeConfig(vm, {});
    // sh forks the "supervisor" 50 ms after it started, then execs into the manager: the manager's
    // process is older than the pid it is given.
    const script = `sleep 0.05; sleep 1000 >/dev/null 2>&1 & echo "later=$!"; exec "$0" run "$1" --supervisor-pid $!`;
    const r = spawnSync('sh', ['-c', script, join(repoRoot, 'bin', 'vmsandbox'), file], { encoding: 'utf8', timeout: 20_000 });
    const later = Number(/later=(\d+)/.exec(r.stdout)?.[1]);
    try {
      expect(r.status, r.stdout + r.stderr).toBe(100);
      expect(r.stdout).toMatch(/--supervisor-pid \d+ \(sleep\) started after this manager: it cannot be its supervisor/);
      expect(r.stdout).not.toContain('setup.setupNamespaces');
    } finally {
      if (later) process.kill(later, 'SIGKILL');
    }
  });
});

describe.skipIf(skip)('vmsandbox demo (README main job)', () => {
  function demo(args: string[]) {
    const r = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['demo', ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/s6-svwait -U returned after \d+ ms/);
    expect(r.stdout).toMatch(/s6-svwait -D returned .* exitcode=0/);
    expect(r.stdout).toContain('Demo done.');
    // Its s6-svscan is gone, and so is its scan directory.
    const [, scanDir, pid] = /s6-svscan (\S+) \(pid (\d+)\)/.exec(r.stdout) ?? [];
    expect(scanDir).toBeDefined();
    expect(alive(Number(pid))).toBe(false);
    expect(existsSync(scanDir!)).toBe(false);
    return r.stdout;
  }

  it('with --stand-in: the QMP stand-in vmm, ready, graceful s6-svc -d, exit 0, nothing left', () => {
    const out = demo(['--stand-in']);
    expect(out).toContain('QEMU stand-in');
    expect(out).toContain('system_powerdown received');
  });

  const qemu = existsSync('/usr/bin/qemu-system-x86_64') && existsSync('/usr/lib/qemu/virtiofsd');
  it('as the README runs it: the real guest under QEMU when installed (else the stand-in), booted and powered off', () => {
    const out = demo([]);
    if (!qemu) {
      console.warn('demo: QEMU not installed, the stand-in ran');
      expect(out).toContain('QEMU stand-in');
      return;
    }
    expect(out).toContain('vmm: QEMU (/usr/bin/qemu-system-x86_64) booting the guest');
    expect(out).toMatch(/the guest booted: \S+guest-booted says "booted/);
    expect(out).toMatch(/the guest powered off by itself: \S+guest-powerdown says "powerdown/);
  });
});
