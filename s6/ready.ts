// The vmm's readiness condition (config `ready`), probed by `vmsandbox run` once every service is
// launched. Ready means: s6 may start what depends on this VM.

import { stat } from 'node:fs/promises';
import { connect } from 'node:net';
import type { ReadyCondition } from '../config/types.js';
import { vetVmmSocket, type VettedSocket } from '../effects/linux/vmmSocket.js';

const POLL_MS = 20;

export function describeReady(c: ReadyCondition): string {
  if (c === 'immediate') return 'immediate (all services launched)';
  if ('socket' in c) return `socket ${c.socket} exists`;
  return `QMP greeting on ${c.qmp}`;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

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

/** Resolve true once the condition holds, false if `signal` aborts first. */
export async function waitReady(c: ReadyCondition, signal: AbortSignal, owner: number): Promise<boolean> {
  if (c === 'immediate') return !signal.aborted;
  while (!signal.aborted) {
    if ('socket' in c) {
      if (await stat(c.socket).then(() => true, () => false)) return !signal.aborted;
    } else if (await qmpGreeting(c.qmp, signal, owner)) {
      return !signal.aborted;
    }
    await sleep(POLL_MS, signal);
  }
  return false;
}
