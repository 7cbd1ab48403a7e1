// One owner per VM, in the simulator: the lock table (sim/owner.ts), a second manager and
// `vmsandbox finish` during a run (sim/managers.ts), and the invariant that no manager kills,
// removes or changes what another live manager owns (sim/invariants.ts). The Linux side of the
// same rules is test/linux/ownership.test.ts.

import { describe, expect, it } from 'vitest';
import { emptyJournal, memoryJournal } from '../effects/owner.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { createSimBackend } from '../sim/backend.js';
import { VirtualClock } from '../sim/clock.js';
import { configFromSeed } from '../sim/configs.js';
import { demoPlan } from '../sim/demoPlan.js';
import type { FaultPlan } from '../sim/faults.js';
import { planFromSeed } from '../sim/faults.js';
import { SimKernel } from '../sim/kernel.js';
import { simOwnership } from '../sim/owner.js';
import type { SimResult } from '../sim/run.js';
import { MANAGER_HOPS, simulate } from '../sim/run.js';
import { locklessOwnership, mutants } from './mutants.js';

const config = configFromSeed(3); // vmm stopped over QMP, stopMs 10000, killMs 200
const plan = (over: Partial<FaultPlan>): FaultPlan => ({ ...demoPlan, ...over, delays: { ...demoPlan.delays, ...over.delays } });
const FIRST = 'manager pid 1001';

/** The first run's own trace: without the other managers' lines, and only up to its end. */
function firstRun(r: SimResult): string[] {
  const own = r.trace.filter((l) => !/^\d+ (second manager|finish|manager 1 \(pid \d+\)):/.test(l));
  return own.slice(0, own.findIndex((l) => / end (stopped|failed) /.test(l)) + 1);
}

describe('the lock table (sim/owner.ts)', () => {
  const kernel = () => new SimKernel(new VirtualClock(), 7, new Set(), () => undefined);

  it('one holder at a time; the record (and its journal) stays after release, for the next owner', () => {
    const k = kernel();
    const a = simOwnership(k, k.clock, 1).tryClaim(config, { pid: 1001, phase: 'starting' });
    expect(a.ok).toBe(true);
    if (!a.ok) return;
    expect(k.holderOf(config.name)).toBe(1);
    a.lock.setJournal({ cgroup: 'vmsandbox/sim', runtimeDir: null });
    const b = simOwnership(k, k.clock, 2).tryClaim(config, { pid: 1002, phase: 'starting' });
    expect(b).toMatchObject({ ok: false, what: `vm ${config.name}`, holder: { pid: 1001, phase: 'starting' } });
    a.lock.update({ phase: 'ended', exitCode: 7 });
    a.lock.release();
    expect(k.holderOf(config.name)).toBe(0);
    expect(() => a.lock.setJournal(emptyJournal())).toThrow(/EBADF/);
    const c = simOwnership(k, k.clock, 2).tryClaim(config, { pid: 1002, phase: 'starting' });
    expect(c.ok).toBe(true);
    if (!c.ok) return;
    expect(c.lock.previous).toMatchObject({ pid: 1001, phase: 'ended', exitCode: 7 });
    expect(c.lock.journal()).toEqual({ cgroup: 'vmsandbox/sim', runtimeDir: null });
  });

  it('another VM with the same runtime directory is refused by the directory lock', () => {
    const k = kernel();
    expect(simOwnership(k, k.clock, 1).tryClaim(config, { pid: 1001, phase: 'running' }).ok).toBe(true);
    const other = { ...config, name: 'other' };
    expect(simOwnership(k, k.clock, 2).tryClaim(other, { pid: 1002, phase: 'starting' })).toMatchObject({ ok: false, what: `runtime dir ${config.runtimeDir}` });
  });
});

