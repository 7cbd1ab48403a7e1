// pino JSON logs for s6-log: one line per state change, each with the VM's name, and a reason on
// every failure. Synchronous writes so a log line is out before the process exits.

import { pino } from 'pino';
import type { TransitionRecord } from '../machines/observe.js';

export type Logger = pino.Logger;

export function createLogger(vm: string, fd = 1): Logger {
  return pino(
    { base: { vm }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ fd, sync: true }),
  );
}

/** Log one transition record; failures (a grown error count) at error level. */
export function logTransition(log: Logger, r: TransitionRecord, prevErrors: number, extra: object = {}): void {
  const rec = { state: r.state, event: r.event, reason: r.reason ?? undefined, outcome: r.outcome ?? undefined, services: r.services, ...extra };
  if (r.errors > prevErrors) log.error(rec, `${r.state}: ${r.reason}`);
  else log.info(rec, r.reason ? `${r.state}: ${r.reason}` : r.state);
}
