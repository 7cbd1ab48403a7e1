// The sandbox init's control protocol under bad input: every request with an id gets exactly one
// reply, a request too long for its buffer is answered and dropped, and PID 1 lives on through all
// of it (its death would end the VM). The manager's side refuses what the init could only drop.

import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeFd, cloneInit, nativeBuildDir, pidfdSendSignal, signalNumber, socketpair, waitPidfd } from '../../effects/linux/native.js';
import { InitClient, MAX_REQUEST_BYTES } from '../../effects/linux/protocol.js';
import { EffectError } from '../../effects/port.js';
import { ensureNative, skipReason } from './helpers.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/init-protocol skipped: ${skip}`);

interface Init {
  sock: Socket;
  pidfd: number;
  lines: string[];
  next(): Promise<string>;
}

/** An init in its own PID + mount namespace (no cgroup), spoken to over a raw socket. */
async function startInit(): Promise<Init> {
  const [mine, theirs] = socketpair();
  const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1);
  closeFd(theirs);
  const sock = new Socket({ fd: mine, readable: true, writable: true });
  sock.setEncoding('latin1');
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  let read = 0;
  sock.on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no line from the init; so far: ${JSON.stringify(lines)}`)), 5000);
      const check = () => {
        if (read < lines.length) {
          clearTimeout(t);
          resolve(lines[read++]!);
        } else waiters.push(check);
      };
      check();
    });
  expect(await next()).toMatch(/^hello 1 1$/);
  return { sock, pidfd, lines, next };
}

describe.skipIf(skip)('the sandbox init under malformed and over-long requests', () => {
  let init: Init | null = null;
  beforeAll(() => ensureNative());
  afterEach(() => {
    const i = init;
    init = null;
    if (!i) return;
    i.sock.destroy();
    try {
      pidfdSendSignal(i.pidfd, signalNumber('SIGKILL'));
      for (let n = 0; n < 200 && !waitPidfd(i.pidfd); n++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    } catch {
      /* already exited and reaped by the test */
    }
    closeFd(i.pidfd);
  });

  it('answers each bad request with an error naming why, drops an over-long one, and keeps serving', async () => {
    init = await startInit();
    const send = (line: string) => init!.sock.write(`${line}\n`);
    send('ping 1');
    expect(await init.next()).toBe('ok 1');
    send('ping 2 %zz'); // not percent-encoding
    expect(await init.next()).toBe('err 2 22 request-token');
    send(['ping', '3', ...Array.from({ length: 5000 }, () => 'x')].join(' ')); // over MAX_TOKENS
    expect(await init.next()).toBe('err 3 7 request-tokens');
    send('frobnicate 4');
    expect(await init.next()).toBe('err 4 38 verb');
    send(`ping 5 ${'y'.repeat(70_000)}`); // longer than the init's line buffer
    expect(await init.next()).toBe('err 5 7 request-length');
    send('ping 6');
    expect(await init.next()).toBe('ok 6');
    expect(waitPidfd(init.pidfd), 'PID 1 is still running').toBeNull();
    // Positive control: EOF on the control socket still ends it (that is how it dies with the manager).
    init.sock.end();
    let gone = null;
    for (let i = 0; i < 200 && !(gone = waitPidfd(init.pidfd)); i++) await new Promise((r) => setTimeout(r, 5));
    expect(gone).toEqual({ code: 0, signal: null });
  });

  it('the manager refuses a request the init could not take, before sending it', async () => {
    const [mine, theirs] = socketpair();
    const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1);
    closeFd(theirs);
    let hello!: () => void;
    const helloP = new Promise<void>((r) => (hello = r));
    const client = new InitClient(mine, (m) => m.type === 'hello' && hello());
    try {
      await helloP;
      const err = await client.request('launch vmm', 'spawn', `arg=${'z'.repeat(MAX_REQUEST_BYTES)}`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EffectError);
      expect((err as EffectError).errno).toBe('E2BIG');
      expect((err as Error).message).toMatch(/over its 65536 bytes \/ 4096 tokens \(shorten the service's argv, env, Landlock paths or sockets\)/);
      // Nothing was sent: the next request is answered as usual.
      expect(await client.request('ping', 'ping')).toEqual([]);
    } finally {
      client.destroy();
      try {
        pidfdSendSignal(pidfd, signalNumber('SIGKILL'));
      } catch {
        /* gone */
      }
      for (let i = 0; i < 200 && !waitPidfd(pidfd); i++) await new Promise((r) => setTimeout(r, 5));
      closeFd(pidfd);
    }
  });
});