describe('the simulator backend follows the journal contract', () => {
  it('it refuses a cgroup or runtime dir it did not journal, and tears down only what is journalled', async () => {
    const clock = new VirtualClock();
    const k = new SimKernel(clock, 7, new Set(['memory', 'pids', 'cpu', 'io']), () => undefined);
    // The VM's names, taken by something no run of this VM created (0: not a manager).
    k.mkdirCgroup('vmsandbox', 0, null);
    k.mkdirCgroup('vmsandbox/sim', 0, 'sim');
    k.mkdirDir(config.runtimeDir, 'sim', 0);
    const journal = memoryJournal();
    const b = createSimBackend(config, k, plan({ stopAt: [] }), clock, () => undefined, { journal, manager: 1 });
    const planned = b.plan();
    if (!planned.ok) throw new Error('the demo config is planned on a capable kernel');
    const slices = planned.plan;
    const signal = new AbortController().signal;
    const drive = async <T>(p: Promise<T>): Promise<T> => {
      let done = false;
      p.then(() => (done = true), () => (done = true));
      for (let i = 0; !done && i < 1000; i++) {
        for (let h = 0; h < 8; h++) await null;
        if (!done) clock.step();
      }
      return p;
    };
    // Teardown with nothing journalled touches nothing, whatever exists by name.
    await drive(b.effects.killAll({}, signal));
    await drive(b.effects.cleanup({}, signal));
    expect(k.cgroups.has('vmsandbox/sim')).toBe(true);
    expect(k.dirs.has(config.runtimeDir)).toBe(true);
    // As on Linux, the cgroup is refused where it is first needed: the init is cloned into it.
    await expect(drive(b.effects.createNamespaces({ cgroup: slices.cgroup, namespaces: slices.namespaces }, signal))).rejects.toThrow(/EEXIST: cgroup vmsandbox\/sim exists, and no run of vm sim created it/);
    expect(journal.journal().cgroup).toBeNull();
    k.rmdirCgroup('vmsandbox/sim', 0);
    await drive(b.effects.createNamespaces({ cgroup: slices.cgroup, namespaces: slices.namespaces }, signal));
    expect(journal.journal()).toEqual({ cgroup: 'vmsandbox/sim', runtimeDir: null });
    await expect(drive(b.effects.mount(slices, signal))).rejects.toThrow(/EEXIST: runtime dir \/run\/vmsandbox\/sim \(runtimeDir\) exists, and no run of vm sim created it/);
    expect(journal.journal().runtimeDir).toBeNull();
    // Teardown removes what it journalled (the cgroup), not the runtime dir it refused.
    await drive(b.effects.killAll({}, signal));
    await drive(b.effects.cleanup({}, signal));
    expect(k.cgroups.has('vmsandbox/sim')).toBe(false);
    expect(k.dirs.has(config.runtimeDir)).toBe(true);
    expect(journal.journal()).toEqual({ cgroup: null, runtimeDir: null });
    // Every action was manager 1's, and nobody held the lock (no lock in this test): all foreign.
    expect(k.foreign.every((a) => a.by === 1 && a.holder === 0)).toBe(true);
    expect(k.acted[1]).toBe(k.foreign.length);
  });
});

