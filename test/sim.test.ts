// The real machine over the simulator: seeds, fault-plan properties, determinism, and oracles for
// hand-written plans whose outcome is known.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../machines/outcome.js';
import { CLEANUP_MS } from '../machines/sandbox.js';
import { configFromSeed } from '../sim/configs.js';
import { demoPlan } from '../sim/demoPlan.js';
import type { FaultPlan, Op } from '../sim/faults.js';
import { ERRNOS, planFromSeed } from '../sim/faults.js';
import { MICROTASK_HOPS, simulate } from '../sim/run.js';

const plan = (over: Partial<FaultPlan>): FaultPlan => ({ ...demoPlan, ...over, delays: { ...demoPlan.delays, ...over.delays } });

describe('simulation over seeds', () => {
  it('1000 seeds: every invariant holds after every run', async () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 1000; seed++) {
      const r = await simulate(seed);
      if (!r.ok) failures.push(`seed ${seed}: ${r.violations.join('; ')}`);
    }
    expect(failures).toEqual([]);
  });

  it('the seeds reach every outcome and every state (the fault plans have breadth)', async () => {
    const outcomes = new Set<string>();
    const states = new Set<string>();
    for (let seed = 1; seed <= 600; seed++) {
      const r = await simulate(seed, { trace: true });
      outcomes.add(`${r.finalState}/${r.output?.outcome}`);
      for (const line of r.trace) {
        const m = / state (\S+) <- /.exec(line);
        if (m) states.add(m[1]!);
      }
    }
    for (const o of ['stopped/stopped', 'stopped/forced', 'stopped/poweredOff', 'failed/setupFailed', 'failed/serviceCrashed', 'failed/parentDied', 'failed/initDied']) {
      expect(outcomes).toContain(o);
    }
    for (const s of ['setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup', 'setup.launch', 'running', 'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.services', 'teardown.kill', 'teardown.cleanup', 'stopped', 'failed']) {
      expect(states).toContain(s);
    }
  });

  it('property: any fault plan leaves the invariants intact (fast-check, shrinking)', async () => {
    const ops: Op[] = ['createNamespaces', 'mount', 'prepareLandlock', 'createCgroups', 'launch', 'requestStop', 'terminateServices', 'killAll', 'cleanup'];
    const delay = fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 20, max: 5000 }), fc.constant(Infinity));
    const teardownDelay = fc.integer({ min: 0, max: 100 });
    const failable = ops.filter((o) => ERRNOS[o].length > 0);
    const arbPlan = fc.record({
      seed: fc.nat(),
      delays: fc.record(Object.fromEntries(ops.map((o) => [o, o === 'killAll' || o === 'cleanup' ? teardownDelay : delay])) as Record<Op, fc.Arbitrary<number>>),
      fail: fc.option(fc.constantFrom(...failable).chain((op) => fc.record({ op: fc.constant(op), call: fc.integer({ min: 1, max: 3 }), errno: fc.constantFrom(...ERRNOS[op]) }))),
      landlockAbi: fc.integer({ min: 0, max: 7 }),
      controllers: fc.subarray(['memory', 'pids', 'cpu', 'io']),
      stopAt: fc.array(fc.integer({ min: 0, max: 20000 }), { minLength: 1, maxLength: 3 }).map((a) => a.sort((x, y) => x - y)),
      parentDiesAt: fc.option(fc.integer({ min: 0, max: 20000 })),
      initDiesAt: fc.option(fc.integer({ min: 0, max: 20000 })),
      crash: fc.option(fc.record({ index: fc.integer({ min: 0, max: 2 }), at: fc.integer({ min: 0, max: 20000 }), code: fc.option(fc.integer({ min: 0, max: 255 })), signal: fc.constant(null) }).map((c) => ({ ...c, signal: c.code === null ? 'SIGSEGV' : null }))),
      powerOffAt: fc.option(fc.integer({ min: 0, max: 20000 })),
      vmmIgnoresStop: fc.boolean(),
      vmmStopMs: fc.integer({ min: 0, max: 20000 }),
      othersIgnoreTerm: fc.boolean(),
      cleanupBusy: fc.integer({ min: 0, max: 4 }),
      pidReuse: fc.constantFrom(0, 0.5, 1),
      vmmArmsAt: fc.option(fc.integer({ min: 0, max: 20000 })),
    });
    await fc.assert(
      fc.asyncProperty(arbPlan, fc.nat(), async (p, configSeed) => {
        const r = await simulate(configSeed, { plan: p as FaultPlan, config: configFromSeed(configSeed) });
        expect(r.violations).toEqual([]);
      }),
      { numRuns: 300, seed: 42 },
    );
  });
});

