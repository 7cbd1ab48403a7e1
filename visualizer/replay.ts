// Recorded runs for `vmsandbox inspect --replay FILE`: a manager's pino log (JSON lines, as
// cli/log.ts writes them) or a simulator trace (`vmsandbox sim --seed N --trace`), parsed into the
// same StatusRecords the live status socket carries, plus the lines between them as notes.

import { eventLabel } from './graph.js';
import type { ServiceStatus, StatusRecord } from './protocol.js';

export type NoteKind = 'event' | 'ready' | 'kernel' | 'log' | 'error' | 'end' | 'violation';

/**
 * The timeline's words for the VM becoming ready: the same for the manager log's `ready` record and
 * the status socket's READY event (inspect.ts), so a replay and the live view read alike.
 */
export function readyText(condition: unknown, ms: unknown): string {
  const what = typeof condition === 'string' && condition ? condition : 'the ready condition held';
  return typeof ms === 'number' && Number.isFinite(ms) ? `ready: ${what}, ${ms} ms after start` : `ready: ${what}`;
}

/** A timeline line that is not a state change; `after` is the seq of the record it follows (-1: none yet). */
export interface Note {
  at: number;
  after: number;
  kind: NoteKind;
  text: string;
}

export interface Recording {
  vm: string;
  format: 'pino' | 'sim';
  records: StatusRecord[];
  notes: Note[];
  /** The simulator's fault plan, for a sim trace. */
  plan: Record<string, unknown> | null;
  end: { state: string; outcome: string | null; exitCode: number | null; errors: string[] } | null;
}

export type ReplayFormat = 'pino' | 'sim';

const SIM_LINE = /^(\d{6,}) (.*)$/;

