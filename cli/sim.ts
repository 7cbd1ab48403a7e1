// vmsandbox sim: run seeds through the simulator and check the invariants after each.

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { printHelp } from './help.js';
import { loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { simulateSeeds } from '../sim/parallel.js';
import { simulate } from '../sim/run.js';
import { addRun, emptyTally, type Tally } from '../sim/tally.js';
import { Progress, summary } from './simReport.js';

const USAGE =
  'usage: vmsandbox sim [--seed N] [--runs M] [--jobs J] [--json] [--trace] [--config FILE]\n' +
  '  Run the sandbox machine in the simulator (a model kernel, virtual time) for seeds N..N+M-1, each\n' +
  '  with its own injected faults, and check the invariants after every run (docs/simulation.md).\n' +
  '  --seed N       the first seed (default 1)\n' +
  '  --runs M       how many seeds (default 1000; 1 with --trace)\n' +
  '  --jobs J       worker threads (default: one per core; 1 with --trace or --json)\n' +
  '  --trace        print every state and event of one run (replay one seed)\n' +
  '  --json         one JSON line per run\n' +
  '  --config FILE  simulate this config instead of the built-in demo\n' +
  '  exit: 0 the invariants held in every run, 1 one was violated (the seed is printed), 2 usage';

function wholeNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) {
    throw new Error(`--${name}: must be a whole number from 0 to 4294967295 (got "${value}")`);
  }
  return Number(value);
}

export async function simMain(argv: string[]): Promise<number> {
  if (printHelp(argv, USAGE)) return 0;
  const { values } = parseArgs({
    args: argv,
    options: {
      seed: { type: 'string' },
      runs: { type: 'string' },
      json: { type: 'boolean', default: false },
      trace: { type: 'boolean', default: false },
      config: { type: 'string' },
      jobs: { type: 'string' },
    },
  });
  const ordered = values.trace || values.json;
  let seed: number;
  let runs: number;
  let jobs: number;
  try {
    // Bulk runs use every core; a trace or JSON lines are printed in seed order, from one thread.
    jobs = wholeNumber('jobs', values.jobs, ordered ? 1 : availableParallelism());
    seed = wholeNumber('seed', values.seed, 1);
    runs = wholeNumber('runs', values.runs, values.trace ? 1 : 1000);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (jobs < 1 || (jobs > 1 && ordered)) {
    process.stderr.write(`--jobs: must be at least 1, and 1 with --trace or --json (their output is in seed order)\n${USAGE}\n`);
    return 2;
  }
  if (values.trace && runs !== 1) {
    process.stderr.write(`--trace prints one run: use it with --seed N and without --runs\n${USAGE}\n`);
    return 2;
  }
  const config: VmConfig | undefined = values.config ? loadConfig(values.config) : undefined;

  if (values.trace) {
    const r = await simulate(seed, { config, trace: true });
    const t = emptyTally();
    addRun(t, r);
    process.stdout.write(`plan ${JSON.stringify(r.plan)}\n${r.trace.join('\n')}\n${summary(t)}`);
    return r.ok ? 0 : 1;
  }

  const progress = new Progress(runs);
  let t: Tally;
  if (values.json) {
    t = emptyTally();
    for (let s = seed; s < seed + runs; s++) {
      const r = await simulate(s, { config });
      addRun(t, r);
      const { ok, finalState, output, violations } = r;
      process.stdout.write(JSON.stringify({ seed: s, ok, state: finalState, outcome: output?.outcome, exitCode: output?.exitCode, violations }) + '\n');
      progress.update(t);
    }
    progress.clear();
    process.stdout.write(JSON.stringify({ runs: t.runs, held: t.held, violated: t.runs - t.held, outcomes: t.outcomes }) + '\n');
  } else {
    t = await simulateSeeds(seed, runs, { config, jobs, onBatch: (sofar) => progress.update(sofar) });
    progress.clear();
    const replay = (s: number) => `vmsandbox sim --seed ${s} --trace${values.config ? ` --config ${values.config}` : ''}`;
    for (const f of t.failures) process.stdout.write(`FAIL seed ${f.seed} (${f.outcome}): ${f.violations.join('; ')}\n  replay: ${replay(f.seed)}\n`);
    process.stdout.write(summary(t));
  }
  const s = progress.elapsedMs() / 1000;
  const used = values.json ? 1 : Math.max(1, Math.min(jobs, runs));
  process.stderr.write(`vmsandbox sim: ${runs} runs in ${s.toFixed(1)} s (${Math.round(runs / s)} runs/s, ${used} job${used === 1 ? '' : 's'})\n`);
  return t.held === t.runs ? 0 : 1;
}
