// What `vmsandbox sim` tells its operator: a live progress line while seeds run (on a terminal),
// then how the runs ended and whether the invariants held. The two are kept apart on purpose: a
// run can end `failed` (setupFailed, serviceCrashed, …) and still hold every invariant, which is
// the simulator's verdict; "1 passed" printed under a failed trace was once read as the outcome.

import { EXIT_CODES } from '../machines/outcome.js';
import type { Tally } from '../sim/tally.js';

/** The progress line is redrawn at most this often. */
export const PROGRESS_EVERY_MS = 250;

const KNOWN_ORDER = Object.keys(EXIT_CODES);

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

/** Seeds done of total, the rate so far, failures so far (and the first), time left. */
export function progressLine(sofar: Tally, total: number, elapsedMs: number): string {
  const rate = sofar.runs / (elapsedMs / 1000);
  const pct = ((sofar.runs / total) * 100).toFixed(1);
  const violated = sofar.runs - sofar.held;
  const first = violated ? ` (first: seed ${sofar.failures.reduce((m, f) => Math.min(m, f.seed), Infinity)})` : '';
  return `${sofar.runs}/${total} seeds (${pct} %)  ${Math.round(rate)}/s  ${violated} violated${first}  ETA ${duration((total - sofar.runs) / rate)}`;
}

/** Draws the progress line on stderr when it is a terminal, and clears it before the report. */
export class Progress {
  private readonly start = performance.now();
  private last = -Infinity;
  private shown = false;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  update(sofar: Tally): void {
    if (!this.out.isTTY) return;
    const now = performance.now();
    if (now - this.last < PROGRESS_EVERY_MS && sofar.runs < this.total) return;
    this.last = now;
    this.shown = true;
    this.out.write(`\r${progressLine(sofar, this.total, now - this.start)}\x1b[K`);
  }

  clear(): void {
    if (this.shown) this.out.write('\r\x1b[K');
    this.shown = false;
  }

  elapsedMs(): number {
    return performance.now() - this.start;
  }
}

/** Outcome counts in exit-code order (then anything else, such as runs that did not end). */
export function outcomeCounts(outcomes: Record<string, number>): [string, number][] {
  const rank = (k: string) => (KNOWN_ORDER.includes(k) ? KNOWN_ORDER.indexOf(k) : KNOWN_ORDER.length);
  return Object.entries(outcomes).sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
}

/** The end of a report: how the runs ended, then the verdict. */
export function summary(t: Tally): string {
  const outcomes = outcomeCounts(t.outcomes).map(([o, n]) => `${o} ${n}`).join(', ');
  const violated = t.runs - t.held;
  const seeds = t.failures.slice(0, 10).map((f) => f.seed).join(', ') + (t.failures.length > 10 ? ', …' : '');
  return (
    `outcomes: ${outcomes || 'none'}\n` +
    `invariants: held in ${t.held} of ${t.runs} run${t.runs === 1 ? '' : 's'}, violated in ${violated}${violated ? ` (seed${violated === 1 ? '' : 's'} ${seeds})` : ''}\n`
  );
}
