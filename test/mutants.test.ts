// The simulator's teeth: realistic machine bugs and a VM lock that does not lock (test/mutants.ts)
// must each be caught by the seeds and invariants, on XState and on the lean engine alike, at the
// same first seed.

import { describe, expect, it } from 'vitest';
import type { SandboxMachine } from '../machines/sandbox.js';
import { sandboxMachine } from '../machines/sandbox.js';
import type { OwnershipFactory } from '../sim/owner.js';
import type { Engine } from '../sim/run.js';
import { simulate } from '../sim/run.js';
import { mutants } from './mutants.js';

/** The first failing seed in 1..limit, and its violations. */
async function hunt(machine: SandboxMachine, engine: Engine, limit = 2000, ownership?: OwnershipFactory) {
  for (let seed = 1; seed <= limit; seed++) {
    const r = await simulate(seed, { machine, engine, ownership });
    if (!r.ok) return { seed, violations: r.violations };
  }
  return null;
}

describe('mutants of the machine are caught by the simulator', () => {
  it('the real machine passes the same seeds (the control)', async () => {
    expect(await hunt(sandboxMachine, 'xstate', 500)).toBeNull();
  });

  for (const m of mutants) {
    it(m.name, async () => {
      const found = await hunt(m.machine, 'xstate', 2000, m.ownership);
      expect(found).not.toBeNull();
      expect(found!.violations.join('\n')).toMatch(m.caughtBy);
      // The lean engine (bulk runs) sees the same bug at the same seed, in the same words.
      expect(await hunt(m.machine, 'lean', found!.seed, m.ownership)).toEqual(found);
    });
  }
});
