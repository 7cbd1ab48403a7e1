// The lean engine (sim/engine.ts) must run the machine exactly as XState does: byte-identical
// traces over many seeds, the same verdicts, and a loud refusal of what it does not interpret.

import { describe, expect, it } from 'vitest';
import { and, createMachine, log, stateIn } from 'xstate';
import { sandboxMachine } from '../machines/sandbox.js';
import { VirtualClock } from '../sim/clock.js';
import { configFromSeed } from '../sim/configs.js';
import { LeanActor } from '../sim/engine.js';
import { CROSS_CHECK_EVERY, describeDivergence, runSeed } from '../sim/bulk.js';
import { simulate } from '../sim/run.js';
import { LeanSignal } from '../sim/signal.js';
import { mutants } from './mutants.js';

describe('the lean engine against XState', () => {
  it('gives byte-identical traces and the same verdicts on 2,000 seeds', async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 2000; seed++) {
      const x = await simulate(seed, { trace: true });
      const l = await simulate(seed, { trace: true, engine: 'lean' });
      if (l.trace.join('\n') !== x.trace.join('\n')) {
        const i = x.trace.findIndex((line, k) => line !== l.trace[k]);
        expect.fail(`seed ${seed} diverges at trace line ${i}:\n  xstate: ${x.trace[i]}\n  lean:   ${l.trace[i]}`);
      }
      expect(l.violations, `seed ${seed}`).toEqual(x.violations);
      expect(l.output, `seed ${seed}`).toEqual(x.output);
      outcomes.add(String(x.output?.outcome));
    }
    // The comparison covered the machine's breadth, not one happy path.
    expect([...outcomes].sort()).toEqual(['forced', 'initDied', 'parentDied', 'poweredOff', 'serviceCrashed', 'setupFailed', 'stopped']);
  });

  it('gives the same traces for every mutant, failing seeds included', async () => {
    for (const m of mutants) {
      for (let seed = 1; seed <= 150; seed++) {
        const x = await simulate(seed, { trace: true, machine: m.machine, ownership: m.ownership });
        const l = await simulate(seed, { trace: true, machine: m.machine, ownership: m.ownership, engine: 'lean' });
        expect(l.trace, `${m.name}, seed ${seed}`).toEqual(x.trace);
      }
    }
  });

  it('drives the machine the same way when events arrive before start', async () => {
    const effects = new Proxy({}, { get: () => () => new Promise(() => undefined) }) as never;
    const clock = new VirtualClock();
    const a = new LeanActor(sandboxMachine, { input: { config: configFromSeed(3) }, clock, effects });
    a.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false } as never);
    expect(a.getSnapshot().value).toEqual({ setup: 'setupNamespaces' });
    a.start();
    expect(a.getSnapshot().value).toBe('timeoutKill');
    expect(a.getSnapshot().context.outcome).toBe('stopped');
  });

  const refusals: [string, Record<string, unknown>, RegExp][] = [
    ['a parallel state', { id: 'm', type: 'parallel', states: { a: {}, b: {} } }, /parallel states/],
    ['a wildcard event', { id: 'm', initial: 'a', states: { a: { on: { '*': 'b' } }, b: {} } }, /wildcard event/],
    ['a custom entry action', { id: 'm', initial: 'a', states: { a: { entry: () => undefined } } }, /entry\/exit action/],
    ['a reentering transition', { id: 'm', initial: 'a', states: { a: { on: { GO: { target: 'a', reenter: true } } } } }, /reentering transition/],
    ['a history state', { id: 'm', initial: 'a', states: { a: {}, h: { type: 'history' } } }, /history states/],
    ['a built-in action it does not interpret', { id: 'm', initial: 'a', states: { a: { on: { GO: { actions: log('x') } } } } }, /built-in action xstate\.log/],
    ['a stateIn() guard, even nested', { id: 'm', initial: 'a', states: { a: { on: { GO: { guard: and([stateIn('a')]), target: 'b' } } }, b: {} } }, /stateIn\(\) guard/],
  ];
  for (const [what, config, message] of refusals) {
    it(`refuses ${what} instead of interpreting it differently`, () => {
      const m = createMachine(config as never);
      expect(() => new LeanActor(m as never, { input: {}, clock: new VirtualClock(), effects: {} as never })).toThrow(message);
      expect(() => new LeanActor(m as never, { input: {}, clock: new VirtualClock(), effects: {} as never })).toThrow(/--engine xstate/);
    });
  }
});

describe('bulk runs (vmsandbox sim --runs): lean, with XState having the last word', () => {
  it('a failing seed is re-run on XState, whose verdict is reported', async () => {
    const m = mutants[0]!;
    let seed = 1;
    while ((await simulate(seed, { machine: m.machine, engine: 'lean' })).ok) seed++;
    const bulk = await runSeed(seed, { engine: 'lean', machine: m.machine });
    const xstate = await simulate(seed, { machine: m.machine });
    expect(bulk.ok).toBe(false);
    expect(bulk.violations).toEqual(xstate.violations);
    expect(bulk.output).toEqual(xstate.output);
  });

  it('sampled seeds are compared line by line; a divergence names the first differing line', async () => {
    expect(CROSS_CHECK_EVERY).toBe(100);
    expect((await runSeed(CROSS_CHECK_EVERY * 3, { engine: 'lean' })).ok).toBe(true);
    expect(describeDivergence(['a', 'b'], ['a', 'b'])).toBeNull();
    expect(describeDivergence(['a', 'b', 'c'], ['a', 'x', 'c'])).toMatch(/at trace line 2 \(xstate: "b", lean: "x"\).*--engine xstate/);
    expect(describeDivergence(['a', 'b'], ['a'])).toMatch(/line 2 \(xstate: "b", lean: "<end>"\)/);
    expect(describeDivergence(['a'], ['a', 'late'])).toMatch(/line 2 \(xstate: "<end>", lean: "late"\)/);
  });
});

describe('LeanSignal behaves like an AbortSignal for what the backend uses', () => {
  // Drive a real AbortController and a LeanSignal through the same script; the logs must match.
  function script(target: { addEventListener: Function; removeEventListener: Function }, abort: () => void, aborted: () => boolean) {
    const log: string[] = [];
    const a = () => log.push('a');
    const b = () => log.push('b');
    const c = () => log.push('c');
    target.addEventListener('abort', a, { once: true });
    target.addEventListener('abort', b);
    target.addEventListener('abort', b); // a duplicate is ignored
    target.addEventListener('abort', c);
    target.removeEventListener('abort', c);
    target.addEventListener('other', c);
    log.push(`before ${aborted()}`);
    abort();
    log.push(`after ${aborted()}`);
    abort(); // a second abort runs nothing
    target.addEventListener('abort', c); // too late: never runs
    abort();
    return log;
  }

  it('runs listeners in order, once, not after removal, not after the abort', () => {
    const real = new AbortController();
    const lean = new LeanSignal();
    const expected = script(real.signal, () => real.abort(), () => real.signal.aborted);
    expect(expected).toEqual(['before false', 'a', 'b', 'after true']);
    expect(script(lean, () => lean.abort(new Error('stopped')), () => lean.aborted)).toEqual(expected);
    expect(() => lean.throwIfAborted()).toThrow('stopped');
  });
});
