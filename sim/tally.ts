// What a bulk run of seeds found: how many runs held every invariant, which seeds did not and why,
// and how the runs ended. A worker thread keeps one per batch and the main thread merges them, so
// it stays plain data (it crosses postMessage).

import { EXIT_CODES } from '../machines/outcome.js';
import type { SimOptions, SimResult } from './run.js';
import { simulate } from './run.js';

/** The outcome key of a run that never reached a final state (it is a violation too). */
export const NO_END = 'did not end';
/** The key of a run whose teardown failed: exit 7 overrides its outcome's code, as s6 sees it. */
export const TEARDOWN_FAILED = 'teardownFailed';

export interface Failure {
  seed: number;
  outcome: string;
  violations: string[];
}

export interface Tally {
  runs: number;
  /** Runs after which every invariant held, whatever the outcome (a setupFailed run can hold them all). */
  held: number;
  /** Seeds whose runs broke an invariant, in the order they were added. */
  failures: Failure[];
  /** Runs per outcome (SandboxOutput.outcome, TEARDOWN_FAILED or NO_END). */
  outcomes: Record<string, number>;
}

export function emptyTally(): Tally {
  return { runs: 0, held: 0, failures: [], outcomes: {} };
}

export function outcomeOf(r: SimResult): string {
  if (r.output === null) return NO_END;
  return r.output.exitCode === EXIT_CODES.teardownFailed ? TEARDOWN_FAILED : r.output.outcome;
}

export function addRun(t: Tally, r: SimResult): void {
  const outcome = outcomeOf(r);
  t.runs++;
  t.outcomes[outcome] = (t.outcomes[outcome] ?? 0) + 1;
  if (r.ok) t.held++;
  else t.failures.push({ seed: r.seed, outcome, violations: r.violations });
}

export function mergeTally(into: Tally, part: Tally): void {
  into.runs += part.runs;
  into.held += part.held;
  for (const f of part.failures) into.failures.push(f);
  for (const [o, n] of Object.entries(part.outcomes)) into.outcomes[o] = (into.outcomes[o] ?? 0) + n;
}

/** Seeds from..to-1, one after another in this thread. */
export async function runBatch(from: number, to: number, opts: Pick<SimOptions, 'config' | 'machine' | 'ownership'>): Promise<Tally> {
  const t = emptyTally();
  for (let seed = from; seed < to; seed++) addRun(t, await simulate(seed, opts));
  return t;
}
