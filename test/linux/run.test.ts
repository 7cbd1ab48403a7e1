// `vmsandbox run CONFIG` as s6 would run it: the compiled command, a real sandbox, SIGTERM to stop.

import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkMain } from '../../cli/check.js';
import { FORBIDDEN_CAPABILITIES } from '../../config/rules.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun, writeRunConfig, type RunningManager } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/run skipped: ${skip}`);

function startManager(vm: TestVm, vmmArgv: string[], timeouts = { stopMs: 3000, killMs: 2000 }): RunningManager {
  return spawnRun(writeRunConfig(vm, vmmArgv, timeouts).file);
}

/** A vmm that ignores SIGTERM, and says so (a file in its runtime dir) once the trap is set. */
const stubborn = (vm: TestVm) => ['/bin/sh', '-c', `trap "" TERM; : > ${vm.runtimeDir}/vmm/armed; while :; do sleep 1; done`];

/** Edit the raw JSON config `vmsandbox run` will read. */
function editConfig(file: string, edit: (raw: any) => void): void {
  const raw = JSON.parse(readFileSync(file, 'utf8'));
  edit(raw);
  writeFileSync(file, JSON.stringify(raw));
}

/** The FAIL lines of `vmsandbox check FILE` (without the tag), and its exit code. */
async function checkFails(file: string): Promise<{ code: number; fails: string[] }> {
  let out = '';
  const code = await checkMain([file], { io: { out: (t) => void (out += t), err: () => undefined } });
  return { code, fails: out.split('\n').filter((l) => l.startsWith('FAIL: ')).map((l) => l.slice('FAIL: '.length)) };
}

/** The preflight's refusal: exactly one error record with the problems; the machine never started. */
function refusal(m: RunningManager): { problems: string[]; msg: string } {
  const recs = m.lines.filter((l) => Array.isArray(l.problems));
  expect(recs, m.log()).toHaveLength(1);
  expect(recs[0]).toMatchObject({ level: 'error', exitCode: 111, outcome: 'setupFailed' });
  expect(m.lines.filter((l) => l.state), 'no state: nothing was set up').toEqual([]);
  return { problems: recs[0]!.problems as string[], msg: String(recs[0]!.msg) };
}

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
    expect(states).toEqual(['setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup', 'setup.launch', 'running', 'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.services', 'teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(m.lines.at(-1)).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    // The services the stop itself signalled did not fail: no Landlock explanation is looked for.
    expect(m.lines.filter((l) => String(l.event).startsWith('landlock-'))).toEqual([]);
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
    await m.waitForState('gracefulStop.vmm.requesting');
    m.kill('SIGTERM');
    expect(await m.exited).toBe(2);
    expect(leftovers(vm)).toEqual([]);
  });

  it('a vmm binary that does not exist: refused before anything exists, exit 111, naming the path and the field as check does', async () => {
    vm = newTestVm();
    const { file } = writeRunConfig(vm, ['/nonexistent/vmm']);
    const check = await checkFails(file);
    expect(check).toEqual({ code: 111, fails: ['services[1].argv[0]: /nonexistent/vmm does not exist: install it or fix the path'] });
    const m = spawnRun(file);
    expect(await m.exited, m.log()).toBe(111);
    const r = refusal(m);
    expect(r.problems).toEqual(check.fails);
    expect(r.msg).toContain('services[1].argv[0]: /nonexistent/vmm does not exist: install it or fix the path');
    expect(leftovers(vm)).toEqual([]);
  });

  it('a storage directory that does not exist: refused with exit 111 naming storage and the path, nothing left', async () => {
    vm = newTestVm();
    rmSync(vm.storage, { recursive: true });
    const m = startManager(vm, ['/bin/sleep', '1000']);
    expect(await m.exited, m.log()).toBe(111);
    // Missing in /tmp, it is also a name any local user could take first (a symlink root would follow).
    expect(refusal(m).problems).toEqual([
      expect.stringMatching(/^storage: \/tmp is writable by every user: a local user could put a symlink at /),
      `storage: ${vm.storage} does not exist: create it (mkdir -p ${vm.storage})`,
    ]);
    expect(leftovers(vm)).toEqual([]);
    expect(existsSync(vm.storage)).toBe(false);
  });

  it('a Landlock read path that does not exist: run refuses it as check does (same exit code, same lines)', async () => {
    vm = newTestVm();
    const { file } = writeRunConfig(vm, ['/bin/sleep', '1000']);
    const missing = join(vm.scratch, 'missing');
    editConfig(file, (raw) => raw.services[1].landlock.read.push(missing));
    const check = await checkFails(file);
    expect(check.code).toBe(111);
    expect(check.fails).toEqual([
      `services[1].landlock.read[5]: ${missing} does not exist: a Landlock rule needs an existing file or directory; create it or remove the rule`,
    ]);
    const m = spawnRun(file);
    expect(await m.exited, m.log()).toBe(111);
    expect(refusal(m).problems).toEqual(check.fails);
    expect(leftovers(vm)).toEqual([]);
  });

  it('every capability the backend refuses: check and run both exit 100 with the same field path, nothing created', async () => {
    vm = newTestVm();
    const { file } = writeRunConfig(vm, ['/bin/sleep', '1000']);
    for (const cap of Object.keys(FORBIDDEN_CAPABILITIES)) {
      editConfig(file, (raw) => (raw.services[1].caps = [`cap_${cap.toLowerCase()}`]));
      const check = await checkFails(file);
      expect(check.code, cap).toBe(100);
      const m = spawnRun(file);
      expect(await m.exited, m.log()).toBe(100);
      expect(m.log()).toContain(`services[1].caps[0]: CAP_${cap} is not allowed`);
      expect(leftovers(vm)).toEqual([]);
    }
  });

  it('a vmm that passes the checks but cannot be executed: setup fails naming the path, the field and the errno; nothing left', async () => {
    vm = newTestVm();
    chmodSync(vm.scratch, 0o755);
    const prog = join(vm.scratch, 'vmm');
    writeFileSync(prog, 'not a program\n', { mode: 0o755 });
    const { file } = writeRunConfig(vm, [prog]);
    editConfig(file, (raw) => raw.services[1].landlock.read.push(vm.scratch));
    expect(await checkFails(file)).toEqual({ code: 0, fails: [] });
    const m = spawnRun(file);
    expect(await m.exited, m.log()).toBe(111);
    const failure = m.lines.find((l) => l.level === 'error' && l.state);
    expect(failure?.reason).toBe(
      `launch failed: launch vmm: ${prog} (services[1].argv[0]): ENOEXEC (exec format error) at execve: ` +
        'not a program this kernel can run (no #! line, or another architecture): fix argv[0]',
    );
    expect(m.lines.at(-1)).toMatchObject({ outcome: 'setupFailed', exitCode: 111 });
    expect(leftovers(vm)).toEqual([]);
  });
});
