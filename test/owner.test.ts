// claimVm's decisions (effects/owner.ts), on a scripted port: which owners are waited for, which
// are refused at once. The real flock port: test/linux/ownership.test.ts; the simulator's: test/sim-ownership.

import { describe, expect, test } from 'vitest';
import { parseConfig } from '../config/load.js';
import { claimVm, emptyJournal, phaseOf, recordWorthKeeping, type Claim, type OwnerRecord, type OwnershipPort, type Phase, type VmLock } from '../effects/owner.js';
import { sandboxMachine } from '../machines/sandbox.js';

const config = parseConfig({
  name: 'vm1',
  storage: '/var/lib/vm1',
  services: [{ name: 'vmm', vmm: true, argv: ['/bin/true'], uid: 1000, gid: 1000 }],
});

function holder(phase: Phase, stopBy: number | null = null): OwnerRecord {
  return { vm: 'vm1', pid: 42, since: 0, phase, stopBy, exitCode: null, endedAt: null, journal: emptyJournal() };
}

/** A port that answers with `answers` in turn (then the last one), on a clock that sleep advances. */
function port(answers: (OwnerRecord | 'free')[]): OwnershipPort & { tries: number; clock: number } {
  const p = {
    tries: 0,
    clock: 0,
    now: () => p.clock,
    sleep: async (ms: number) => void (p.clock += ms),
    tryClaim: (): Claim => {
      const a = answers[Math.min(p.tries++, answers.length - 1)]!;
      return a === 'free' ? { ok: true, lock: {} as VmLock } : { ok: false, what: 'vm vm1', holder: a };
    },
  };
  return p;
}

describe('phaseOf', () => {
  test('a record shows running only in running, and stopping from the graceful stop through the whole teardown', () => {
    const teardown = Object.keys(sandboxMachine.states.teardown!.states).map((k) => `teardown.${k}`);
    expect(teardown).toEqual(['teardown.kill', 'teardown.cleanup']);
    const seq = ['setup.setupNamespaces', 'setup.launch', 'running', 'gracefulStop.vmm.requesting', 'gracefulStop.services', ...teardown, 'done'];
    let phase: Phase = 'starting';
    expect(seq.map((s) => (phase = phaseOf(s, phase)))).toEqual(['starting', 'starting', 'running', 'stopping', 'stopping', 'stopping', 'stopping', 'stopping']);
  });

  test('a run torn down before it came up is stopping too (a new manager waits for it)', () => {
    for (const s of ['teardown.kill', 'teardown.cleanup']) expect(phaseOf(s, 'starting')).toBe('stopping');
  });
});

describe('recordWorthKeeping', () => {
  test('a record is kept while a journal names leftovers, or finish must judge a failed run by its uptime', () => {
    const ended = (exitCode: number) => ({ ...holder('ended'), exitCode });
    expect(recordWorthKeeping(ended(0))).toBe(false);
    expect(recordWorthKeeping(ended(2))).toBe(false);
    expect(recordWorthKeeping(ended(111))).toBe(false);
    for (const code of [4, 5, 7]) expect(recordWorthKeeping(ended(code))).toBe(true);
    expect(recordWorthKeeping({ ...holder('running'), journal: { cgroup: '/x', runtimeDir: null } })).toBe(true);
    expect(recordWorthKeeping(holder('finish'))).toBe(false);
  });
});

describe('claimVm', () => {
  test('a running owner is refused at once', async () => {
    const p = port([holder('running')]);
    expect((await claimVm(p, config, { pid: 1 })).ok).toBe(false);
    expect(p.tries).toBe(1);
  });

  test('a stopping owner is waited for until its bound, then the VM is taken', async () => {
    const p = port([holder('stopping', 500), holder('stopping', 500), 'free']);
    const waits: number[] = [];
    expect((await claimVm(p, config, { pid: 1 }, { onWait: (_h, ms) => waits.push(ms) })).ok).toBe(true);
    expect(waits).toEqual([1500]);
  });

  test('a stopping owner past its bound (plus slack) is refused', async () => {
    const p = port([holder('stopping', 500)]);
    expect((await claimVm(p, config, { pid: 1 })).ok).toBe(false);
    expect(p.clock).toBeGreaterThanOrEqual(1500);
    expect(p.clock).toBeLessThan(1600);
  });

  test('an owner that has recorded its end, or whose record is gone, is letting the lock go: waited for briefly', async () => {
    expect((await claimVm(port([holder('ended'), holder('ended'), 'free']), config, { pid: 1 })).ok).toBe(true);
    const gone = port([null as unknown as OwnerRecord, 'free']);
    expect((await claimVm(gone, config, { pid: 1 })).ok).toBe(true);
    expect(gone.tries).toBe(2);
    const stuck = port([holder('ended')]);
    expect((await claimVm(stuck, config, { pid: 1 })).ok).toBe(false);
    expect(stuck.clock).toBeLessThan(1100);
  });
});
