// vmsandbox sim: run seeds through the simulator and check the invariants after each.

import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { simulateParallel } from '../sim/parallel.js';
import { runSeed } from '../sim/bulk.js';
import { simulate } from '../sim/run.js';

const USAGE = 'usage: vmsandbox sim [--seed N] [--runs M] [--jobs J] [--json] [--trace] [--config FILE] [--engine lean|xstate]';

function wholeNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) {
    throw new Error(`--${name}: must be a whole number from 0 to 4294967295 (got "${value}")`);
  }
  return Number(value);
}

export async function simMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seed: { type: 'string' },
      runs: { type: 'string' },
      json: { type: 'boolean', default: false },
      trace: { type: 'boolean', default: false },
      config: { type: 'string' },
      jobs: { type: 'string' },
      engine: { type: 'string' },
    },
  });
  let seed: number;
  let runs: number;
  let jobs: number;
  try {
    jobs = wholeNumber('jobs', values.jobs, 1);
    seed = wholeNumber('seed', values.seed, 1);
    runs = wholeNumber('runs', values.runs, values.trace ? 1 : 1000);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (jobs < 1 || (jobs > 1 && (values.trace || values.json))) {
    process.stderr.write(`--jobs: must be at least 1, and 1 with --trace or --json (their output is in seed order)\n${USAGE}\n`);
    return 2;
  }
  if (values.trace && runs !== 1) {
    process.stderr.write(`--trace prints one run: use it with --seed N and without --runs\n${USAGE}\n`);
    return 2;
  }
  // Bulk runs default to the lean engine (checked against XState, sim/bulk.ts); a traced replay
  // defaults to XState itself, the interpreter production runs.
  const engine = values.engine ?? (values.trace ? 'xstate' : 'lean');
  if (engine !== 'lean' && engine !== 'xstate') {
    process.stderr.write(`--engine: must be lean or xstate (got "${engine}")\n${USAGE}\n`);
    return 2;
  }
  const config: VmConfig | undefined = values.config ? loadConfig(values.config) : undefined;
  const replay = (s: number) => `vmsandbox sim --seed ${s} --trace${values.config ? ` --config ${values.config}` : ''}`;

  if (jobs > 1) {
    const r = await simulateParallel(seed, runs, jobs, config, engine);
    for (const f of r.failures) process.stdout.write(`FAIL seed ${f.seed}: ${f.violations.join('; ')}\n  replay: ${replay(f.seed)}\n`);
    process.stdout.write(`${r.passed} passed, ${r.failures.length} failed\n`);
    return r.failures.length ? 1 : 0;
  }

  let passed = 0;
  let failed = 0;
  for (let s = seed; s < seed + runs; s++) {
    const r = values.trace ? await simulate(s, { config, trace: true, engine }) : await runSeed(s, { config, engine });
    if (r.ok) passed++;
    else failed++;
    if (values.trace) {
      process.stdout.write(`plan ${JSON.stringify(r.plan)}\n${r.trace.join('\n')}\n`);
    } else if (values.json) {
      const { seed: runSeed, ok, finalState, output, violations } = r;
      process.stdout.write(JSON.stringify({ seed: runSeed, ok, state: finalState, outcome: output?.outcome, exitCode: output?.exitCode, violations }) + '\n');
    } else if (!r.ok) {
      process.stdout.write(`FAIL seed ${s}: ${r.violations.join('; ')}\n  replay: ${replay(s)}\n`);
    }
  }
  if (values.json && !values.trace) process.stdout.write(JSON.stringify({ passed, failed }) + '\n');
  else process.stdout.write(`${passed} passed, ${failed} failed\n`);
  return failed ? 1 : 0;
}