describe('determinism', () => {
  it('the same seed gives the same trace, byte for byte', async () => {
    for (const seed of [1, 7, 123, 4242, 99999]) {
      const a = await simulate(seed, { trace: true });
      const b = await simulate(seed, { trace: true });
      expect(a.trace.join('\n')).toBe(b.trace.join('\n'));
      expect(a.trace.length).toBeGreaterThan(1);
    }
  });

  it('draining microtasks between steps gives the same runs as a full macrotask turn', async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const b = await simulate(seed, { trace: true, drain: 'macrotask' });
      const a = await simulate(seed, { trace: true, drain: 'microtasks' });
      expect(a.trace, `seed ${seed}`).toEqual(b.trace);
    }
  });

  it(`the drain has margin: ${MICROTASK_HOPS} hops are used, 3 are needed, 2 change runs`, async () => {
    let changed = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const full = (await simulate(seed, { trace: true, drain: 'macrotask' })).trace;
      expect((await simulate(seed, { trace: true, hops: 3 })).trace, `seed ${seed}`).toEqual(full);
      if ((await simulate(seed, { trace: true, hops: 2 })).trace.join('\n') !== full.join('\n')) changed++;
    }
    expect(changed).toBeGreaterThan(0);
    expect(MICROTASK_HOPS).toBeGreaterThanOrEqual(6);
  });

  it('fault plans are a function of the seed', () => {
    expect(planFromSeed(5)).toEqual(planFromSeed(5));
    expect(planFromSeed(5)).not.toEqual(planFromSeed(6));
  });
});

