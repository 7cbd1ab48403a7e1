// Where a manager's start-up goes: the moment each step was reached, in ms since the process
// began (process.uptime(): `main` is when the manager's code is loaded and starts, so it includes
// Node's own boot), then its steps and the machine's states as entered. The "ready" record carries
// them (`startup`), for the operator asking why a VM came up slowly, and for bench:linux.
// (Not performance.now(): its first call loads perf_hooks, 1 ms of every start.)

const marks: Record<string, number> = {};

/** Note that `step` was reached now (the first time only). */
export function mark(step: string): void {
  if (!(step in marks)) marks[step] = Math.round(process.uptime() * 10_000) / 10;
}

/** The steps so far, in the order they were reached. */
export function startupMarks(): Record<string, number> {
  return { ...marks };
}
