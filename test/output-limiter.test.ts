// The manager's rate bound on a service's output (effects/linux/output.ts): at most N lines per
// service per second, the excess reported once per window, other services unaffected.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { outputLimiter, type ServiceOutput } from '../effects/linux/output.js';

describe('outputLimiter', () => {
  afterEach(() => vi.useRealTimers());

  it('passes N lines a second per service, counts the rest, and reports them once when the window ends', () => {
    vi.useFakeTimers();
    let now = 0;
    const out: ServiceOutput[] = [];
    const lim = outputLimiter(3, (o) => out.push(o), () => now);
    for (let i = 0; i < 10; i++) lim.line('a', 'stdout', `a${i}`, false);
    lim.line('b', 'stderr', 'b0', false); // another service has its own budget
    expect(out.map((o) => (o.type === 'line' ? o.line : `dropped ${o.count}`))).toEqual(['a0', 'a1', 'a2', 'b0']);
    now = 1000;
    vi.advanceTimersByTime(1000); // the window ends with the service silent: the count still comes
    expect(out.at(-1)).toEqual({ type: 'dropped', service: 'a', count: 7, reason: 'rate' });
    lim.line('a', 'stdout', 'next', true);
    expect(out.at(-1)).toEqual({ type: 'line', service: 'a', stream: 'stdout', line: 'next', cut: true });
    expect(out.filter((o) => o.type === 'dropped')).toHaveLength(1);
  });

  it('passes the init\'s rate count (outlimit) on at once, as a rate drop', () => {
    const out: ServiceOutput[] = [];
    const lim = outputLimiter(1, (o) => out.push(o), () => 0);
    lim.rateDropped('a', 4821);
    lim.line('a', 'stdout', 'x', false);
    expect(out).toEqual([
      { type: 'dropped', service: 'a', count: 4821, reason: 'rate' },
      { type: 'line', service: 'a', stream: 'stdout', line: 'x', cut: false },
    ]);
  });

  it('reports the init\'s own drops at once, and what is counted at close', () => {
    const out: ServiceOutput[] = [];
    const lim = outputLimiter(1, (o) => out.push(o), () => 0);
    lim.socketDropped('a', 'stdout', 5);
    lim.line('a', 'stdout', 'x', false);
    lim.line('a', 'stdout', 'y', false);
    lim.close();
    expect(out).toEqual([
      { type: 'dropped', service: 'a', stream: 'stdout', count: 5, reason: 'socket' },
      { type: 'line', service: 'a', stream: 'stdout', line: 'x', cut: false },
      { type: 'dropped', service: 'a', count: 1, reason: 'rate' },
    ]);
  });
});
