// Watching the supervisor (s6/supervisor.ts): polled only when no parent-death signal covers it.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { watchSupervisor } from '../../s6/supervisor.js';

afterEach(() => vi.useRealTimers());

function timersOf(opts: Parameters<typeof watchSupervisor>[0]): number {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] });
  const s = watchSupervisor(opts);
  const n = vi.getTimerCount();
  s.stop();
  expect(vi.getTimerCount()).toBe(0);
  return n;
}

describe('watchSupervisor', () => {
  const onDeath = () => {
    throw new Error('the supervisor is alive');
  };

  it('the parent, with the parent-death signal armed: the kernel signal is the event, nothing is polled', () => {
    expect(timersOf({ onDeath, parentDeathSignal: true })).toBe(0);
    expect(timersOf({ pid: process.ppid, onDeath, parentDeathSignal: true })).toBe(0);
  });

  it('the parent without that signal, or a supervisor that is not the parent: its pidfd is polled', () => {
    expect(timersOf({ onDeath })).toBe(1);
    // PID 1 started before this process, so it may be named; it is not the parent: no signal covers it.
    if (process.ppid !== 1) expect(timersOf({ pid: 1, onDeath, parentDeathSignal: true })).toBe(1);
  });
});
