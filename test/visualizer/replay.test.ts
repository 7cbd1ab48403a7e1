// The replay parsers: `vmsandbox sim --trace` output and a manager's pino log, detected automatically.

import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger, logTransition } from '../../cli/log.js';
import type { TransitionRecord } from '../../machines/observe.js';
import { detectFormat, parsePinoLog, parseRecording, parseSimTrace, readyText } from '../../visualizer/replay.js';
import { simulate } from '../../sim/run.js';
import { tempRoot } from './helpers.js';

async function traced(seed: number) {
  const records: { r: TransitionRecord; at: number }[] = [];
  const res = await simulate(seed, { trace: true, onRecord: (r, at) => records.push({ r, at }) });
  // exactly what `vmsandbox sim --seed N --trace` prints (cli/sim.ts)
  const text = `plan ${JSON.stringify(res.plan)}\n${res.trace.join('\n')}\n1 passed, 0 failed\n`;
  return { res, records, text };
}

describe('sim trace parser', () => {
  it('reads a failing seed: every state change in order, the failure, the outcome, the notes', async () => {
    const { res, records, text } = await traced(5);
    expect(res.output?.outcome).toBe('setupFailed');
    expect(detectFormat(text)).toBe('sim');
    const [rec] = parseRecording(text);
    expect(rec!.format).toBe('sim');
    expect(rec!.vm).toBe('seed 5');
    expect(rec!.plan).toMatchObject({ seed: 5, fail: { op: 'prepareLandlock' } });
    expect(rec!.records.map((r) => [r.state, r.event, r.reason, r.at])).toEqual(records.map(({ r, at }) => [r.state, r.event, r.reason, at]));
    expect(rec!.end).toEqual({ state: 'failed', outcome: 'setupFailed', exitCode: 111, errors: res.output!.errors });
    expect(rec!.records.filter((r) => r.failure).map((r) => r.state)).toEqual(['teardown.kill']);
    expect(rec!.records[rec!.records.length - 1]!.outcome).toBe('setupFailed');
    expect(rec!.notes.map((n) => n.kind)).toEqual(expect.arrayContaining(['kernel', 'event', 'end']));
    const ev = rec!.notes.find((n) => n.kind === 'event')!;
    expect(ev.text).toBe('event INIT_EXITED');
    expect(rec!.records[ev.after]!.state).toBe('teardown.kill');
  });

  it('reads every outcome the seeds reach', async () => {
    for (const seed of [1, 3, 30, 57, 72, 212]) {
      const { records, text, res } = await traced(seed);
      const r = parseSimTrace(text);
      expect(r.records.map((x) => x.state)).toEqual(records.map(({ r: x }) => x.state));
      expect(r.end?.outcome).toBe(res.output?.outcome);
    }
  });

  it('keeps reasons with parentheses whole', () => {
    const r = parseSimTrace('000017 state teardown.kill <- xstate.error.actor.prepareLandlock (landlock failed: E2BIG (call 1))\n');
    expect(r.records[0]!.reason).toBe('landlock failed: E2BIG (call 1)');
    expect(r.records[0]!.label).toBe('error: prepareLandlock');
  });
});

