// Services' output as the manager forwards it: the init's `out`/`outdrop`/`outlimit` messages, for
// the log (s6/run.ts), the status socket (inspect) and the tests. The init bounds each service's
// lines per second at the source (the spawn's `outrate=`, plan/output.ts), so a flood costs the
// manager at most that many lines a second to parse and one `dropped` record per second; the
// limiter here is a second bound, for an init that was not given a rate.

import type { OutputStream } from './protocol.js';

export type ServiceOutput =
  | { type: 'line'; service: string; stream: OutputStream; line: string; cut: boolean }
  /** rate: over the lines per second (counted by the init, or by the limiter here); socket: the init could not send them (its buffer to the manager was full). */
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
  /** The init's count of lines over the service's rate (`outlimit`), reported as it comes. */
  rateDropped(service: string, count: number): void;
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
    rateDropped(service, count) {
      emit({ type: 'dropped', service, count, reason: 'rate' });
    },
    close() {
      for (const [service, w] of windows) flush(service, w);
    },
  };
}
