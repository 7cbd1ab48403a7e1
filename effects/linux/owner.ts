// The VM lock on Linux: flock(2) on files in a root-only directory (effects/owner.ts has the rules).
//
// <LOCK_DIR>/vm.<name>.lock         the VM's lock; holds the owner's record and the journal (JSON)
// <LOCK_DIR>/dir.<sha256>.lock      the runtime directory's lock (two configs, one runtime dir)
// <LOCK_DIR>/vm.<name>.failures     `vmsandbox finish`'s count of early failures in a row
// <LOCK_DIR>/vm.<name>.last         how the VM's last run ended (`vmsandbox status`): one small
//                                   file per VM name, replaced by each run; rm it to forget a VM
//
// Why flock: the kernel drops it when the last descriptor of the open file goes, so a SIGKILLed
// manager's lock is free at once, and nothing is ever "stale by guess". Node opens every file
// O_CLOEXEC, so neither the sandbox's init nor a service (both exec'd) inherits it. An owner that
// lets go unlinks its files first (the VM's only while its record has no reader left, see
// recordWorthKeeping), and whoever takes a lock checks that the file is still at the path, so an
// unlink never gives two owners. A SIGKILLed manager's files stay, journal and all, for the next
// owner. The directory is created by root, 0700, and checked: a lock root does not trust is refused.

import { closeSync, constants, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { VmConfig } from '../../config/types.js';
import type { Claim, Journal, OwnerRecord, OwnershipPort, Phase, VmLock } from '../owner.js';
import { emptyJournal, recordWorthKeeping } from '../owner.js';
import { EffectError } from '../port.js';
import { flockExclusive } from './native.js';
import { sha256Hex } from './sha256.js';

export const LOCK_DIR = '/run/vmsandbox-locks';

/** Create (or verify) the lock directory: a real directory, root's, writable by root only. */
export function lockDir(dir = LOCK_DIR): string {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new EffectError('lock', (e as NodeJS.ErrnoException).code ?? 'EIO', `creating ${dir}: ${(e as Error).message}`);
    }
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new EffectError('lock', 'EPERM', `${dir} is not a directory that only root can write (uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}): remove it; vmsandbox recreates it`);
  }
  return dir;
}

export function vmLockPath(name: string, dir = LOCK_DIR): string {
  return join(dir, `vm.${name}.lock`);
}

export function runtimeDirLockPath(runtimeDir: string, dir = LOCK_DIR): string {
  const h = sha256Hex(runtimeDir.replace(/\/+$/, '')).slice(0, 24);
  return join(dir, `dir.${h}.lock`);
}

export function failuresPath(name: string, dir = LOCK_DIR): string {
  return join(dir, `vm.${name}.failures`);
}

export function lastRunPath(name: string, dir = LOCK_DIR): string {
  return join(dir, `vm.${name}.last`);
}

/** How a run ended, as its manager recorded it (`vmsandbox status`). */
export interface LastRun {
  pid: number;
  startedAt: string;
  endedAt: string;
  exitCode: number;
  outcome: string;
  /** The first error, if the run had one. */
  reason: string | null;
}

/**
 * Record how this run ended. A convenience for the operator: a failure is told to `onError` and
 * changes nothing else. Written to a new file and renamed over the old one, in the root-only lock
 * directory (no service can plant a link there), so a reader never sees half a record.
 */
export function writeLastRun(name: string, run: LastRun, onError: (why: string) => void, dir = LOCK_DIR): void {
  const path = lastRunPath(name, dir);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    lockDir(dir);
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, `${JSON.stringify({ vm: name, ...run })}\n`);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    onError(`could not record the last run in ${path}: ${(e as Error).message}`);
  }
}

export function readLastRun(name: string, dir = LOCK_DIR): (LastRun & { vm: string }) | null {
  try {
    const r = JSON.parse(readFileSync(lastRunPath(name, dir), 'utf8')) as LastRun & { vm: string };
    return typeof r === 'object' && r !== null && typeof r.exitCode === 'number' && r.vm === name ? r : null;
  } catch {
    return null;
  }
}

