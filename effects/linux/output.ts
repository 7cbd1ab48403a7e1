// Services' output as the manager forwards it: the init's `out`/`outdrop` messages, rate-bounded
// per service (plan/output.ts), for the log (s6/run.ts) and the tests. A flood costs the log one
// `dropped` record per second, not a line per line.

import type { OutputStream } from './protocol.js';

export type ServiceOutput =
  | { type: 'line'; service: string; stream: OutputStream; line: string; cut: boolean }
  /** rate: over linesPerSecond in one second; socket: the init could not send them (its buffer to the manager was full). */
  | { type: 'dropped'; service: string; count: number; reason: 'rate' | 'socket'; stream?: OutputStream };

interface Window {
  start: number;
  lines: number;
  dropped: number;
  timer: ReturnType<typeof setTimeout> | null;
}

export interface OutputLimiter {
  line(service: string, stream: OutputStream, line: string, cut: boolean): void;
  socketDropped(service: string, stream: OutputStream, count: number): void;
  /** Report what is still counted and stop the timers. */
  close(): void;
}

/** At most linesPerSecond lines per service in each one-second window; the excess is reported once, when its window ends. */
export function outputLimiter(linesPerSecond: number, emit: (o: ServiceOutput) => void, now: () => number = Date.now): OutputLimiter {
  const windows = new Map<string, Window>();
  const flush = (service: string, w: Window) => {
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    if (w.dropped > 0) emit({ type: 'dropped', service, count: w.dropped, reason: 'rate' });
    w.dropped = 0;
  };
  return {
    line(service, stream, line, cut) {
      const t = now();
      let w = windows.get(service);
      if (!w) windows.set(service, (w = { start: t, lines: 0, dropped: 0, timer: null }));
      if (t - w.start >= 1000) {
        flush(service, w);
        w.start = t;
        w.lines = 0;
      }
      if (w.lines < linesPerSecond) {
        w.lines++;
        emit({ type: 'line', service, stream, line, cut });
        return;
      }
      w.dropped++;
      // Reported when the window ends even if the service then falls silent.
      if (!w.timer) {
        const win = w;
        win.timer = setTimeout(() => flush(service, win), Math.max(0, win.start + 1000 - t));
        win.timer.unref?.();
      }
    },
    socketDropped(service, stream, count) {
      emit({ type: 'dropped', service, stream, count, reason: 'socket' });
    },
    close() {
      for (const [service, w] of windows) flush(service, w);
    },
  };
}