describe('a second manager and finish during a run', () => {
  const alone = simulate(0, { config, plan: demoPlan, trace: true });

  it('(a) a second manager while the first runs: exit 101, nothing touched, the first unharmed', async () => {
    const r = await simulate(0, { config, plan: plan({ secondManagerAt: 1000 }), trace: true });
    expect(r.violations).toEqual([]);
    expect(r.managers).toEqual([{ name: 'second manager', pid: 1002, exitCode: EXIT_CODES.alreadyRunning }]);
    expect(r.trace).toContain(`001000 second manager: vm sim is already running (${FIRST}): this run changes nothing: exit 101`);
    const base = await alone;
    expect(firstRun(r)).toEqual(base.trace.slice(0, firstRun(r).length));
    expect(r.output).toEqual(base.output);
  });

  it('(b) finish while the first runs: refused (exit 1), nothing touched, the first unharmed', async () => {
    const r = await simulate(0, { config, plan: plan({ finishAt: 1000 }), trace: true });
    expect(r.violations).toEqual([]);
    expect(r.managers).toEqual([{ name: 'finish', pid: 1003, exitCode: 1 }]);
    expect(r.trace).toContain(`001000 finish: vm sim is already running (${FIRST}): finish changes nothing: exit 1`);
    const base = await alone;
    expect(firstRun(r)).toEqual(base.trace.slice(0, firstRun(r).length));
    expect(r.output).toEqual(base.output);
  });

  it('(c) a second manager while the first is stopping: waits, then takes the VM and runs cleanly', async () => {
    // SIGTERM at 3000; the guest takes 2 s to power off, so the first is stopping until about 5000.
    const p = plan({ vmmStopMs: 2000, secondManagerAt: 3500 });
    const r = await simulate(0, { config, plan: p, trace: true });
    expect(r.violations).toEqual([]);
    expect(r.output).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    // stopBy: 3000 + stopMs 10000 + killMs 200 + cleanup 2000 + slack 1000, and 1000 more.
    expect(r.trace).toContain('003500 second manager: vm sim: the previous manager (pid 1001) is stopping; waiting up to 13700 ms for it');
    // The first ended cleanly: its record had no reader left and went with its lock.
    const took = r.trace.findIndex((l) => /second manager: took vm sim$/.test(l));
    const released = r.trace.findIndex((l) => l.includes('manager 1 (pid 1001): exit 0, lock of vm sim released'));
    expect(released).toBeGreaterThan(0);
    expect(took).toBeGreaterThan(released);
    expect(r.trace.some((l) => l.includes('second manager: state running <-'))).toBe(true);
    expect(r.managers).toEqual([{ name: 'second manager', pid: 1002, exitCode: 0 }]);
    const base = await simulate(0, { config, plan: plan({ vmmStopMs: 2000 }), trace: true });
    expect(firstRun(r)).toEqual(base.trace.slice(0, firstRun(r).length));
  });

  it('a stopping owner is waited for up to its own bound and a second more; one that never ends is then refused: exit 101', async () => {
    // The mutant without a deadline on the graceful stop, and a guest that ignores the stop: the
    // first manager never ends (the invariants say so); the second gives up at stopBy + 1000.
    const noDeadline = mutants.find((m) => m.name.startsWith('bug 3'))!.machine;
    const r = await simulate(0, { config, machine: noDeadline, plan: plan({ vmmIgnoresStop: true, secondManagerAt: 3500 }), trace: true });
    expect(r.trace).toContain('003500 second manager: vm sim: the previous manager (pid 1001) is stopping; waiting up to 13700 ms for it');
    expect(r.trace).toContain(`017200 second manager: vm sim is already running (${FIRST}, stopping): this run changes nothing: exit 101`);
    expect(r.managers).toEqual([{ name: 'second manager', pid: 1002, exitCode: EXIT_CODES.alreadyRunning }]);
    expect(r.violations.join('\n')).toMatch(/machine is stuck|still running/);
  });

  it('finish after a run whose teardown failed removes exactly what the journal names; the leftover is still reported', async () => {
    // rmdir of the VM cgroup fails with EBUSY more often than cleanup retries: the run ends with
    // exit 7, its cgroup and runtime dir left (invariant 3 sees them when the run ends, and still
    // reports them); finish, later, removes them.
    const r = await simulate(0, { config, plan: plan({ cleanupBusy: 10, finishAt: 6000 }), trace: true });
    expect(r.output).toMatchObject({ exitCode: EXIT_CODES.teardownFailed });
    expect(r.violations).toEqual(['cgroups left: vmsandbox/sim', 'runtime directory left: /run/vmsandbox/sim']);
    expect(r.trace).toContain('006003 finish: removed cgroup vmsandbox/sim, runtime dir /run/vmsandbox/sim: exit 0');
    expect(r.managers).toEqual([{ name: 'finish', pid: 1003, exitCode: 0 }]);
  });

  it('the same for a second manager: it removes the leftovers first, then runs', async () => {
    const r = await simulate(0, { config, plan: plan({ cleanupBusy: 10, secondManagerAt: 6000 }), trace: true });
    expect(r.violations).toEqual(['cgroups left: vmsandbox/sim', 'runtime directory left: /run/vmsandbox/sim']);
    expect(r.trace).toContain('006003 second manager: removed what a manager (pid 1001) that ended without tearing down (last seen ended) left: cgroup vmsandbox/sim, runtime dir /run/vmsandbox/sim');
    expect(r.managers).toEqual([{ name: 'second manager', pid: 1002, exitCode: 0 }]);
  });
});

