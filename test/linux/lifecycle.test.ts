// Real-kernel lifecycle tests: the real machine (bindEffects) driven by the Linux backend.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLinuxBackend } from '../../effects/linux/backend.js';
import { memoryJournal } from '../../effects/owner.js';
import { INIT_LEAF, listProcs, serviceLeaf } from '../../effects/linux/cgroup.js';
import { CLONE_NS, nativeBuildDir } from '../../effects/linux/native.js';
import { start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, pidsInOtherNamespaces, removeTestParents, trackNamespace } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { cgroupParentDir, repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/lifecycle skipped: ${skip}`);

function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(st);
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return cond();
}

describe('linux backend: lifecycle', () => {
  let vm: TestVm | null = null;
  beforeAll(() => {
    if (!skip) ensureNative();
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => {
    if (!skip) removeTestParents();
  });

  it.skipIf(skip)('reaches running with every process in its cgroup leaf, stops on STOP_REQUESTED, leaves nothing', async () => {
    vm = newTestVm();
    const helper = service({ name: 'helper', argv: ['/bin/sleep', '1000'] });
    const config = vmConfig(vm, [helper, SLEEPER]);
    const t0 = performance.now();
    const run = start(config, vm);
    await run.waitFor('running');
    const setupMs = performance.now() - t0;
    const dir = run.backend.state.cgroupDir;
    expect(dir).toBe(join(cgroupParentDir(), vm.name));
    const initPid = run.backend.state.initPid!;
    expect(await listProcs(join(dir, INIT_LEAF))).toEqual([initPid]);
    for (const name of ['helper', 'vmm']) {
      const s = run.backend.state.services.get(name)!;
      expect(s.hostPid).not.toBeNull();
      expect(await listProcs(join(dir, serviceLeaf(name)))).toEqual([s.hostPid]);
      // The service runs in the VM's PID namespace, as a child of the init.
      const status = readFileSync(`/proc/${s.hostPid}/status`, 'utf8');
      expect(/^PPid:\s+(\d+)/m.exec(status)?.[1]).toBe(String(initPid));
      expect(/^NSpid:\s+\d+\s+(\d+)/m.exec(status)?.[1]).toBe(String(s.nsPid));
    }
    expect(existsSync(join(vm.runtimeDir, 'vmm'))).toBe(true);
    const t1 = performance.now();
    const out = await stop(run);
    const stopMs = performance.now() - t1;
    console.log(`[measure] setup to running ${setupMs.toFixed(1)} ms, stop to stopped ${stopMs.toFixed(1)} ms`);
    expect(out).toMatchObject({ outcome: 'stopped', exitCode: 0, teardownFailed: false });
    expect(run.events).toContainEqual(expect.objectContaining({ type: 'SERVICE_EXITED', service: 'vmm', signal: 'SIGTERM' }));
    expect(alive(initPid)).toBe(false);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('stops the vmm over QMP (qmp_capabilities, system_powerdown)', async () => {
    vm = newTestVm();
    const sock = `${vm.runtimeDir}/vmm/qmp.sock`;
    const fakeQemu = `
      const net = require('net');
      const got = [];
      net.createServer((c) => {
        c.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\\n');
        let b = '';
        c.on('data', (d) => {
          b += d;
          let i;
          while ((i = b.indexOf('\\n')) >= 0) {
            const m = JSON.parse(b.slice(0, i));
            b = b.slice(i + 1);
            got.push(m.execute);
            c.write(JSON.stringify({ return: {} }) + '\\n');
            if (m.execute === 'system_powerdown') setTimeout(() => process.exit(got.join(',') === 'qmp_capabilities,system_powerdown' ? 0 : 9), 10);
          }
        });
      }).listen(process.argv[1], () => require('fs').writeFileSync(process.argv[1] + '.ready', ''));`;
    const vmm = service({
      name: 'vmm',
      vmm: true,
      argv: ['/usr/bin/node', '-e', fakeQemu, sock],
      landlock: { read: [...SYSTEM_READ, '/proc', '/sys'], write: [] },
      stop: { qmp: sock },
    });
    const run = start(vmConfig(vm, [vmm]), vm);
    await run.waitFor('running');
    expect(await until(() => existsSync(`${sock}.ready`), 5000)).toBe(true);
    const out = await stop(run);
    expect({ ...out, events: run.events }).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(run.events).toContainEqual(expect.objectContaining({ type: 'SERVICE_EXITED', service: 'vmm', code: 0 }));
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a vmm that ignores its stop signal is killed after stopMs (outcome forced)', async () => {
    vm = newTestVm();
    const ready = `${vm.runtimeDir}/vmm/ready`;
    const vmm = service({ name: 'vmm', vmm: true, argv: ['/bin/sh', '-c', `trap "" TERM; : > ${ready}; while :; do sleep 1; done`] });
    const run = start(vmConfig(vm, [vmm], { timeouts: { setupMs: 10_000, stopMs: 300, killMs: 3000 } }), vm);
    await run.waitFor('running');
    expect(await until(() => existsSync(ready), 5000)).toBe(true);
    const out = await stop(run);
    expect(out).toMatchObject({ outcome: 'forced', exitCode: 2, teardownFailed: false });
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a vmm that exits 0 by itself ends the run as poweredOff', async () => {
    vm = newTestVm();
    const vmm = service({ name: 'vmm', vmm: true, argv: ['/bin/sh', '-c', 'sleep 0.2; exit 0'] });
    const run = start(vmConfig(vm, [service({ name: 'helper', argv: ['/bin/sleep', '1000'] }), vmm]), vm);
    const out = await run.done;
    expect(out).toMatchObject({ outcome: 'poweredOff', exitCode: 3 });
    expect(run.events).toContainEqual(expect.objectContaining({ type: 'SERVICE_EXITED', service: 'helper', signal: 'SIGTERM' }));
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('SIGKILL of the init kills every service (outcome initDied) and teardown still completes', async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [service({ name: 'helper', argv: ['/bin/sleep', '1000'] }), SLEEPER]), vm);
    await run.waitFor('running');
    const pids = ['helper', 'vmm'].map((n) => run.backend.state.services.get(n)!.hostPid!);
    expect(pids.every(alive)).toBe(true);
    const t0 = performance.now();
    process.kill(run.backend.state.initPid!, 'SIGKILL');
    const out = await run.done;
    console.log(`[measure] init SIGKILL to stopped machine ${(performance.now() - t0).toFixed(1)} ms`);
    expect(out).toMatchObject({ outcome: 'initDied', exitCode: 5 });
    expect(pids.some(alive)).toBe(false);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('the init reaps orphans: a re-parented grandchild leaves no zombie', async () => {
    vm = newTestVm();
    const parent = service({ name: 'parent', argv: ['/bin/sh', '-c', '/bin/sh -c "/bin/sleep 0.4 &"; exec /bin/sleep 1000'] });
    const run = start(vmConfig(vm, [parent, SLEEPER]), vm);
    await run.waitFor('running');
    const initPid = run.backend.state.initPid!;
    const services = new Set([...run.backend.state.services.values()].map((s) => s.hostPid));
    const childrenOfInit = () =>
      pidsInOtherNamespaces().filter((p) => {
        try {
          return /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] === String(initPid) && !services.has(p);
        } catch {
          return false;
        }
      });
    // The orphan sleep was re-parented to the init...
    expect(await until(() => childrenOfInit().length === 1, 2000)).toBe(true);
    const orphan = childrenOfInit()[0]!;
    // ...and once it exits the init reaps it: it does not linger as a zombie.
    expect(await until(() => !existsSync(`/proc/${orphan}`), 3000)).toBe(true);
    const out = await stop(run);
    expect(out.outcome).toBe('stopped');
    expect(run.events.filter((e) => e.type === 'SERVICE_EXITED' && e.service === 'parent')).toHaveLength(1);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a service that exits during running ends the VM (serviceCrashed) unless onExit is ignore', async () => {
    vm = newTestVm();
    const ignored = service({ name: 'oneshot', argv: ['/bin/true'], onExit: 'ignore' });
    const crasher = service({ name: 'crasher', argv: ['/bin/sh', '-c', 'sleep 0.3; exit 7'], onExit: 'stop' });
    const run = start(vmConfig(vm, [ignored, crasher, SLEEPER]), vm);
    await run.waitFor('running');
    const out = await run.done;
    expect(out).toMatchObject({ outcome: 'serviceCrashed', exitCode: 4 });
    expect(out.errors.join('\n')).toMatch(/crasher.*exit code 7/);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a service that cannot be executed fails setup with the errno from the init', async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [service({ name: 'vmm', vmm: true, argv: ['/nonexistent/vmm'] })]), vm);
    const out = await run.done;
    expect(out.outcome).toBe('setupFailed');
    // The init reports only `err <id> ENOENT execve`; the message names the path and its field.
    expect(out.errors.join('\n')).toContain(
      'launch vmm: /nonexistent/vmm (services[0].argv[0]): ENOENT (no such file or directory) at execve: ',
    );
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a storage directory that does not exist fails the mount step naming storage and its path (kept in the VM\'s view)', async () => {
    vm = newTestVm();
    const storage = join(vm.scratch, 'no-such-storage');
    const run = start(vmConfig(vm, [service({ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], storage: 'rw' })], { storage }), vm);
    const out = await run.done;
    expect(out.outcome).toBe('setupFailed');
    expect(out.errors[0]).toBe(
      `mount failed: mount: storage ${storage}, kept in the VM's view (storage): ENOENT (no such file or directory) at open_tree: ` +
        `the directory does not exist: create it (mkdir -p ${storage}) (request: clone ${storage} 1)`,
    );
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('Landlock below minAbi fails setup unless allowDegraded', async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [SLEEPER], { landlock: { minAbi: 99, allowDegraded: false } }), vm);
    const out = await run.done;
    expect(out.outcome).toBe('setupFailed');
    // Refused by the plan before anything was created, with check's words (plan/landlock.ts).
    expect(run.run.refused).not.toBeNull();
    expect(out.errors.join('\n')).toMatch(/^landlock\.minAbi: the kernel offers Landlock ABI \d+, the config needs 99.*allowDegraded/);
    expect(leftovers(vm)).toEqual([]);
    forceCleanup(vm);

    vm = newTestVm();
    const run2 = start(vmConfig(vm, [SLEEPER], { landlock: { minAbi: 99, allowDegraded: true } }), vm);
    await run2.waitFor('running');
    const report = run2.actor.getSnapshot().context.landlock!;
    expect(report.abi).toBeGreaterThan(0);
    expect(Array.isArray(report.degraded)).toBe(true);
    expect((await stop(run2)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a limit whose controller cgroup v2 lacks fails setup naming the limit, unless limitsOptional', async () => {
    vm = newTestVm();
    const root = join(cgroupParentDir(), '..');
    const hasMemory = readFileSync(join(root, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory');
    const limits = { 'memory.max': '256M' };
    const run = start(vmConfig(vm, [SLEEPER], { cgroup: { parent: 'vmsandbox-test', limits, limitsOptional: false } }), vm);
    if (hasMemory) {
      console.warn('memory controller available in cgroup v2: checking the limit is written');
      await run.waitFor('running');
      expect(readFileSync(join(run.backend.state.cgroupDir, 'memory.max'), 'utf8').trim()).toBe(String(256 * 1024 * 1024));
      await stop(run);
    } else {
      const out = await run.done;
      expect(out.outcome).toBe('setupFailed');
      expect(run.run.refused).not.toBeNull();
      expect(out.errors.join('\n')).toMatch(/^cgroup\.limits\["memory\.max"\]: the memory controller is not available.*limitsOptional/);
    }
    expect(leftovers(vm)).toEqual([]);
    forceCleanup(vm);

    vm = newTestVm();
    const run2 = start(vmConfig(vm, [SLEEPER], { cgroup: { parent: 'vmsandbox-test', limits, limitsOptional: true } }), vm);
    await run2.waitFor('running');
    expect((await stop(run2)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('a stop request during setup aborts it and still leaves nothing', async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [service({ name: 'a', argv: ['/bin/sleep', '1000'] }), service({ name: 'b', argv: ['/bin/sleep', '1000'] }), SLEEPER]), vm);
    await run.waitFor({ setup: 'mount' } as never as string);
    run.actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
    const out = await run.done;
    expect(out.outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('the runner turns the manager\'s SIGTERM into a stop request, a second one forces it, and it lets go of its handlers', async () => {
    vm = newTestVm();
    // A vmm that ignores its stop signal: only the second SIGTERM (forced) ends the run before stopMs.
    const stubborn = service({ name: 'vmm', argv: ['/bin/sh', '-c', 'trap "" TERM; while :; do sleep 1; done'], vmm: true });
    const config = vmConfig(vm, [stubborn], { timeouts: { setupMs: 10_000, stopMs: 30_000, killMs: 2_000 } });
    const before = process.listenerCount('SIGTERM');
    const run = start(config, vm, { hooks: { processSignals: true } });
    await run.waitFor('running');
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    process.kill(process.pid, 'SIGTERM');
    await run.waitFor('gracefulStop');
    process.kill(process.pid, 'SIGTERM');
    const out = await run.done;
    expect(run.events.filter((e) => e.type === 'STOP_REQUESTED')).toEqual([
      { type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false },
      { type: 'STOP_REQUESTED', signal: 'SIGTERM', force: true },
    ]);
    expect(out.outcome).toBe('forced');
    expect(process.listenerCount('SIGTERM')).toBe(before);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skip)('when the manager is SIGKILLed the init and its services die, and a fresh backend on its journal cleans up (finish)', async () => {
    vm = newTestVm();
    const dir = join(cgroupParentDir(), vm.name);
    mkdirSync(join(dir, 'init'), { recursive: true });
    mkdirSync(join(dir, 'svc-vmm'), { recursive: true });
    // A stand-in manager: clones the init through the shim, has it spawn a service, then waits.
    const script = join(vm.scratch, 'manager.mjs');
    writeFileSync(
      script,
      `import { open, define, DataType } from ${JSON.stringify(join(repoRoot, 'node_modules/ffi-rs/index.js'))};
       import { writeSync, readSync } from 'node:fs';
       open({ library: 'vms', path: ${JSON.stringify(join(nativeBuildDir(), 'libvmsandbox.so'))} });
       const I64 = DataType.I64;
       const f = define({
         vms_socketpair: { library: 'vms', retType: I64, paramsType: [] },
         vms_open_dir_path: { library: 'vms', retType: I64, paramsType: [DataType.String] },
         vms_clone_init: { library: 'vms', retType: I64, paramsType: [DataType.String, I64, I64, I64, I64, I64] },
       });
       const sp = f.vms_socketpair([]);
       const a = Math.floor(sp / 2 ** 32), b = sp % 2 ** 32;
       const r = f.vms_clone_init([${JSON.stringify(join(nativeBuildDir(), 'vmsandbox-init'))}, b,
         f.vms_open_dir_path([${JSON.stringify(dir)}]), f.vms_open_dir_path([${JSON.stringify(join(dir, 'init'))}]),
         ${CLONE_NS.ipc | CLONE_NS.net}, 1]); // the default plan's namespaces: IPC + network, lo up
       if (r < 0) { console.error('clone failed', r); process.exit(1); }
       writeSync(a, 'spawn 1 name=vmm leaf=svc-vmm uid=62001 gid=62001 arg=/bin/sleep arg=1000\\n');
       const buf = Buffer.alloc(4096); let got = '';
       while (!/^ok 1/m.test(got)) { const n = readSync(a, buf); if (n <= 0) process.exit(2); got += buf.toString('latin1', 0, n); }
       console.log('READY ' + (r % 2 ** 32));
       setInterval(() => {}, 1000);`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const initPid = await new Promise<number>((resolve, reject) => {
      let outText = '';
      child.stdout.on('data', (d: Buffer) => {
        outText += d.toString();
        const m = /READY (\d+)/.exec(outText);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (c) => reject(new Error(`stand-in manager exited ${c}`)));
    });
    trackNamespace(vm, initPid);
    const vmmPids = await listProcs(join(dir, 'svc-vmm'));
    expect(vmmPids).toHaveLength(1);
    const t0 = performance.now();
    child.kill('SIGKILL');
    expect(await until(() => !alive(initPid) && !alive(vmmPids[0]!), 3000)).toBe(true);
    console.log(`[measure] manager SIGKILL to init + service dead ${(performance.now() - t0).toFixed(1)} ms`);
    // The dead init was re-parented to the host's reaper; wait until that reaped the zombie.
    expect(await until(() => !existsSync(`/proc/${initPid}`), 5000)).toBe(true);
    // `vmsandbox finish`: a fresh backend works from the journal the manager left (here, what the
    // stand-in created: the VM's cgroup), not from whatever happens to exist.
    const config = vmConfig(vm, [SLEEPER]);
    const fresh = createLinuxBackend(config, { journal: memoryJournal({ cgroup: dir, runtimeDir: null }) });
    const ac = new AbortController();
    await fresh.effects.killAll({}, ac.signal);
    await fresh.effects.cleanup({}, ac.signal);
    // Idempotent: a second round finds nothing and succeeds.
    await fresh.effects.killAll({}, ac.signal);
    await fresh.effects.cleanup({}, ac.signal);
    expect(leftovers(vm)).toEqual([]);
  });
});
