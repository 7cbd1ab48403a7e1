// One owner per VM: the rules every backend's VM lock follows, and the decisions built on them.
//
// A VM's identity is its name (which also names its cgroup, <parent>/<name>) and its runtime
// directory. A manager owns the VM while it holds the VM's lock; it takes the lock before it
// creates, changes, kills or removes anything, and holds it for its whole life. The lock's record
// carries a journal of what runs of this VM created and have not removed yet: teardown removes
// exactly that, and a journal left by a dead owner is how stale state is recognised (the lock is
// free, the journal is not empty), never by the mere presence of files.
//
// Backends implement OwnershipPort: the Linux one with flock(2) on files in a root-only directory
// (effects/linux/owner.ts), the simulator with a table in its model kernel. Everything that decides
// (wait for an owner that is going away, refuse, what to say) is here, once.

import type { VmConfig } from '../config/types.js';
import { EXIT_CODES } from '../machines/outcome.js';

/** What runs of a VM created and have not removed yet, by path. */
export interface Journal {
  /** The VM's cgroup directory (<cgroup2 mount>/<parent>/<name>), or null. */
  cgroup: string | null;
  /**
   * The runtime directory, or null. A run only uses a runtime directory it created (one that
   * exists and is not journalled is refused), so it removes it whole.
   */
  runtimeDir: string | null;
}

export const emptyJournal = (): Journal => ({ cgroup: null, runtimeDir: null });

export function journalIsEmpty(j: Journal): boolean {
  return j.cgroup === null && j.runtimeDir === null;
}

export function describeJournal(j: Journal): string[] {
  return [...(j.cgroup ? [`cgroup ${j.cgroup}`] : []), ...(j.runtimeDir ? [`runtime dir ${j.runtimeDir}`] : [])];
}

export type Phase = 'starting' | 'running' | 'stopping' | 'ended' | 'finish';

/**
 * The phase a manager's record shows while its machine is in `state` (a transition record's state
 * string): 'running' in running, 'stopping' from the first teardown state on (its teardown is
 * bounded, so a new manager waits for it), else unchanged. cli/run.ts and the simulator use it.
 */
export function phaseOf(state: string, current: Phase): Phase {
  if (state === 'running') return 'running';
  return state.startsWith('gracefulStop') || state.startsWith('teardown') ? 'stopping' : current;
}

/** What the holder of a VM's lock says about itself (readable by anyone who fails to take it). */
export interface OwnerRecord {
  vm: string;
  /** The owning process (a manager, or `vmsandbox finish`). */
  pid: number;
  /** When it took the lock (ms since the epoch, or virtual ms in the simulator). */
  since: number;
  phase: Phase;
  /** While stopping: the time by which the owner's own bounds say it will be gone. */
  stopBy: number | null;
  /** How the last run ended, once it has (phase 'ended'). */
  exitCode: number | null;
  endedAt: number | null;
  journal: Journal;
}

/**
 * Run exits `vmsandbox finish` judges by how long the run lasted (a crash soon after the start is a
 * crash loop): a crash, a dead init, a failed teardown, a killed manager (s6's 256).
 */
export const UPTIME_JUDGED_EXITS: ReadonlySet<number> = new Set([
  EXIT_CODES.serviceCrashed, EXIT_CODES.initDied, EXIT_CODES.teardownFailed, 256,
]);

/**
 * Whether a released lock's record still has a reader: a journal names leftovers to remove, or
 * `finish` needs the run's start and end to judge its exit. Otherwise the lock's trace goes with
 * the lock (nothing of a VM stays under /run once it is down and finished).
 */
export function recordWorthKeeping(r: OwnerRecord): boolean {
  return !journalIsEmpty(r.journal) || (r.phase === 'ended' && r.exitCode !== null && UPTIME_JUDGED_EXITS.has(r.exitCode));
}

/** Persistent storage of the journal: the held lock's record, or memory for a lock-less backend. */
export interface JournalStore {
  journal(): Journal;
  /** Persist before the thing is created (so a crash right after leaves it journalled). */
  setJournal(j: Journal): void;
}

export function memoryJournal(initial: Journal = emptyJournal()): JournalStore {
  let j = initial;
  return { journal: () => j, setJournal: (n) => (j = n) };
}

/** A held VM lock. */
export interface VmLock extends JournalStore {
  /** The record the previous owner left (null: none, or unreadable). */
  readonly previous: OwnerRecord | null;
  readonly record: OwnerRecord;
  update(patch: Partial<Omit<OwnerRecord, 'vm' | 'pid' | 'journal'>>): void;
  /** Let the lock go; the record stays only while recordWorthKeeping() says it has a reader. */
  release(): void;
}

export type Claim =
  | { ok: true; lock: VmLock }
  /** `what`: which part of the identity is taken ("vm foo", "runtime dir /run/x"). */
  | { ok: false; what: string; holder: OwnerRecord | null };

export interface OwnershipPort {
  /** Take the VM's lock (name and runtime dir) at once, or say who holds it. Never blocks. */
  tryClaim(config: VmConfig, me: { pid: number; phase: Phase }): Claim;
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** How often a manager waiting for a stopping owner tries again. */
export const CLAIM_RETRY_MS = 50;
/** Allowance past a stopping owner's own bound before it is not waited for any more. */
export const CLAIM_SLACK_MS = 1000;

export function describeHolder(c: { what: string; holder: OwnerRecord | null }, config: VmConfig): string {
  const h = c.holder;
  const who = h ? `manager pid ${h.pid}` : 'manager pid unknown';
  const by = h?.phase === 'finish' ? `\`vmsandbox finish\` (pid ${h.pid})` : who;
  if (c.what === `vm ${config.name}`) {
    if (h?.phase === 'finish') return `vm ${config.name} is being cleaned up by ${by}`;
    return `vm ${config.name} is already running (${who}${h?.phase === 'stopping' ? ', stopping' : ''})`;
  }
  return `${c.what} is in use by ${h ? `vm ${h.vm} (${by})` : 'another vm'}`;
}

/**
 * Take the VM for a manager. An owner that is stopping (its teardown is bounded) is waited for up
 * to its own bound: a supervisor restarted after it died starts a new manager while the old one
 * is still tearing down, and that must not count as a second start. An owner in any other phase
 * is refused at once: the caller exits and touches nothing.
 */
export async function claimVm(
  port: OwnershipPort,
  config: VmConfig,
  me: { pid: number },
  opts: { signal?: AbortSignal; onWait?: (holder: OwnerRecord, untilMs: number) => void } = {},
): Promise<Claim> {
  let told = false;
  let endedSeen: number | null = null;
  for (;;) {
    const c = port.tryClaim(config, { pid: me.pid, phase: 'starting' });
    if (c.ok) return c;
    const h = c.holder;
    // 'ended', or no record at all (its file unlinked): the owner is letting the lock go this instant.
    const releasing = h === null || h.phase === 'ended';
    if (releasing) endedSeen ??= port.now();
    const until = h?.phase === 'stopping' && h.stopBy !== null ? h.stopBy + CLAIM_SLACK_MS : releasing ? endedSeen! + CLAIM_SLACK_MS : null;
    if (until === null || port.now() >= until || opts.signal?.aborted) return c;
    if (!told && h?.phase === 'stopping') {
      told = true;
      opts.onWait?.(h, until - port.now());
    }
    await port.sleep(CLAIM_RETRY_MS, opts.signal);
  }
}
