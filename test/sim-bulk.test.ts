// Bulk runs: seeds spread over executors (worker threads in `vmsandbox sim --jobs J`) must give
// the verdicts and outcome counts one thread gives; the command's progress line and summary.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { progressLine, summary } from '../cli/simReport.js';
import { dispatch, inThread } from '../sim/parallel.js';
import { simulate } from '../sim/run.js';
import { addRun, emptyTally, outcomeOf } from '../sim/tally.js';
import { mutants } from './mutants.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = `${root}bin/vmsandbox`;

function sim(...args: string[]) {
  const r = spawnSync(bin, ['sim', ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The command on a terminal: `script` gives it a pty; stdout and stderr both land in `out`. */
function simOnTerminal(...args: string[]) {
  const cmd = [bin, 'sim', ...args].join(' ');
  const r = spawnSync('script', ['-qefc', cmd, '/dev/null'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout };
}

describe('seeds over several executors', () => {
  it('give the verdicts, failures (in seed order) and outcome counts of one, which are each run\'s own', async () => {
    // A mutant, so that there are failures to merge (bug 1: 16 % of the seeds).
    const machine = mutants[0]!.machine;
    const one = await dispatch(1, 150, [inThread({ machine })]);
    const three = await dispatch(1, 150, [inThread({ machine }), inThread({ machine }), inThread({ machine })]);
    expect(three).toEqual(one);
    const each = emptyTally();
    for (let seed = 1; seed <= 150; seed++) addRun(each, await simulate(seed, { machine }));
    expect(one).toEqual(each);
    expect(one.failures.length).toBeGreaterThan(5);
    expect(one.held + one.failures.length).toBe(150);
    expect(Object.values(one.outcomes).reduce((a, b) => a + b, 0)).toBe(150);
  });

  it('report after every batch, with the tally so far', async () => {
    const seen: number[] = [];
    const t = await dispatch(1, 50, [inThread({}), inThread({})], (sofar) => seen.push(sofar.runs));
    expect(seen.at(-1)).toBe(50);
    expect(seen.length).toBeGreaterThan(2);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(t.held).toBe(50);
  });

  it('key a run by its outcome, a failed teardown (exit 7) and a run that never ended apart', async () => {
    const r = await simulate(3);
    expect(outcomeOf(r)).toBe(r.output!.outcome);
    expect(outcomeOf({ ...r, output: { ...r.output!, exitCode: 7 } })).toBe('teardownFailed');
    expect(outcomeOf({ ...r, output: null })).toBe('did not end');
  });
});

describe('what vmsandbox sim prints', () => {
  it('the progress line: seeds done of total, rate, violations so far with the first, time left', () => {
    const t = emptyTally();
    t.runs = 250;
    t.held = 248;
    t.failures = [{ seed: 90, outcome: 'stopped', violations: [] }, { seed: 7, outcome: 'failed', violations: [] }];
    expect(progressLine(t, 1000, 500)).toBe('250/1000 seeds (25.0 %)  500/s  2 violated (first: seed 7)  ETA 2s');
    t.runs = 500;
    expect(progressLine(t, 300_500, 1000)).toMatch(/ 500\/s  .* ETA 10m 00s$/);
  });

  it('the summary names outcomes and the invariants\' verdict apart, outcomes in exit-code order', () => {
    const t = emptyTally();
    for (const [o, n] of [['setupFailed', 2], ['stopped', 3], ['forced', 1]] as const) t.outcomes[o] = n;
    t.runs = 6;
    t.held = 5;
    t.failures = [{ seed: 12, outcome: 'setupFailed', violations: ['x'] }];
    expect(summary(t)).toBe('outcomes: stopped 3, forced 1, setupFailed 2\ninvariants: held in 5 of 6 runs, violated in 1 (seed 12)\n');
  });

  it('--jobs 2 prints what --jobs 1 prints; the counts are those of the runs', () => {
    const two = sim('--seed', '1', '--runs', '400', '--jobs', '2');
    const one = sim('--seed', '1', '--runs', '400', '--jobs', '1');
    expect(two.code).toBe(0);
    expect(two.out).toBe(one.out);
    expect(two.err).toMatch(/^vmsandbox sim: 400 runs in [\d.]+ s \(\d+ runs\/s, 2 jobs\)\n$/);
    expect(one.err).toMatch(/\(\d+ runs\/s, 1 job\)\n$/);
    // The same seeds one JSON line each: the summary counts what they say.
    const runs = sim('--seed', '1', '--runs', '400', '--json').out.trim().split('\n').map((l) => JSON.parse(l));
    const last = runs.pop();
    const counts: Record<string, number> = {};
    for (const r of runs) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1;
    expect(last).toEqual({ runs: 400, held: 400, violated: 0, outcomes: counts });
    expect(Object.keys(counts).length).toBeGreaterThanOrEqual(5);
    const listed = Object.fromEntries(/^outcomes: (.*)$/m.exec(two.out)![1]!.split(', ').map((p) => [p.split(' ')[0], Number(p.split(' ')[1])]));
    expect(listed).toEqual(counts);
    expect(two.out).toMatch(/^invariants: held in 400 of 400 runs, violated in 0$/m);
  });

  it('--trace of a run that ended failed says the invariants held, not "passed"', () => {
    const json = sim('--seed', '1', '--runs', '40', '--json').out.trim().split('\n').map((l) => JSON.parse(l));
    const failed = json.find((r) => r.state === 'failed' && r.ok)!;
    const a = sim('--seed', String(failed.seed), '--trace');
    expect(a.code).toBe(0);
    expect(a.out).toBe(sim('--seed', String(failed.seed), '--trace').out);
    expect(a.out).toMatch(new RegExp(`^plan \\{"seed":${failed.seed}`));
    expect(a.out).toMatch(/state setup\.setupNamespaces <- xstate\.init/);
    expect(a.out).toMatch(new RegExp(` end failed outcome=${failed.outcome} `));
    expect(a.out).toMatch(new RegExp(`\\noutcomes: ${failed.outcome} 1\\ninvariants: held in 1 of 1 run, violated in 0\\n$`));
    expect(a.out).not.toMatch(/passed/);
  });

  it('a progress line on a terminal, cleared before the summary; none when stderr is not one', () => {
    const r = simOnTerminal('--seed', '1', '--runs', '1000', '--jobs', '2');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\r\d+\/1000 seeds \(\d+\.\d %\)  \d+\/s  0 violated  ETA \S+/);
    expect(r.out).toMatch(/\r\x1b\[K(\r\n)?outcomes: /);
    expect(r.out).toMatch(/invariants: held in 1000 of 1000 runs, violated in 0/);
    const piped = sim('--seed', '1', '--runs', '200', '--jobs', '2');
    expect(piped.err).not.toMatch(/seeds \(/);
  });

  it('usage errors: --engine is gone; one job with --json or --trace; bad numbers', () => {
    const engine = sim('--engine', 'lean');
    expect(engine.code).toBe(2);
    expect(engine.err).toMatch(/--engine/);
    expect(sim('--json', '--jobs', '2').code).toBe(2);
    const r = sim('--runs', 'many');
    expect(r.code).toBe(2);
    expect(r.err).toContain('--runs: must be a whole number');
    expect(sim('--runs', '3', '--trace').code).toBe(2);
  });
});
