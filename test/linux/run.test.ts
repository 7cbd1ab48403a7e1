// `vmsandbox run CONFIG` as s6 would run it: the compiled command, a real sandbox, SIGTERM to stop.

import { existsSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ensureNative,
  forceCleanup,
  leftovers,
  newTestVm,
  removeTestParents,
  skipReason,
  spawnRun,
  writeRunConfig,
  type RunningManager,
  type TestVm,
} from './helpers.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/run skipped: ${skip}`);

function startManager(vm: TestVm, vmmArgv: string[], timeouts = { stopMs: 3000, killMs: 2000 }): RunningManager {
  return spawnRun(writeRunConfig(vm, vmmArgv, timeouts).file);
}

/** A vmm that ignores SIGTERM, and says so (a file in its runtime dir) once the trap is set. */
const stubborn = (vm: TestVm) => ['/bin/sh', '-c', `trap "" TERM; : > ${vm.runtimeDir}/vmm/armed; while :; do sleep 1; done`];

async function armed(vm: TestVm, timeoutMs = 15_000): Promise<void> {
  for (const start = Date.now(); Date.now() - start < timeoutMs; await new Promise((r) => setTimeout(r, 20))) {
    if (existsSync(`${vm.runtimeDir}/vmm/armed`)) return;
  }
  throw new Error('the stubborn vmm never armed its SIGTERM trap');
}

describe.skipIf(skip)('vmsandbox run', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('runs the services, stops gracefully on SIGTERM, logs every state with the VM name, exits 0', async () => {
    vm = newTestVm();
    const m = startManager(vm, ['/bin/sleep', '1000']);
    await m.waitForState('running');
    m.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(m.lines.every((l) => l.vm === vm.name)).toBe(true);
    const states = m.lines.filter((l) => l.state).map((l) => l.state).filter((s, i, a) => s !== a[i - 1]);
    expect(states).toEqual(['setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup', 'setup.launch', 'running', 'gracefulStop.vmm', 'gracefulStop.services', 'timeoutKill', 'cleanup', 'stopped']);
    expect(m.lines.at(-1)).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(leftovers(vm)).toEqual([]);
  });

  it('a vmm that ignores SIGTERM is forced after stopMs: exit 2, nothing left', async () => {
    vm = newTestVm();
    const m = startManager(vm, stubborn(vm), { stopMs: 500, killMs: 2000 });
    await m.waitForState('running');
    await armed(vm);
    m.kill('SIGTERM');
    const code = await m.exited;
    expect(code, m.lines.map((l) => JSON.stringify(l)).join('\n')).toBe(2);
    expect(m.lines.some((l) => l.reason === 'graceful stop did not finish within 500 ms')).toBe(true);
    expect(leftovers(vm)).toEqual([]);
  });

  it('SIGHUP is logged and ignored; a second SIGTERM forces the stop', async () => {
    vm = newTestVm();
    const m = startManager(vm, stubborn(vm), { stopMs: 30_000, killMs: 2000 });
    await m.waitForState('running');
    await armed(vm);
    m.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 200));
    expect(m.lines.some((l) => l.msg === 'SIGHUP ignored')).toBe(true);
    m.kill('SIGTERM');
    await m.waitForState('gracefulStop.vmm');
    m.kill('SIGTERM');
    expect(await m.exited).toBe(2);
    expect(leftovers(vm)).toEqual([]);
  });

  it('a vmm binary that does not exist: setup fails with the errno, exit 111, nothing left', async () => {
    vm = newTestVm();
    const m = startManager(vm, ['/nonexistent/vmm']);
    expect(await m.exited).toBe(111);
    const failure = m.lines.find((l) => l.level === 'error' && l.state);
    expect(String(failure?.reason)).toMatch(/launch failed: .*ENOENT/);
    expect(leftovers(vm)).toEqual([]);
  });
});
