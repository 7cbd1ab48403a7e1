// The vmm's readiness condition (config `ready`), probed by `vmsandbox run` once every service is
// launched. Ready means: s6 may start what depends on this VM.

import { lstatSync, watch, type FSWatcher } from 'node:fs';
import { connect } from 'node:net';
import { basename, dirname } from 'node:path';
import type { ReadyCondition } from '../config/types.js';
import { vetVmmSocket, type VettedSocket } from '../effects/linux/vmmSocket.js';

/** Retry interval while the socket exists but does not answer yet, or its directory cannot be watched. */
const POLL_MS = 20;
/**
 * While the socket is absent the probe waits for its directory to change (inotify): this is only
 * the longest wait before looking again anyway.
 */
const ABSENT_RECHECK_MS = 1000;

export function describeReady(c: ReadyCondition): string {
  if (c === 'immediate') return 'immediate (all services launched)';
  if ('socket' in c) return `the vmm's socket ${c.socket} exists`;
  return `QMP greeting on ${c.qmp}`;
}

/** One attempt: connect, read the first line, check it is a QMP greeting. */
function qmpGreeting(path: string, signal: AbortSignal, owner: number): Promise<boolean> {
  // Only the vmm's own socket counts (and root follows no symlink to reach it): vmmSocket.ts.
  let vetted: VettedSocket;
  try {
    vetted = vetVmmSocket('ready', path, owner);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const sock = connect({ path: vetted.path });
    let buf = '';
    let settled = false;
    const end = (ok: boolean) => {
      if (settled) return;
      settled = true;
      vetted.close();
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(ok);
    };
    const onAbort = () => end(false);
    const timer = setTimeout(() => end(false), 1000);
    signal.addEventListener('abort', onAbort, { once: true });
    sock.setEncoding('utf8');
    sock.on('error', () => end(false));
    sock.on('close', () => end(false));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        end('QMP' in (JSON.parse(buf.slice(0, nl)) as object));
      } catch {
        end(false);
      }
    });
  });
}

/**
 * Changes of one path's entry in its directory (inotify through fs.watch): what wakes the probe
 * when the vmm creates its socket, instead of a timer.
 */
class EntryWatch {
  private watcher: FSWatcher | null = null;
  private changed = false;
  private wake: (() => void) | null = null;
  private readonly dir: string;
  private readonly name: string;

  constructor(path: string) {
    this.dir = dirname(path);
    this.name = basename(path);
  }

  /** Watch (if not yet) and forget earlier changes; false when the directory cannot be watched. */
  arm(): boolean {
    this.changed = false;
    if (this.watcher) return true;
    try {
      this.watcher = watch(this.dir, { persistent: false }, (_event, file) => {
        if (file === null || file === this.name) this.notify();
      });
      this.watcher.on('error', () => {
        this.close();
        this.notify();
      });
      return true;
    } catch {
      return false;
    }
  }

  /** Resolve on a change since arm(), after `ms`, or when `signal` aborts, whichever is first. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.changed || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
  }

  private notify(): void {
    this.changed = true;
    this.wake?.();
  }
}

const exists = (path: string) => lstatSync(path, { throwIfNoEntry: false }) !== undefined;

/**
 * The `socket` condition: a socket of the vmm's uid at the path, reached as the QMP probe reaches
 * one (vmmSocket.ts). Not a bare stat(2): root would follow a link the vmm planted there to any path
 * of the host, and count a file that is not the vmm's socket as its readiness.
 */
function vmmSocketExists(path: string, owner: number): boolean {
  try {
    vetVmmSocket('ready', path, owner).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolve true once the condition holds, false if `signal` aborts first. No fixed polling while the
 * vmm has not created its socket yet: the probe waits for the socket's directory to change. Only a
 * socket that exists and does not answer yet (or a directory that cannot be watched) is retried
 * every POLL_MS.
 */
export async function waitReady(c: ReadyCondition, signal: AbortSignal, owner: number): Promise<boolean> {
  if (c === 'immediate') return !signal.aborted;
  const path = 'socket' in c ? c.socket : c.qmp;
  const entry = new EntryWatch(path);
  try {
    while (!signal.aborted) {
      // Armed before the attempt, so a socket created during it wakes the wait below at once.
      const watched = entry.arm();
      if ('socket' in c) {
        if (vmmSocketExists(c.socket, owner)) return !signal.aborted;
      } else if (await qmpGreeting(c.qmp, signal, owner)) {
        return !signal.aborted;
      }
      const absent = !exists(path);
      await entry.wait(watched && absent ? ABSENT_RECHECK_MS : POLL_MS, signal);
    }
    return false;
  } finally {
    entry.close();
  }
}
