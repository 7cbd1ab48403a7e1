// Watching the supervisor (s6-supervise) without races, for `vmsandbox run`.
//
// Two mechanisms, both ending in PARENT_DIED:
// - PR_SET_PDEATHSIG on the manager (the Linux backend's `parentDeathSignal`): the kernel signals
//   the manager when its parent thread exits. Instant, but only for the direct parent, and lost
//   if the parent died before the prctl.
// - a pidfd of the supervisor, opened once at startup and verified against /proc: pidfds cannot
//   be recycled, so once it is held, "readable" (POLLIN) means exactly "that process exited".
//   It covers the parent-died-before-prctl race (checked once, at startup) and a supervisor that
//   is not the direct parent (`--supervisor-pid` naming another process). Only in that last case
//   is it watched after startup: Node cannot put an arbitrary fd into its event loop (a blocking
//   poll through ffi-rs would hold a libuv pool thread and keep the process alive), so it is
//   polled (poll(2) with timeout 0, about 50 µs) every `intervalMs`. When the supervisor is the
//   parent and the parent-death signal is armed (`parentDeathSignal`), the kernel's signal is the
//   event and nothing is polled: s6's case, where the run script execs the manager.

import { readFileSync } from 'node:fs';
import { closeFd, pidfdOpen, pollReadable } from '../effects/linux/native.js';

export interface Supervisor {
  pid: number;
  comm: string;
  /** How it was chosen: the manager's parent at startup, or --supervisor-pid. */
  source: 'parent' | 'argument';
  /** Stop polling and close the pidfd. */
  stop(): void;
}

interface Stat {
  comm: string;
  ppid: number;
  /** Start time in clock ticks after boot (field 22). */
  start: number;
}

function readStat(pid: number | 'self'): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ppid ...": comm may contain spaces and parentheses; it ends at the last ")".
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const rest = text.slice(close + 2).split(' ');
  return { comm, ppid: Number(rest[1]), start: Number(rest[19]) };
}

export class SupervisorError extends Error {}

/**
 * Open and verify the supervisor, then watch it. `onDeath` is called at most once (possibly right
 * away, in a microtask, if the supervisor is already gone). Throws SupervisorError when an explicit
 * pid cannot be this manager's supervisor (it started after the manager).
 */
export function watchSupervisor(opts: {
  pid?: number;
  onDeath: (why: string) => void;
  intervalMs?: number;
  /**
   * PR_SET_PDEATHSIG is set on this process (before this call): the kernel signals it when its
   * parent exits, so a supervisor that is the parent needs no polling after the startup check.
   */
  parentDeathSignal?: boolean;
}): Supervisor {
  const explicit = opts.pid !== undefined;
  const pid = opts.pid ?? process.ppid;
  let fired = false;
  const die = (why: string) => {
    if (fired) return;
    fired = true;
    stop();
    queueMicrotask(() => opts.onDeath(why));
  };
  let pidfd: number | null = null;
  let timer: NodeJS.Timeout | null = null;
  const stop = () => {
    if (timer) clearInterval(timer);
    timer = null;
    if (pidfd !== null) closeFd(pidfd);
    pidfd = null;
  };

  try {
    pidfd = pidfdOpen(pid);
  } catch {
    die(`supervisor (pid ${pid}) was gone at startup`);
    return { pid, comm: '?', source: explicit ? 'argument' : 'parent', stop };
  }
  const stat = readStat(pid);
  const self = readStat('self');
  // The pidfd was opened before the reads: if it is still not readable now, the stat we read
  // belongs to the process the pidfd holds (its pid cannot have been reused in between).
  if (!stat || pollReadable(pidfd)) {
    die(`supervisor (pid ${pid}) exited during startup`);
  } else if (!explicit && process.ppid !== pid) {
    // Re-parented between reading ppid and opening the pidfd: the pidfd may name another process.
    die(`parent (pid ${pid}) exited before the manager started watching it`);
  } else if (explicit && self && stat.start > self.start) {
    stop();
    throw new SupervisorError(
      `--supervisor-pid ${pid} (${stat.comm}) started after this manager: it cannot be its supervisor`,
    );
  }
  // The signal was armed before the checks above, so a parent that is still ours now will signal.
  const signalled = opts.parentDeathSignal === true && pid === process.ppid;
  if (!fired && !signalled) {
    timer = setInterval(() => {
      if (pidfd !== null && pollReadable(pidfd)) die(`supervisor (pid ${pid}, ${stat?.comm}) exited`);
    }, opts.intervalMs ?? 100);
    timer.unref();
  }
  return { pid, comm: stat?.comm ?? '?', source: explicit ? 'argument' : 'parent', stop };
}
