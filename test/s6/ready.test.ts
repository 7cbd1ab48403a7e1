// The readiness probe (s6/ready.ts) waits for the vmm's socket without a timer: the socket's
// creation in its directory is what wakes it. These tests freeze the timers (vitest's fake
// setTimeout), so a probe that depended on a timer to look again would never see the socket.

import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { waitReady } from '../../s6/ready.js';

const scratch = mkdtempSync(join(tmpdir(), 'vmsandbox-ready-test-'));
const servers: Server[] = [];
const uid = process.getuid?.() ?? 0;

afterEach(() => {
  vi.useRealTimers();
  for (const s of servers.splice(0)) s.close();
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function listen(path: string, greet: boolean): Promise<Server> {
  const server = createServer((c) => {
    if (greet) c.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

/** Let the probe make its first attempt and settle into its wait (real I/O, no timers). */
const settle = () => new Promise((r) => setImmediate(r)).then(() => new Promise((r) => setImmediate(r)));

describe('waitReady', () => {
  it('socket: wakes when the socket is created, with every timer frozen', async () => {
    const dir = mkdtempSync(join(scratch, 'sock-'));
    const path = join(dir, 'api.sock');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval'] });
    let done: boolean | null = null;
    const p = waitReady({ socket: path }, new AbortController().signal, uid).then((v) => (done = v));
    await settle();
    expect(done).toBe(null);
    await listen(path, false);
    expect(await p).toBe(true);
  });

  it('qmp: wakes when the vmm starts listening, and connects for its greeting, with every timer frozen', async () => {
    const dir = mkdtempSync(join(scratch, 'qmp-'));
    const path = join(dir, 'qmp.sock');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval'] });
    const p = waitReady({ qmp: path }, new AbortController().signal, uid);
    await settle();
    await listen(path, true);
    expect(await p).toBe(true);
  });

  it('an abort ends the wait with false; a socket that never answers is not ready', async () => {
    const dir = mkdtempSync(join(scratch, 'silent-'));
    const path = join(dir, 'qmp.sock');
    await listen(path, false);
    const ac = new AbortController();
    const p = waitReady({ qmp: path }, ac.signal, uid);
    await settle();
    ac.abort();
    expect(await p).toBe(false);
  });

  it('a directory that does not exist yet: looked at again until it does, then the socket is found', async () => {
    const dir = join(scratch, 'later');
    const path = join(dir, 'api.sock');
    const p = waitReady({ socket: path }, AbortSignal.timeout(20_000), uid);
    await settle();
    mkdirSync(dir);
    await listen(path, false);
    expect(await p).toBe(true);
  });

  it('socket: only the vmm\'s own socket counts: not a file, not a link planted at the path, not another uid\'s socket', async () => {
    const dir = mkdtempSync(join(scratch, 'vet-'));
    const path = join(dir, 'api.sock');
    const elsewhere = join(mkdtempSync(join(scratch, 'other-')), 'root.sock');
    await listen(elsewhere, false);
    const notReady = async (why: string, owner = uid) => expect(await waitReady({ socket: path }, AbortSignal.timeout(150), owner), why).toBe(false);
    writeFileSync(path, '');
    await notReady('a regular file');
    rmSync(path);
    symlinkSync(elsewhere, path);
    await notReady('a symlink to a socket elsewhere');
    rmSync(path);
    await listen(path, false);
    await notReady('a socket of another uid than the vmm\'s', uid + 62002);
    // Control: the same socket, its owner being the vmm's uid.
    expect(await waitReady({ socket: path }, AbortSignal.timeout(1000), uid)).toBe(true);
  });

  it('immediate is ready at once, unless aborted', async () => {
    expect(await waitReady('immediate', new AbortController().signal, uid)).toBe(true);
    expect(await waitReady('immediate', AbortSignal.abort(), uid)).toBe(false);
  });
});
