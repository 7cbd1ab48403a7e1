// Turn an actor's inspection stream into one record per state change (or per change of the
// stated reason): what the pino log, the simulator's trace and the visualizer all consume.

import type { InspectionEvent } from 'xstate';
import type { SandboxContext } from './sandbox.js';

export interface TransitionRecord {
  /** Dotted state path, e.g. "setup.mount". */
  state: string;
  /** The event that caused the change (xstate.done.actor.mount, STOP_REQUESTED, xstate.after…). */
  event: string;
  /** Why this change happened, when an operator needs to know (failures always carry one). */
  reason: string | null;
  outcome: string | null;
  /** Failures so far; a record whose count grew is a failure record. */
  errors: number;
  services: Record<string, number>;
}

export function stateString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const [k, v] = Object.entries(value as Record<string, unknown>)[0] ?? ['?', null];
    return v === null || v === undefined ? k : `${k}.${stateString(v)}`;
  }
  return String(value);
}

export function transitionInspector(onRecord: (r: TransitionRecord) => void): (ev: InspectionEvent) => void {
  let last: { state: string; reason: string | null; errors: number } | null = null;
  return (ev) => {
    if (ev.type !== '@xstate.snapshot' || (ev.actorRef as { sessionId?: string }).sessionId !== ev.rootId) return;
    const snap = ev.snapshot as { value?: unknown; context?: SandboxContext };
    const ctx = snap.context;
    if (!ctx || snap.value === undefined) return;
    const state = stateString(snap.value);
    const news = !last || last.reason !== ctx.reason || last.errors !== ctx.errors.length;
    if (last && last.state === state && !news) return;
    last = { state, reason: ctx.reason, errors: ctx.errors.length };
    onRecord({
      state,
      event: ev.event.type,
      // A reason is told once, with the change it explains; later records do not repeat it.
      reason: news ? ctx.reason : null,
      outcome: ctx.outcome,
      errors: ctx.errors.length,
      services: ctx.pids,
    });
  };
}