describe('oracles: plans whose outcome is known', () => {
  const config = configFromSeed(3);

  it('a clean stop: exit 0, and the run ends soon after the vmm powers off', async () => {
    const r = await simulate(0, { config, plan: demoPlan });
    expect(r.violations).toEqual([]);
    expect(r.output).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
    expect(r.endedAt! - 3000).toBeGreaterThanOrEqual(demoPlan.vmmStopMs);
    expect(r.endedAt! - 3000).toBeLessThan(demoPlan.vmmStopMs + 100);
  });

  it('a vmm that ignores the stop is forced at stopMs: exit 2', async () => {
    const r = await simulate(0, { config, plan: plan({ vmmIgnoresStop: true }) });
    expect(r.violations).toEqual([]);
    expect(r.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced });
    expect(r.endedAt! - 3000).toBeGreaterThanOrEqual(config.timeouts.stopMs);
    expect(r.endedAt! - 3000).toBeLessThanOrEqual(config.timeouts.stopMs + config.timeouts.killMs + CLEANUP_MS);
  });

  it('a hung setup step is abandoned at setupMs and leaves nothing', async () => {
    const r = await simulate(0, { config, plan: plan({ delays: { createCgroups: Infinity }, stopAt: [100000] }) });
    expect(r.violations).toEqual([]);
    expect(r.output?.outcome).toBe('setupFailed');
    expect(r.output?.errors[0]).toBe(`setup did not finish within ${config.timeouts.setupMs} ms`);
  });

  it('a Landlock ABI below minAbi refuses to start unless degrading is allowed', async () => {
    const strict = { ...config, landlock: { minAbi: 6, allowDegraded: false } };
    const refused = await simulate(0, { config: strict, plan: plan({ landlockAbi: 4 }) });
    expect(refused.output?.outcome).toBe('setupFailed');
    expect(refused.output?.errors[0]).toMatch(/landlock.minAbi: the kernel offers Landlock ABI 4, the config needs 6.*landlock.allowDegraded/);
    expect(refused.violations).toEqual([]);
    const degraded = await simulate(0, { config: { ...strict, landlock: { minAbi: 6, allowDegraded: true } }, plan: plan({ landlockAbi: 4 }) });
    expect(degraded.output?.outcome).toBe('stopped');
    expect(degraded.violations).toEqual([]);
  });

  it('a limit whose controller is missing refuses to start unless limits are optional', async () => {
    const limited = { ...config, cgroup: { parent: 'vmsandbox', limits: { 'memory.max': '1G' }, limitsOptional: false } };
    const r = await simulate(0, { config: limited, plan: plan({ controllers: ['pids'] }) });
    expect(r.output?.outcome).toBe('setupFailed');
    expect(r.output?.errors[0]).toMatch(/cgroup.limits\["memory.max"\]: the memory controller is not available.*cgroup.limitsOptional/);
    expect(r.violations).toEqual([]);
  });

  it('a crashed service with its PID reused at once: no signal reaches the stranger', async () => {
    const r = await simulate(0, { config, plan: plan({ crash: { index: 0, at: 1000, code: null, signal: 'SIGSEGV' }, pidReuse: 1 }), trace: true });
    expect(r.violations).toEqual([]);
    expect(r.output?.outcome).toBe('serviceCrashed');
    expect(r.trace.some((l) => / kernel: exit (host-proc|other-vm-vmm)/.test(l) || /other-vm|host-proc/.test(l))).toBe(true);
  });

  describe('a stop requested while the guest boots (its power button not armed yet)', () => {
    // configFromSeed(3): the vmm is stopped over QMP, stopMs 10000. The demo plan: SIGTERM at 3000,
    // each request takes 1 ms, the guest powers off 160 ms after it takes the button.
    const dropped = (trace: string[]) => trace.filter((l) => /the guest drops the power button/.test(l)).length;

    it('armed within stopMs: the request is repeated until the guest takes it; stopped, exit 0', async () => {
      expect(config.services.find((s) => s.vmm)?.stop).toHaveProperty('qmp');
      const r = await simulate(0, { config, plan: plan({ vmmArmsAt: 5500 }), trace: true });
      expect(r.violations).toEqual([]);
      expect(r.output).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
      // 3001, 4002, 5003 dropped; 6004 taken; the vmm exits 160 ms later.
      expect(r.output!.stopRequests).toBe(4);
      expect(dropped(r.trace)).toBe(3);
      expect(r.trace.some((l) => l.includes('stop request 4 sent (qmp)'))).toBe(true);
      expect(r.endedAt! - 3000).toBeLessThan(3004 + demoPlan.vmmStopMs + 100);
    });

    it('armed only after stopMs: every request is dropped, forced at stopMs: exit 2', async () => {
      const r = await simulate(0, { config, plan: plan({ vmmArmsAt: 3000 + config.timeouts.stopMs + 500 }), trace: true });
      expect(r.violations).toEqual([]);
      expect(r.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced, errors: [] });
      expect(r.output!.stopRequests).toBe(10);
      expect(dropped(r.trace)).toBe(10);
    });

    it('a signal stop is sent exactly once, whether or not it works', async () => {
      const bySignal = { ...config, services: config.services.map((s) => (s.vmm ? { ...s, stop: { signal: 'SIGTERM' } } : s)) };
      const sent = (trace: string[]) => trace.filter((l) => / kernel: SIGTERM -> vmm\[/.test(l)).length;
      const ignored = await simulate(0, { config: bySignal, plan: plan({ vmmIgnoresStop: true }), trace: true });
      expect(ignored.violations).toEqual([]);
      expect(ignored.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced, stopRequests: 1 });
      expect(sent(ignored.trace)).toBe(1);
      // A signal goes to the vmm process, not to the guest: an unarmed guest does not matter.
      const booting = await simulate(0, { config: bySignal, plan: plan({ vmmArmsAt: 8000 }), trace: true });
      expect(booting.output).toMatchObject({ outcome: 'stopped', exitCode: 0, stopRequests: 1 });
      expect(sent(booting.trace)).toBe(1);
    });

    it('a repeat that races the vmm exit (its QMP socket closed) fails without forcing: stopped, exit 0', async () => {
      // Taken at 3001, the vmm exits at 4011 and closes its socket 20 ms before; the repeat at 4002 fails.
      const r = await simulate(0, { config, plan: plan({ vmmStopMs: 1010 }), trace: true });
      expect(r.violations).toEqual([]);
      expect(r.trace.some((l) => /stop request 2 failed \(qmp\): .*ECONNRESET.*not forcing/.test(l))).toBe(true);
      expect(r.output).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [], stopRequests: 2 });
    });
  });

  it('rmdir EBUSY is retried and the cgroups still go away', async () => {
    const r = await simulate(0, { config, plan: plan({ cleanupBusy: 3 }) });
    expect(r.violations).toEqual([]);
    expect(r.output?.exitCode).toBe(0);
  });
});
