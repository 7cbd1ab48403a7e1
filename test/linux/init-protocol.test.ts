// The sandbox init's control protocol under bad input: every request with an id gets exactly one
// reply, a request too long for its buffer is answered and dropped, and PID 1 lives on through all
// of it (its death would end the VM). The manager's side refuses what the init could only drop.

import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeFd, cloneInit, landlockAbi, nativeBuildDir, pidfdSendSignal, signalNumber, socketpair, waitPidfd } from '../../effects/linux/native.js';
import { InitClient, MAX_REQUEST_BYTES } from '../../effects/linux/protocol.js';
import { EffectError } from '../../effects/port.js';
import { planServiceLandlock } from '../../plan/landlock.js';
import { ensureNative } from './helpers/native.js';
import { landlockSkipReason, skipReason } from './helpers/skip.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/init-protocol skipped: ${skip}`);
const skipLandlock = landlockSkipReason(1);

interface Init {
  sock: Socket;
  pidfd: number;
  lines: string[];
  next(): Promise<string>;
}

/** An init in its own PID + mount namespace (no cgroup), spoken to over a raw socket. */
async function startInit(): Promise<Init> {
  const [mine, theirs] = socketpair();
  const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1, { clone: ['ipc', 'net'], loopback: true });
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
      const line = buf.slice(0, nl);
      // A service's output (`out`, `outdrop`, `outlimit`: test/linux/service-output.test.ts) is not a reply.
      if (!/^out(drop|limit)? /.test(line)) lines.push(line);
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

  it('a malformed spawn field gets an error naming it (Landlock masks, mount flags, rules, sockets)', async () => {
    init = await startInit();
    const cases: Array<[string, string]> = [
      ['llfs=ffff rule=zz,/usr', 'rule'], // not hex
      ['llfs=ffff rule=d,usr', 'rule'], // not an absolute path
      ['llfs=ffff rule=d', 'rule'], // no path
      ['llfs=ffff rule=0,/usr', 'rule'], // grants nothing
      ['llfs=1fff rule=ffff,/usr', 'rule'], // a right the ruleset does not handle
      ['rule=d,/usr', 'llfs'], // a rule without a ruleset
      ['llscope=3', 'llfs'],
      ['llfs=-1', 'llfs'], // a sign is not a mask (strtoull would make it every bit)
      ['llfs=ffff llfs=ffff', 'llfs'], // twice
      ['llfs=ffff llflags=100000000', 'llflags'], // restrict_self's flags are 32 bits
      ['llfs=ffff llfile=', 'llfile'],
      ['landlock=7', 'landlock'], // the old ABI field: the init no longer derives rights from an ABI
      ['llfs=ffff llnet=0', 'llnet'], // TCP handled by nothing
      ['llfs=ffff llnet=3 port=3,70000', 'port'], // not a TCP port
      ['llfs=ffff llnet=1 port=2,443', 'port'], // connect granted where only bind is handled
      ['llfs=ffff port=2,443', 'port'], // a port rule without handled TCP rights
      ['port=2,443', 'llfs'], // a port rule without a ruleset
      // Mount policy, also the plan's: flags and attributes the init knows, and only those.
      ['tmp=mode=1777,size=8M', 'tmp'], // no flags
      ['tmp=20,mode=1777', 'tmp'], // MS_REMOUNT is not a tmpfs flag of a request
      ['shm=6,size=1M shm=6,size=1M', 'shm'], // twice
      ['storagebind=1,1', 'storagebind'], // read-only set and cleared
      ['storagebind=100,0', 'storagebind'], // an attribute it does not know
      ['storagebind=6,1 storagehide=f,mode=000', 'storagehide'], // bound and hidden
      ['storage=rw', 'storage'], // the old access field: the init no longer maps access to flags
      ['listen=3,600,0,0,/run/x.sock', 'listen'], // backlog 0
      ['listen=3,600,0,/run/x.sock', 'listen'], // no backlog
      // seccomp rules, by name: a name libseccomp does not know, or not a syscall of this architecture, denies nothing.
      ['sc=unshar,1', 'sc'], // unknown name
      ['sc=socketcall,1', 'sc'], // a syscall of other architectures only (x86_64 has none)
      ['sc=keyctl', 'sc'], // no errno
      ['sc=keyctl,0', 'sc'], // errno 0 would be "success"
      ['sc=keyctl,4096', 'sc'], // past MAX_ERRNO
      ['sc=prlimit64,1,6,ne,0', 'sc'], // argument index past 5
      ['sc=prlimit64,1,0,lt,0', 'sc'], // an operator it does not know
      ['sc=clone,1,0,me,10000000', 'sc'], // masked-equal without a value
      ['sc=clone,1,0,me,1,2', 'sc'], // a value outside the mask never matches
      ['sc=clone,1,0,ne,0,0', 'sc'], // ne takes one value
    ];
    let id = 10;
    for (const [fields, step] of cases) {
      init.sock.write(`spawn ${id} name=s ${fields} arg=/bin/true\n`);
      expect(await init.next(), fields).toBe(`err ${id} 22 ${step}`);
      id++;
    }
    init.sock.write('ping 99\n');
    expect(await init.next()).toBe('ok 99');
    expect(waitPidfd(init.pidfd), 'PID 1 is still running').toBeNull();
  });

  it.skipIf(skipLandlock)('applies the Landlock masks it is given, as given', async () => {
    init = await startInit();
    const ll = planServiceLandlock(landlockAbi(), { read: ['/usr'], write: [] })!;
    const hex = (n: number) => n.toString(16);
    const ruleset = (over: { scope?: string; file?: string } = {}) =>
      `llfs=${hex(ll.handledFs)} llscope=${over.scope ?? hex(ll.scoped)} llflags=${hex(ll.restrictFlags)} llfile=${over.file ?? hex(ll.fileAccess)}`;
    const usr = ll.rules.map((r) => `rule=${hex(r.access)},${r.path}`).join(' ');
    const read = hex(ll.rules[0]!.access);
    let id = 20;
    /** Spawn cmp(1) on /etc/hostname under `fields`: its exit status, or the init's error. */
    const cmp = async (fields: string) => {
      const n = id++;
      init!.sock.write(`spawn ${n} name=cmp${n} ${fields} arg=/usr/bin/cmp arg=/etc/hostname arg=/etc/hostname\n`);
      const reply = await init!.next();
      const ok = new RegExp(`^ok ${n} (\\d+)$`).exec(reply);
      if (!ok) return reply;
      const exit = await init!.next();
      expect(exit).toMatch(new RegExp(`^exit cmp${n} ${ok[1]} exited \\d+$`));
      return `exited ${exit.split(' ').pop()}`;
    };
    // Control: the same request without Landlock reads the file.
    expect(await cmp('')).toBe('exited 0');
    // Only /usr is granted: /etc/hostname is denied (cmp exits 2 on an open error).
    expect(await cmp(`${ruleset()} ${usr}`)).toBe('exited 2');
    // No scope: the ruleset attr passed only up to handled_access_fs, which every ABI takes.
    expect(await cmp(`${ruleset({ scope: '0' })} ${usr}`)).toBe('exited 2');
    // A read rule on /etc grants it.
    expect(await cmp(`${ruleset()} ${usr} rule=${read},/etc`)).toBe('exited 0');
    // A rule on a file keeps llfile's rights of its mask: all handled rights on /etc/hostname work
    // with the plan's file mask, and the kernel refuses them (EINVAL) when llfile lets them all through.
    expect(await cmp(`${ruleset()} ${usr} rule=${hex(ll.handledFs)},/etc/hostname`)).toBe('exited 0');
    expect(await cmp(`${ruleset({ file: hex(ll.handledFs) })} ${usr} rule=${hex(ll.handledFs)},/etc/hostname`)).toMatch(/^err \d+ 22 landlock-rule$/);
    // The scope mask goes to the kernel as it is: a scope bit no ABI has is refused there
    // (EINVAL from ABI 6, E2BIG before: an older kernel does not know the field).
    expect(await cmp(`${ruleset({ scope: '80' })} ${usr}`)).toMatch(/^err \d+ (22|7) landlock-create$/);
    expect(waitPidfd(init.pidfd), 'PID 1 is still running').toBeNull();
  });

  it('the manager refuses a request the init could not take, before sending it', async () => {
    const [mine, theirs] = socketpair();
    const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1, { clone: ['ipc', 'net'], loopback: true });
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
