// The manager's side of the vmsandbox-init control protocol (documented in native/vmsandbox-init.c
// and docs/linux-backend.md): one message per line, space-separated percent-encoded tokens.

import { Socket } from 'node:net';
import { EffectError } from '../port.js';
import { errnoName } from './native.js';

/** The characters a token carries as they are; every other byte is %XX (the C side decodes both). */
const SAFE = 'A-Za-z0-9._/:=,+@-';
const SAFE_CHAR = new RegExp(`^[${SAFE}]$`);
/** A token of safe characters only: as it is (most of a plan's paths, names and numbers). */
const ALL_SAFE = new RegExp(`^[${SAFE}]+$`);
/** A received token with no escape and no byte above ASCII: the text itself. */
const NOTHING_ESCAPED = /^[^%\x80-\xff]*$/;

/** native/vmsandbox-init.c: MAX_LINE (the newline included) and MAX_TOKENS. */
export const MAX_REQUEST_BYTES = 65536;
export const MAX_REQUEST_TOKENS = 4096;

// Both run for every token of every request and reply (a spawn carries hundreds, a service's output
// line is one): a whole-token test first, so that the byte loop runs only where there is something
// to escape (test/linux/plan.test.ts checks them against the byte loops alone).
export function encodeToken(s: string): string {
  if (s === '') return '~';
  if (ALL_SAFE.test(s)) return s;
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    if (byte === 0) throw new EffectError('protocol', 'EINVAL', `NUL byte in ${JSON.stringify(s)}`);
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && SAFE_CHAR.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeToken(t: string): string {
  if (t === '~') return '';
  if (NOTHING_ESCAPED.test(t)) return t;
  const bytes: number[] = [];
  for (let i = 0; i < t.length; i++) {
    if (t[i] === '%') {
      bytes.push(parseInt(t.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(t.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * An `err <id> <errno> <step>` reply: the init names only the step that failed (no policy in C);
 * the backend turns it into a message naming the config object (explain.ts).
 */
export class InitStepError extends EffectError {
  constructor(
    what: string,
    errno: string,
    readonly step: string,
  ) {
    super(what, errno, `${what} failed in the sandbox init at step ${step}`);
  }
}

export type InitMessage =
  | { type: 'hello'; version: number; pid: number }
  | { type: 'exit'; service: string; pid: number; code: number | null; signo: number | null }
  /** A line a service wrote (its newline removed); cut: longer than the spawn's `outline=`, its rest dropped. */
  | { type: 'out'; service: string; stream: OutputStream; line: string; cut: boolean }
  /** Lines the init dropped because the control socket's buffer was full (it never waits on output). */
  | { type: 'outdrop'; service: string; stream: OutputStream; count: number }
  /** Lines the init dropped because the service wrote more than the spawn's `outrate=` in one second. */
  | { type: 'outlimit'; service: string; count: number };

export type OutputStream = 'stdout' | 'stderr';

interface Pending {
  resolve: (fields: string[]) => void;
  reject: (err: Error) => void;
  what: string;
}

/** Requests to the init, answered in order; unsolicited messages go to onMessage. */
export class InitClient {
  private readonly sock: Socket;
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedErr: Error | null = null;
  readonly closed: Promise<void>;

  constructor(
    fd: number,
    private readonly onMessage: (m: InitMessage) => void,
  ) {
    this.sock = new Socket({ fd, readable: true, writable: true });
    this.sock.setEncoding('latin1');
    this.closed = new Promise((resolve) => {
      const done = (why: string) => {
        if (!this.closedErr) this.closedErr = new EffectError('init', 'EPIPE', `control socket closed (${why}): the sandbox init is gone`);
        for (const p of this.pending.values()) p.reject(this.closedErr);
        this.pending.clear();
        resolve();
      };
      this.sock.on('data', (chunk: string) => this.onData(chunk));
      this.sock.on('end', () => done('EOF'));
      this.sock.on('close', () => done('close'));
      this.sock.on('error', (e) => done(e.message));
    });
  }

  get isClosed(): boolean {
    return this.closedErr !== null;
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    // One slice of the rest per chunk, not per line: a chunk of service output holds thousands.
    let start = 0;
    let nl: number;
    while ((nl = this.buf.indexOf('\n', start)) >= 0) {
      const line = this.buf.slice(start, nl);
      start = nl + 1;
      this.onLine(line.split(' ').map(decodeToken));
    }
    if (start > 0) this.buf = this.buf.slice(start);
  }

  private onLine(t: string[]): void {
    const [kind, a, b, c, d] = t;
    if (kind === 'ok' || kind === 'err') {
      const p = this.pending.get(a ?? '');
      if (!p) return;
      this.pending.delete(a!);
      if (kind === 'ok') p.resolve(t.slice(2));
      else p.reject(new InitStepError(p.what, errnoName(Number(b)), c ?? ''));
    } else if (kind === 'hello') {
      this.onMessage({ type: 'hello', version: Number(a), pid: Number(b) });
    } else if (kind === 'out' && (b === 'stdout' || b === 'stderr')) {
      this.onMessage({ type: 'out', service: a ?? '', stream: b, cut: c === 'cut', line: d ?? '' });
    } else if (kind === 'outdrop' && (b === 'stdout' || b === 'stderr')) {
      this.onMessage({ type: 'outdrop', service: a ?? '', stream: b, count: Number(c) });
    } else if (kind === 'outlimit') {
      this.onMessage({ type: 'outlimit', service: a ?? '', count: Number(b) });
    } else if (kind === 'exit') {
      const n = Number(d);
      this.onMessage({
        type: 'exit',
        service: a ?? '',
        pid: Number(b),
        code: c === 'exited' ? n : null,
        signo: c === 'killed' ? n : null,
      });
    }
  }

  /**
   * Send several requests in one write (the socket corked meanwhile): a pipelined plan reaches the
   * init in one go instead of one syscall per line. `send` makes the requests; its result is returned.
   */
  batch<T>(send: () => T): T {
    this.sock.cork();
    try {
      return send();
    } finally {
      this.sock.uncork();
    }
  }

  /** Send a request; resolves with the reply's extra fields. */
  request(what: string, verb: string, ...args: string[]): Promise<string[]> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = String(this.nextId++);
    const line = [verb, id, ...args].map(encodeToken).join(' ') + '\n';
    // The init reads a line into a fixed buffer and splits it into a fixed number of tokens:
    // refuse here, with the reason, what it could only drop.
    const tokens = args.length + 2;
    if (Buffer.byteLength(line) > MAX_REQUEST_BYTES || tokens > MAX_REQUEST_TOKENS) {
      return Promise.reject(
        new EffectError(
          what,
          'E2BIG',
          `the request to the sandbox init is ${Buffer.byteLength(line)} bytes in ${tokens} tokens, over its ` +
            `${MAX_REQUEST_BYTES} bytes / ${MAX_REQUEST_TOKENS} tokens (shorten the service's argv, env, Landlock paths or sockets)`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, what });
      this.sock.write(line);
    });
  }

  destroy(): void {
    this.sock.destroy();
  }
}
