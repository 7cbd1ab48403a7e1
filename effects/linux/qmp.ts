// A minimal QMP client: greeting → qmp_capabilities → one command. Enough to ask QEMU to power down.

import { connect } from 'node:net';
import { EffectError } from '../port.js';
import { vetVmmSocket } from './vmmSocket.js';

/**
 * Send one QMP command. A socket that exists but does not accept yet (ECONNREFUSED: bound, not yet
 * listening; ENOENT: not created yet) is retried every 50 ms until `signal` aborts. The same errnos
 * come from a QEMU that is exiting (its socket closed or removed): then the machine aborts the
 * request when the vmm's exit arrives, and it settles at once (ECANCELED), never sending later.
 */
export async function qmpCommand(path: string, command: string, signal: AbortSignal, owner: number): Promise<void> {
  for (;;) {
    try {
      return await qmpOnce(path, command, signal, owner);
    } catch (e) {
      const errno = e instanceof EffectError ? e.errno : '';
      if ((errno !== 'ECONNREFUSED' && errno !== 'ENOENT') || signal.aborted) throw e;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, 50);
        signal.addEventListener('abort', done, { once: true });
      });
    }
  }
}

async function qmpOnce(path: string, command: string, signal: AbortSignal, owner: number): Promise<void> {
  if (signal.aborted) throw new EffectError('requestStop', 'ECANCELED', `QMP ${path}: aborted`);
  // The vmm's socket, as itself: never a symlink the vmm planted (vmmSocket.ts).
  const vetted = vetVmmSocket('requestStop', path, owner);
  const sock = connect({ path: vetted.path });
  sock.once('connect', () => vetted.close());
  sock.once('close', () => vetted.close());
  let onAbort = (): void => undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      let stage: 'greeting' | 'capabilities' | 'command' = 'greeting';
      const fail = (errno: string, why: string) => reject(new EffectError('requestStop', errno, `QMP ${path}: ${why}`));
      onAbort = () => fail('ECANCELED', 'aborted');
      signal.addEventListener('abort', onAbort, { once: true });
      sock.once('error', (e: NodeJS.ErrnoException) => fail(e.code ?? 'EIO', e.message));
      sock.once('close', () => fail('ECONNRESET', `connection closed during ${stage}`));
      sock.setEncoding('utf8');
      sock.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            return fail('EPROTO', `not JSON: ${line.slice(0, 80)}`);
          }
          if ('event' in msg) continue;
          if ('error' in msg) return fail('EPROTO', `${stage} failed: ${JSON.stringify(msg.error)}`);
          if (stage === 'greeting') {
            if (!('QMP' in msg)) return fail('EPROTO', 'no QMP greeting');
            stage = 'capabilities';
            sock.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
          } else if (stage === 'capabilities' && 'return' in msg) {
            stage = 'command';
            sock.write(JSON.stringify({ execute: command }) + '\n');
          } else if (stage === 'command' && 'return' in msg) {
            signal.removeEventListener('abort', onAbort);
            sock.removeAllListeners('close');
            resolve();
          }
        }
      });
    });
  } finally {
    // Every attempt of a retried request adds its listener: remove it, whatever the outcome.
    signal.removeEventListener('abort', onAbort);
    sock.destroy();
  }
}
