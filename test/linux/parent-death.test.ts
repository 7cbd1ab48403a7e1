// The manager's parent (s6-supervise in production) dies before, during and after setup, and during
// a graceful stop. The manager (`vmsandbox run`, PR_SET_PDEATHSIG(SIGPWR) → PARENT_DIED) must tear
// the VM down itself and exit promptly: 6 (parentDied), or 2 (forced) when a stop was already under
// way (docs/architecture.md: parent death always forces; the first cause decides the outcome). Nothing
// may remain: no process, cgroup directory, mount or runtime dir.
//
// Process tree: reaper (C subreaper: reaps and reports every orphan, so the manager's exit code is
// known after its parent is gone) → /bin/sh (the parent, SIGKILLed) → vmsandbox run (stdout to a
// file in the scratch dir).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { writeRunConfig } from './helpers/manager.js';
import { ensureNative, staticCcSkipReason, testProgram, underReaper, type ReaperRun } from './helpers/native.js';
import { repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, type TestVm } from './helpers/vm.js';

const skip = skipReason() ?? staticCcSkipReason();
if (skip) console.warn(`test/linux/parent-death skipped: ${skip}`);

const KILL_MS = 2000;

interface Managed {
  r: ReaperRun;
  parent: number;
  manager: number;
  log(): Record<string, unknown>[];
  states(): string[];
  waitState(state: string, timeoutMs?: number): Promise<void>;
  context(): string;
}

describe.skipIf(skip)('the manager\'s parent dies: the manager tears everything down and exits', () => {
  let vm: TestVm | null = null;
  let reaper = '';
  beforeAll(() => {
    ensureNative();
    reaper = testProgram('reaper');
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => {
    removeTestParents();
  });

  /**
   * reaper → sh (the parent) → `vmsandbox run`. With `hint`, the parent names itself with
   * `--supervisor-pid`, as the s6 run script does (`exec vmsandbox run --supervisor-pid "$PPID" …`).
   */
  async function startUnderParent(vmmArgv: string[], opts: { hint: boolean; stopMs?: number }): Promise<Managed> {
    const { file } = writeRunConfig(vm!, vmmArgv, { stopMs: opts.stopMs ?? 3000, killMs: KILL_MS });
    const logFile = join(vm!.scratch, 'manager.log');
    const script = `"$BIN" run ${opts.hint ? '--supervisor-pid $$ ' : ''}"$CFG" >"$LOG" 2>&1 & echo "manager $!"; wait`;
    const r = underReaper(reaper, ['/bin/sh', '-c', script], {
      ...process.env,
      BIN: join(repoRoot, 'bin', 'vmsandbox'),
      CFG: file,
      LOG: logFile,
    });
    const parent = await r.child;
    const line = await r.waitLine(/^manager \d+$/, 5000);
    if (!line) throw new Error(`the parent never started the manager: ${r.lines.join('\n')} ${r.stderr()}`);
    const manager = Number(line.split(' ')[1]);
    const raw = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
    const log = () =>
      raw()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const states = () => log().flatMap((l) => (typeof l.state === 'string' ? [l.state] : []));
    return {
      r,
      parent,
      manager,
      log,
      states,
      context: () => `manager log:\n${raw()}\nreaped: ${JSON.stringify([...r.reaped])}`,
      waitState: async (state, timeoutMs = 15_000) => {
        if (!(await until(() => states().includes(state), timeoutMs, 1))) throw new Error(`no state ${state} within ${timeoutMs} ms; log:\n${raw()}`);
      },
    };
  }

  /** SIGKILL the parent; the manager must exit within killMs + 2 s with `code`; return its log. */
  async function killParent(m: Managed, code: number): Promise<Record<string, unknown>[]> {
    const t0 = performance.now();
    process.kill(m.parent, 'SIGKILL');
    const how = await m.r.waitReaped(m.manager, KILL_MS + 2000);
    const ms = performance.now() - t0;
    expect(m.r.reaped.get(m.parent), m.context()).toBe('signal 9');
    expect(how, `manager after ${ms.toFixed(0)} ms; ${m.context()}`).toBe(`exit ${code}`);
    console.log(`[measure] parent SIGKILL to manager exit ${ms.toFixed(1)} ms`);
    // Everything it started was reaped too: the reaper has no child left.
    await m.r.exited;
    const log = m.log();
    expect(log.some((l) => l.msg === 'received PARENT_DIED'), m.context()).toBe(true);
    expect(log.at(-1), m.context()).toMatchObject({ exitCode: code });
    // The manager did the whole teardown itself: nothing is left, not even the cgroup or runtime dir.
    expect(leftovers(vm!)).toEqual([]);
    return log;
  }

  it('before setup: the parent is gone before the manager has started; it does not run the VM, exits 6, leaves nothing', async () => {
    vm = newTestVm();
    const m = await startUnderParent(['/bin/sleep', '1000'], { hint: true });
    // Node needs a few hundred ms to start: the parent dies long before the manager's prctl.
    expect(m.states()).toEqual([]);
    const log = await killParent(m, 6);
    expect(log.at(-1)).toMatchObject({ outcome: 'parentDied' });
    expect(log.some((l) => l.reason === 'supervisor died during setup'), m.context()).toBe(true);
    expect(m.states()).not.toContain('running');
    expect(log.some((l) => /launched/.test(String(l.msg))), m.context()).toBe(false);
  });

  it('during setup: exits 6 with "supervisor died during setup", leaves nothing', async () => {
    vm = newTestVm();
    const m = await startUnderParent(['/bin/sleep', '1000'], { hint: false });
    await m.waitState('setup.setupNamespaces');
    const log = await killParent(m, 6);
    expect(log.at(-1)).toMatchObject({ outcome: 'parentDied' });
    expect(log.some((l) => l.reason === 'supervisor died during setup'), m.context()).toBe(true);
    expect(m.states()).not.toContain('running');
  });

  it('after setup (running): exits 6 with "supervisor died", leaves nothing', async () => {
    vm = newTestVm();
    const m = await startUnderParent(['/bin/sleep', '1000'], { hint: false });
    await m.waitState('running');
    const log = await killParent(m, 6);
    expect(log.at(-1)).toMatchObject({ outcome: 'parentDied' });
    expect(log.some((l) => l.reason === 'supervisor died' && l.state === 'teardown.kill'), m.context()).toBe(true);
  });

  it('during a graceful stop: the stop is forced (exit 2), the parent death is logged, nothing is left', async () => {
    vm = newTestVm();
    const armed = `${vm.runtimeDir}/vmm/armed`;
    const stubborn = ['/bin/sh', '-c', `trap "" TERM; : > ${armed}; while :; do sleep 1; done`];
    // stopMs far beyond the test's patience: only the parent's death can end the graceful stop in time.
    const m = await startUnderParent(stubborn, { hint: false, stopMs: 60_000 });
    await m.waitState('running');
    expect(await until(() => existsSync(armed), 10_000)).toBe(true);
    process.kill(m.manager, 'SIGTERM');
    await m.waitState('gracefulStop.vmm.requesting');
    const log = await killParent(m, 2);
    expect(log.at(-1)).toMatchObject({ outcome: 'forced' });
    expect(JSON.stringify(log.at(-1)?.errors), m.context()).toMatch(/supervisor died during graceful stop/);
  });
});