describe('pino log parser', () => {
  it('reads a manager log written by cli/log.ts (virtual times from the demo)', async () => {
    const file = join(tempRoot(), 'demo.log');
    const fd = openSync(file, 'w');
    const log = createLogger('seed9', fd);
    let prev = 0;
    const records: TransitionRecord[] = [];
    const res = await simulate(5, {
      onRecord: (r, at) => {
        records.push(r);
        logTransition(log, r, prev, { vt: at });
        prev = r.errors;
      },
    });
    log.info({ signal: 'SIGHUP' }, 'SIGHUP ignored');
    log.error({ outcome: res.output!.outcome, exitCode: res.output!.exitCode, errors: res.output!.errors }, `exit ${res.output!.exitCode}`);
    closeSync(fd);
    const text = readFileSync(file, 'utf8');
    expect(detectFormat(text)).toBe('pino');
    const [rec] = parseRecording(text);
    expect(rec!.vm).toBe('seed9');
    expect(rec!.records.map((r) => [r.state, r.event, r.reason])).toEqual(records.map((r) => [r.state, r.event, r.reason]));
    expect(rec!.records.filter((r) => r.failure).length).toBe(res.output!.errors.length);
    expect(rec!.end).toMatchObject({ outcome: 'setupFailed', exitCode: 111 });
    expect(rec!.notes.map((n) => n.kind)).toEqual(['log', 'end']);
  });

  it('reads wall-clock logs, s6-log prefixes and several VMs; ignores junk lines', () => {
    const text = [
      '@400000006581f2a30a1b2c3d {"level":"info","time":"2026-01-01T00:00:00.000Z","vm":"a","state":"setup.setupNamespaces","event":"xstate.init","services":{},"msg":"x"}',
      'not json',
      '{"level":"info","time":"2026-01-01T00:00:00.500Z","vm":"b","state":"setup.setupNamespaces","event":"xstate.init","services":{},"msg":"x"}',
      '{"level":"info","time":"2026-01-01T00:00:01.250Z","vm":"a","state":"running","event":"xstate.done.actor.launch","reason":"launched vmm (pid 9)","services":{"vmm":9},"msg":"x"}',
      '{"level":"info","time":"2026-01-01T00:00:02.000Z","vm":"a","event":{"type":"STOP_REQUESTED","signal":"SIGTERM","force":false},"msg":"received STOP_REQUESTED"}',
    ].join('\n');
    expect(detectFormat(text)).toBe('pino');
    const recs = parsePinoLog(text);
    expect(recs.map((r) => r.vm)).toEqual(['a', 'b']);
    expect(recs[0]!.records.map((r) => [r.state, r.at])).toEqual([['setup.setupNamespaces', 0], ['running', 1250]]);
    expect(recs[0]!.records[1]!.services).toEqual([{ name: 'vmm', pid: 9, uid: null, gid: null, vmm: false, cgroup: null }]);
    expect(recs[0]!.notes).toEqual([{ at: 2000, after: 1, kind: 'event', text: 'received STOP_REQUESTED' }]);
  });

  it("reads readiness as the live view words it, takes the run's own exit line as its end, and splits restarts into runs", () => {
    const at = (t: string, o: Record<string, unknown>) => JSON.stringify({ level: 'info', time: `2026-01-01T00:00:${t}Z`, vm: 'a', ...o });
    const text = [
      at('00.000', { state: 'setup.setupNamespaces', event: 'xstate.init', services: {}, msg: 'x' }),
      at('00.100', { state: 'running', event: 'xstate.done.actor.launch', services: { vmm: 9 }, msg: 'x' }),
      at('00.412', { event: 'ready', condition: 'QMP greeting on /run/q.sock', ms: 412, notified: true, msg: 'ready: QMP greeting on /run/q.sock, 412 ms after start; s6 notified' }),
      at('01.000', { state: 'stopped', event: 'xstate.done.actor.cleanup', outcome: 'stopped', services: {}, msg: 'x' }),
      at('01.001', { outcome: 'stopped', exitCode: 0, errors: [], msg: 'exit 0: stopped' }),
      at('01.050', { event: 'finish', runExitCode: 0, exitCode: 0, removed: [], msg: 'finish: run exited 0; nothing left behind' }),
      at('03.000', { state: 'setup.setupNamespaces', event: 'xstate.init', services: {}, msg: 'x' }),
      at('03.010', { level: 'error', state: 'teardown.kill', event: 'xstate.error.actor.mount', reason: 'mount failed', services: {}, msg: 'x' }),
      at('03.020', { state: 'failed', event: 'xstate.done.actor.cleanup', outcome: 'setupFailed', services: {}, msg: 'x' }),
      at('03.021', { level: 'error', outcome: 'setupFailed', exitCode: 111, errors: ['mount failed'], msg: 'exit 111' }),
      at('03.060', { level: 'error', event: 'finish', runExitCode: 111, exitCode: 1, removed: [], msg: 'finish: run exited 111' }),
    ].join('\n');
    const runs = parsePinoLog(text);
    expect(runs.map((r) => [r.vm, r.records.map((x) => x.state), r.records[0]!.time])).toEqual([
      ['a', ['setup.setupNamespaces', 'running', 'stopped'], '2026-01-01T00:00:00.000Z'],
      ['a', ['setup.setupNamespaces', 'teardown.kill', 'failed'], '2026-01-01T00:00:03.000Z'],
    ]);
    expect(runs[0]!.end).toEqual({ state: 'stopped', outcome: 'stopped', exitCode: 0, errors: [] });
    expect(runs[1]!.end).toEqual({ state: 'failed', outcome: 'setupFailed', exitCode: 111, errors: ['mount failed'] });
    expect(runs[1]!.records.map((r) => r.at)).toEqual([0, 10, 20]);
    expect(runs[0]!.notes).toEqual([
      { at: 412, after: 1, kind: 'ready', text: readyText('QMP greeting on /run/q.sock', 412) },
      { at: 1001, after: 2, kind: 'end', text: 'exit 0: stopped' },
      { at: 1050, after: 2, kind: 'log', text: 'finish: run exited 0; nothing left behind' },
    ]);
    expect(readyText('QMP greeting on /run/q.sock', 412)).toBe('ready: QMP greeting on /run/q.sock, 412 ms after start');
    expect(runs[1]!.notes.map((n) => n.kind)).toEqual(['end', 'error']);
  });

  it('refuses files that are neither', () => {
    expect(() => parseRecording('')).toThrow(/empty/);
    expect(() => parseRecording('hello world\n')).toThrow(/not a recorded run/);
    expect(() => parseRecording('{"level":"info","msg":"no states"}\n')).toThrow(/no state changes/);
  });
});