describe('the invariant bites: a VM lock that does not lock', () => {
  it('a second manager that takes a running VM kills what the first owns, and is named for it', async () => {
    const r = await simulate(0, { config, plan: plan({ secondManagerAt: 1000 }), ownership: locklessOwnership, trace: true });
    expect(r.violations[0]).toBe('the second manager (pid 1002) killed cgroup vmsandbox/sim at 1000 ms while the first manager (pid 1001) owned vm sim');
    expect(r.violations.join('\n')).toMatch(/the second manager \(pid 1002\) sent SIGKILL to vmsandbox-init\[\d+\] at 1000 ms while the first manager/);
  });

  it('a finish that ignores the lock removes the running VM: caught the same way', async () => {
    const r = await simulate(0, { config, plan: plan({ finishAt: 1000 }), ownership: locklessOwnership });
    expect(r.violations.join('\n')).toMatch(/`vmsandbox finish` \(pid 1003\) killed cgroup vmsandbox\/sim at 1000 ms while the first manager \(pid 1001\) owned vm sim/);
  });
});

describe('over many seeds', () => {
  it('10000 seeds with second managers and finish runs: no violation, and every path is taken', async () => {
    const failures: string[] = [];
    const paths = new Map<string, number>();
    const count = (k: string) => paths.set(k, (paths.get(k) ?? 0) + 1);
    for (let seed = 1; seed <= 10000; seed++) {
      const p = planFromSeed(seed);
      const others = p.secondManagerAt !== null || p.finishAt !== null;
      const r = await simulate(seed, { trace: others });
      if (!r.ok) failures.push(`seed ${seed}: ${r.violations.join('; ')}`);
      for (const l of r.trace) {
        if (/second manager: .*is already running.*exit 101/.test(l)) count('second refused');
        if (/second manager: .*is stopping; waiting/.test(l)) count('second waited');
        if (/second manager: took vm/.test(l)) count('second took the VM');
        if (/second manager: exit 0: stopped/.test(l)) count('second ran cleanly');
        if (/finish: .*finish changes nothing: exit 1/.test(l)) count('finish refused');
        if (/finish: nothing left behind: exit 0/.test(l)) count('finish took the VM');
      }
    }
    expect(failures).toEqual([]);
    for (const k of ['second refused', 'second waited', 'second took the VM', 'second ran cleanly', 'finish refused', 'finish took the VM']) {
      expect(paths.get(k) ?? 0, k).toBeGreaterThan(10);
    }
  });

  it(`another manager's promise chains settle within the drain (MANAGER_HOPS ${MANAGER_HOPS}): the same traces as a macrotask turn`, async () => {
    let seen = 0;
    for (let seed = 1; seed <= 3000; seed++) {
      const p = planFromSeed(seed);
      if (p.secondManagerAt === null && p.finishAt === null) continue;
      seen++;
      const full = (await simulate(seed, { trace: true, drain: 'macrotask' })).trace;
      expect((await simulate(seed, { trace: true })).trace, `seed ${seed}`).toEqual(full);
      // Even when the machine's own steps get the fewest hops that do for them.
      expect((await simulate(seed, { trace: true, hops: 3 })).trace, `seed ${seed}, 3 hops`).toEqual(full);
    }
    expect(seen).toBeGreaterThan(80);
  });

  it('plans without the new fields (hand-written before them) run as before', async () => {
    const { secondManagerAt: _s, finishAt: _f, ...old } = demoPlan;
    const r = await simulate(0, { config, plan: old as FaultPlan });
    expect(r.violations).toEqual([]);
    expect(r.managers).toEqual([]);
  });
});