export function detectFormat(text: string): ReplayFormat {
  const first = text.split('\n').find((l) => l.trim() !== '');
  if (first === undefined) throw new Error('the file is empty');
  if (/^plan \{/.test(first) || SIM_LINE.test(first)) return 'sim';
  const brace = first.indexOf('{');
  if (brace >= 0) {
    try {
      JSON.parse(first.slice(brace));
      return 'pino';
    } catch {
      /* fall through */
    }
  }
  throw new Error('not a recorded run: expected a vmsandbox pino log (JSON lines) or `vmsandbox sim --trace` output');
}

export function parseRecording(text: string): Recording[] {
  return detectFormat(text) === 'sim' ? [parseSimTrace(text)] : parsePinoLog(text);
}

function servicesFromPids(pids: unknown): ServiceStatus[] {
  if (!pids || typeof pids !== 'object') return [];
  return Object.entries(pids as Record<string, unknown>)
    .filter(([, pid]) => typeof pid === 'number')
    .map(([name, pid]) => ({ name, pid: pid as number, uid: null, gid: null, vmm: false, cgroup: null }));
}

const isError = (level: unknown) => level === 'error' || level === 'fatal' || (typeof level === 'number' && level >= 50);

/**
 * A manager's pino log; one Recording per run of each VM named in it (a run starts at its
 * `xstate.init` record: an s6-log file holds every restart), in order of first appearance.
 */
export function parsePinoLog(text: string): Recording[] {
  type Run = Recording & { t0: number | null; vt0: number | null };
  const runs: Run[] = [];
  const byVm = new Map<string, Run>();
  const newRun = (vm: string): Run => {
    const r: Run = { vm, format: 'pino', records: [], notes: [], plan: null, end: null, t0: null, vt0: null };
    runs.push(r);
    byVm.set(vm, r);
    return r;
  };
  for (const raw of text.split('\n')) {
    const brace = raw.indexOf('{'); // tolerate s6-log's TAI64N prefix
    if (brace < 0) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(raw.slice(brace)) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (!o || typeof o !== 'object') continue;
    const vm = typeof o.vm === 'string' ? o.vm : '(unnamed)';
    let rec = byVm.get(vm) ?? newRun(vm);
    // The same VM started again (s6 restarted it): a run of its own.
    if (o.event === 'xstate.init' && typeof o.state === 'string' && rec.records.length) rec = newRun(vm);
    const wall = typeof o.time === 'string' ? Date.parse(o.time) : typeof o.time === 'number' ? o.time : NaN;
    // Simulated runs (vmsandbox demo) carry their virtual time as vt; prefer it.
    let at = 0;
    if (typeof o.vt === 'number') {
      rec.vt0 ??= o.vt;
      at = o.vt - rec.vt0;
    } else if (!Number.isNaN(wall)) {
      rec.t0 ??= wall;
      at = wall - rec.t0;
    } else if (rec.records.length) {
      at = rec.records[rec.records.length - 1]!.at;
    }
    const time = Number.isNaN(wall) ? new Date(0).toISOString() : new Date(wall).toISOString();
    const msg = typeof o.msg === 'string' ? o.msg : '';
    const after = rec.records.length - 1;
    if (typeof o.state === 'string' && typeof o.event === 'string') {
      const prev = rec.records[rec.records.length - 1];
      const failure = isError(o.level);
      const errors = (prev?.errors ?? 0) + (failure ? 1 : 0);
      rec.records.push({
        seq: rec.records.length,
        time,
        at,
        state: o.state,
        event: o.event,
        label: eventLabel(o.event),
        reason: typeof o.reason === 'string' ? o.reason : null,
        outcome: typeof o.outcome === 'string' ? o.outcome : null,
        errors,
        failure,
        services: servicesFromPids(o.services),
      });
    } else if (o.event === 'ready') {
      // s6/run.ts signalReady: the vmm's ready condition held (live: the READY event).
      rec.notes.push({ at, after, kind: 'ready', text: readyText(o.condition, o.ms) });
    } else if (typeof o.exitCode === 'number' && o.event !== 'finish') {
      // The run's own exit line. (`vmsandbox finish` logs an exitCode too, its own: a note below.)
      const last = rec.records[rec.records.length - 1];
      rec.end = {
        state: last?.state ?? '?',
        outcome: typeof o.outcome === 'string' ? o.outcome : null,
        exitCode: o.exitCode,
        errors: Array.isArray(o.errors) ? o.errors.map(String) : [],
      };
      rec.notes.push({ at, after, kind: 'end', text: msg || `exit ${o.exitCode}` });
    } else {
      const ev = o.event as { type?: unknown } | undefined;
      const kind: NoteKind = isError(o.level) ? 'error' : ev && typeof ev.type === 'string' ? 'event' : 'log';
      rec.notes.push({ at, after, kind, text: msg || JSON.stringify(o) });
    }
  }
  const out = runs.map(({ t0: _t0, vt0: _vt0, ...r }) => r);
  if (!out.some((r) => r.records.length)) throw new Error('no state changes in this log: is it a vmsandbox manager log?');
  return out.filter((r) => r.records.length);
}

/** `vmsandbox sim --seed N --trace` output. */
export function parseSimTrace(text: string): Recording {
  const rec: Recording = { vm: 'simulation', format: 'sim', records: [], notes: [], plan: null, end: null };
  for (const line of text.split('\n')) {
    if (line.startsWith('plan ')) {
      try {
        rec.plan = JSON.parse(line.slice(5)) as Record<string, unknown>;
        if (typeof rec.plan.seed === 'number') rec.vm = `seed ${rec.plan.seed}`;
      } catch {
        /* a plan we cannot read is only context */
      }
      continue;
    }
    const m = SIM_LINE.exec(line);
    if (!m) continue; // "1 passed, 0 failed" and blank lines
    const at = Number(m[1]);
    const body = m[2]!;
    const after = rec.records.length - 1;
    const st = /^state (\S+) <- (\S*)(?: \((.*)\))?$/.exec(body);
    if (st) {
      const event = st[2]!;
      rec.records.push({
        seq: rec.records.length,
        time: new Date(at).toISOString(),
        at,
        state: st[1]!,
        event,
        label: eventLabel(event),
        reason: st[3] ?? null,
        outcome: null,
        errors: 0,
        failure: false,
        services: [],
      });
      continue;
    }
    const end = /^end (\S+) outcome=(\S+) exit=(\d+)(?: errors=(.*))?$/.exec(body);
    if (end) {
      let errors: string[] = [];
      try {
        errors = end[4] ? (JSON.parse(end[4]) as unknown[]).map(String) : [];
      } catch {
        errors = [end[4]!];
      }
      rec.end = { state: end[1]!, outcome: end[2]!, exitCode: Number(end[3]), errors };
      rec.notes.push({ at, after, kind: 'end', text: body });
      continue;
    }
    const kind: NoteKind = body.startsWith('VIOLATION ')
      ? 'violation'
      : /^event [A-Z_]+/.test(body)
        ? 'event'
        : 'kernel';
    rec.notes.push({ at, after, kind, text: body });
  }
  if (!rec.records.length) throw new Error('no state changes in this trace: is it `vmsandbox sim --seed N --trace` output?');
  // The trace names failures only at its end: mark the records whose reason is one of them, and
  // carry the outcome on the final record.
  if (rec.end) {
    const failed = new Set(rec.end.errors);
    let errors = 0;
    for (const r of rec.records) {
      if (r.reason !== null && failed.has(r.reason)) {
        r.failure = true;
        errors++;
        failed.delete(r.reason);
      }
      r.errors = errors;
    }
    rec.records[rec.records.length - 1]!.outcome = rec.end.outcome;
  }
  return rec;
}
