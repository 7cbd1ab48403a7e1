// One seed of a bulk run (`vmsandbox sim --runs`, its workers). The lean engine runs it; XState
// has the last word: every failing seed is run again on XState, whose verdict is the one reported,
// and every CROSS_CHECK_EVERY-th seed is run on both engines, which must agree trace line for
// trace line. A divergence is reported as a failure of that seed.

import type { VmConfig } from '../config/types.js';
import type { SandboxMachine } from '../machines/sandbox.js';
import type { Engine, SimResult } from './run.js';
import { simulate } from './run.js';

export const CROSS_CHECK_EVERY = 100;

export interface BulkOptions {
  config?: VmConfig;
  engine: Engine;
  /** A machine other than the product's (tests use mutants). */
  machine?: SandboxMachine;
}

export async function runSeed(seed: number, opts: BulkOptions): Promise<SimResult> {
  const { config, machine } = opts;
  if (opts.engine === 'xstate') return simulate(seed, { config, machine });
  const sampled = seed % CROSS_CHECK_EVERY === 0;
  const lean = await simulate(seed, { config, machine, engine: 'lean', trace: sampled });
  if (lean.ok && !sampled) return lean;
  const reference = await simulate(seed, { config, machine, trace: true });
  const traced = sampled ? lean : await simulate(seed, { config, machine, engine: 'lean', trace: true });
  const divergence = describeDivergence(reference.trace, traced.trace);
  // Bulk callers print verdicts, not traces; `sim --seed N --trace` replays one.
  if (divergence === null) return { ...reference, trace: [] };
  return { ...reference, ok: false, violations: [...reference.violations, divergence], trace: [] };
}

/** Null when the lean engine's trace is XState's, else the first line where they part. */
export function describeDivergence(xstate: string[], lean: string[]): string | null {
  const n = Math.max(xstate.length, lean.length);
  for (let i = 0; i < n; i++) {
    if (xstate[i] === lean[i]) continue;
    return (
      `the lean engine diverged from XState at trace line ${i + 1} ` +
      `(xstate: ${JSON.stringify(xstate[i] ?? '<end>')}, lean: ${JSON.stringify(lean[i] ?? '<end>')}); ` +
      `this is a bug in sim/engine.ts: run with --engine xstate meanwhile`
    );
  }
  return null;
}
