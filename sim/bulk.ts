// One seed of a bulk run (`vmsandbox sim --runs`, its workers). The lean engine runs it; XState
// has the last word: every failing seed is run again on XState, whose verdict is the one reported,
// and every CROSS_CHECK_EVERY-th seed is run on both engines, which must agree trace line for
// trace line. A divergence is reported as a failure of that seed.

import type { VmConfig } from '../config/types.js';
import type { Engine, SimResult } from './run.js';
import { simulate } from './run.js';

export const CROSS_CHECK_EVERY = 100;

export async function runSeed(seed: number, opts: { config?: VmConfig; engine: Engine }): Promise<SimResult> {
  const { config } = opts;
  if (opts.engine === 'xstate') return simulate(seed, { config });
  const sampled = seed % CROSS_CHECK_EVERY === 0;
  const lean = await simulate(seed, { config, engine: 'lean', trace: sampled });
  if (lean.ok && !sampled) return lean;
  const reference = await simulate(seed, { config, trace: true });
  const traced = sampled ? lean : await simulate(seed, { config, engine: 'lean', trace: true });
  const at = reference.trace.findIndex((line, i) => line !== traced.trace[i]);
  const line = at >= 0 ? at : reference.trace.length < traced.trace.length ? reference.trace.length : -1;
  // Bulk callers print verdicts, not traces; `sim --seed N --trace` replays one.
  if (line < 0) return { ...reference, trace: [] };
  return {
    ...reference,
    ok: false,
    violations: [
      ...reference.violations,
      `the lean engine diverged from XState at trace line ${line + 1} ` +
        `(xstate: ${JSON.stringify(reference.trace[line] ?? '<end>')}, lean: ${JSON.stringify(traced.trace[line] ?? '<end>')}); ` +
        `this is a bug in sim/engine.ts: run with --engine xstate meanwhile`,
    ],
    trace: [],
  };
}
