// The root manager never follows a path a vmm can change. A compromised vmm owns the directory its
// QMP socket lives in: it replaces the socket with a symlink to another VM's QMP socket, and waits
// for its own stop, when its manager (root) would connect to the path and send system_powerdown,
// to the other VM. Two VMs at once; the control shows the planted symlink does lead, as root, to
// the other VM's QMP. The same with the symlink in place of a directory on the way to the socket,
// the two vmms of one uid (so the socket's owner cannot tell them apart): before the manager walked
// the path component by component, B's stop powered A down.

import { chmodSync, copyFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, service, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`skipping the vmm socket tests: ${skip}`);

/** The first line a connection to `path` receives (as root, following whatever is there). */
function firstLine(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) {
        s.destroy();
        resolve(buf.slice(0, buf.indexOf('\n')));
      }
    });
    s.on('error', reject);
  });
}

/** VM B whose vmm (of `uid`) runs `plant` (a shell command planting a link), stopped over QMP at `qmp`; running, `qmp` there. */
async function startPlanter(b: TestVm, uid: number, plant: string, qmp: string) {
  const run = start(
    vmConfig(b, [service({ name: 'vmm', vmm: true, uid, gid: uid, argv: ['/bin/sh', '-c', `${plant} && exec sleep 1000`], stop: { qmp } })], {
      timeouts: { setupMs: 10_000, stopMs: 3000, killMs: 2000 },
    }),
    b,
  );
  await run.waitFor('running');
  expect(await until(() => existsSync(qmp), 5000)).toBe(true);
  return run;
}

describe.skipIf(skip)('a vmm cannot point its manager at another VM', () => {
  const vms: TestVm[] = [];
  afterEach(() => {
    for (const vm of vms.splice(0)) forceCleanup(vm);
  });
  afterAll(() => removeTestParents());

  it('a QMP path replaced by a symlink to another VM\'s QMP socket is refused, and the other VM runs on', async () => {
    ensureNative();
    // VM A: a QEMU stand-in answering QMP; it powers off on system_powerdown.
    const a = newTestVm();
    vms.push(a);
    chmodSync(a.storage, 0o755);
    copyFileSync(join(repoRoot, 'examples', 'fake-vmm.mjs'), join(a.storage, 'fake-vmm.mjs'));
    const qmpA = `${a.runtimeDir}/vmm/qmp.sock`;
    const runA = start(
      vmConfig(a, [
        service({
          name: 'vmm', vmm: true, uid: 62002, gid: 62002, storage: 'ro',
          argv: [process.execPath, `${a.storage}/fake-vmm.mjs`, '--qmp', qmpA, '--boot-ms', '100'],
          env: { PATH: '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' },
          landlock: { read: [...SYSTEM_READ, a.storage], write: [] },
          stop: { qmp: qmpA },
        }),
      ]),
      a,
    );
    await runA.waitFor('running');
    expect(await until(() => existsSync(qmpA), 10_000)).toBe(true);

    // VM B: its (compromised) vmm plants a symlink where its manager will look for its QMP socket.
    const b = newTestVm();
    vms.push(b);
    const qmpB = `${b.runtimeDir}/vmm/qmp.sock`;
    const runB = await startPlanter(b, 62003, `ln -s ${qmpA} ${qmpB}`, qmpB);

    // Control: as root, the planted path leads to VM A's QMP.
    expect(await firstLine(qmpB)).toMatch(/"QMP"/);

    // B's stop: its manager refuses the symlink (the first request fails: the stop is forced).
    const outB = await stop(runB);
    expect(outB.outcome).toBe('forced');
    expect(outB.errors.join('\n')).toMatch(/qmp\.sock is a symlink, not the vmm's \(uid 62003\) socket: not connecting to it as root/);
    // A never got a power-down: still running, its QMP still answering.
    expect(runA.actor.getSnapshot().matches('running')).toBe(true);
    expect(await firstLine(qmpA)).toMatch(/"QMP"/);
    expect(leftovers(b)).toEqual([]);

    // And A's own manager does stop it over QMP: the socket is the vmm's own.
    const outA = await stop(runA);
    expect(outA).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(leftovers(a)).toEqual([]);
  }, 40_000);

  it('a directory on the way to the QMP socket replaced by a symlink (both vmms of one uid) is refused; a real directory there is fine', async () => {
    ensureNative();
    // VM A: the QEMU stand-in, its QMP socket one directory below its vmm's own (the vmm makes it).
    const a = newTestVm();
    vms.push(a);
    chmodSync(a.storage, 0o755);
    copyFileSync(join(repoRoot, 'examples', 'fake-vmm.mjs'), join(a.storage, 'fake-vmm.mjs'));
    const qmpA = `${a.runtimeDir}/vmm/qemu/qmp.sock`;
    const runA = start(
      vmConfig(a, [
        service({
          name: 'vmm', vmm: true, uid: 62002, gid: 62002, storage: 'ro',
          argv: ['/bin/sh', '-c', `mkdir ${a.runtimeDir}/vmm/qemu && exec ${process.execPath} ${a.storage}/fake-vmm.mjs --qmp ${qmpA} --boot-ms 100`],
          env: { PATH: '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' },
          landlock: { read: [...SYSTEM_READ, a.storage, process.execPath], write: [] },
          stop: { qmp: qmpA },
        }),
      ]),
      a,
    );
    await runA.waitFor('running');
    expect(await until(() => existsSync(qmpA), 10_000)).toBe(true);

    // VM B, its vmm of the same uid: the socket's owner is right whichever VM's it is, so only the
    // way there tells them apart. It makes the directory its QMP path goes through a symlink to A's.
    const b = newTestVm();
    vms.push(b);
    const qmpB = `${b.runtimeDir}/vmm/qemu/qmp.sock`;
    const runB = await startPlanter(b, 62002, `ln -s ${a.runtimeDir}/vmm/qemu ${b.runtimeDir}/vmm/qemu`, qmpB);

    // Control: as root, B's QMP path leads to A's QMP, a socket of the vmms' uid.
    expect(await firstLine(qmpB)).toMatch(/"QMP"/);

    // B's stop: its manager does not follow the vmm's symlink (the first request fails: forced).
    const outB = await stop(runB);
    expect(outB.outcome).toBe('forced');
    expect(outB.errors.join('\n')).toMatch(/vmm\/qemu is a symlink in a directory uid 62002 can change: not following it as root/);
    expect(runA.actor.getSnapshot().matches('running')).toBe(true);
    expect(await firstLine(qmpA)).toMatch(/"QMP"/);
    expect(leftovers(b)).toEqual([]);

    // Control: A's path goes through a real directory its vmm made: A's manager stops it over QMP.
    const outA = await stop(runA);
    expect(outA).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(leftovers(a)).toEqual([]);
  }, 40_000);
});