function parseRecord(text: string): OwnerRecord | null {
  try {
    const r = JSON.parse(text) as OwnerRecord;
    if (typeof r !== 'object' || r === null || typeof r.pid !== 'number' || typeof r.vm !== 'string') return null;
    r.journal = { ...emptyJournal(), ...(r.journal ?? {}) };
    return r;
  } catch {
    return null;
  }
}

/** The record in a lock file, or null (none, being rewritten, unreadable). */
export function readRecord(path: string): OwnerRecord | null {
  for (let i = 0; i < 3; i++) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return null;
    }
    const r = parseRecord(text);
    if (r) return r;
    // The owner truncates and rewrites: an empty read may be that moment.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
  }
  return null;
}

interface Held {
  fd: number;
  path: string;
}

/** Is the file open at fd still the one at path? (A releasing owner may have unlinked it.) */
function stillAt(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = lstatSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/**
 * Open (never following a symlink) and flock one lock file; null if another holds it. An owner
 * unlinks its lock file when it lets go (while still holding it): a lock taken on a file that is no
 * longer at the path locks nothing, so it is dropped and the path opened again.
 */
function take(path: string): Held | null {
  for (let attempt = 0; ; attempt++) {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    let held = false;
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.uid !== 0) throw new EffectError('lock', 'EPERM', `${path} is not a regular file of root's: remove it`);
      if (!flockExclusive(fd)) return null;
      if (stillAt(fd, path)) {
        held = true;
        return { fd, path };
      }
      if (attempt >= 10) throw new EffectError('lock', 'EAGAIN', `${path} keeps being replaced while it is being locked`);
    } finally {
      if (!held) closeSync(fd);
    }
  }
}

function write(h: Held, r: unknown): void {
  const text = `${JSON.stringify(r)}\n`;
  ftruncateSync(h.fd, 0);
  writeSync(h.fd, text, 0);
}

export function linuxOwnership(opts: { dir?: string } = {}): OwnershipPort {
  return {
    now: () => Date.now(),
    sleep: (ms, signal) =>
      new Promise((resolve) => {
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      }),
    tryClaim(config: VmConfig, me: { pid: number; phase: Phase }): Claim {
      const dir = lockDir(opts.dir);
      const vmPath = vmLockPath(config.name, dir);
      const vm = take(vmPath);
      if (!vm) return { ok: false, what: `vm ${config.name}`, holder: readRecord(vmPath) };
      const rdPath = runtimeDirLockPath(config.runtimeDir, dir);
      const rd = take(rdPath);
      if (!rd) {
        closeSync(vm.fd);
        return { ok: false, what: `runtime dir ${config.runtimeDir}`, holder: readRecord(rdPath) };
      }
      const previous = parseRecord(readFileSync(vmPath, 'utf8'));
      const record: OwnerRecord = {
        vm: config.name,
        pid: me.pid,
        since: Date.now(),
        phase: me.phase,
        stopBy: null,
        exitCode: null,
        endedAt: null,
        // What the previous owners left stays ours to remove until it is removed.
        journal: previous?.journal ?? emptyJournal(),
      };
      write(vm, record);
      write(rd, { vm: config.name, pid: me.pid, since: record.since, phase: me.phase, journal: emptyJournal() });
      let released = false;
      const lock: VmLock = {
        previous,
        get record() {
          return record;
        },
        journal: () => record.journal,
        setJournal(j: Journal) {
          if (released) throw new EffectError('lock', 'EBADF', `the lock of vm ${config.name} was released`);
          record.journal = j;
          write(vm, record);
        },
        update(patch) {
          if (released) return;
          Object.assign(record, patch);
          write(vm, record);
        },
        release() {
          if (released) return;
          released = true;
          // Unlinked while still held, so a contender can tell (take() re-checks the path).
          if (!recordWorthKeeping(record)) rmSync(vmPath, { force: true });
          rmSync(rdPath, { force: true });
          closeSync(rd.fd);
          closeSync(vm.fd);
        },
      };
      return { ok: true, lock };
    },
  };
}
