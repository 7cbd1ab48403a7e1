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
import { start, stop, type Run } from './helpers/inprocess.js';
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

/**
 * VM `a` with the QEMU stand-in as its vmm (uid 62002), answering QMP at <runtimeDir>/vmm/qmp.sock,
 * or one directory `sub` below (the vmm makes it); stopped over that socket. Running, socket there.
 */
async function startStandIn(a: TestVm, sub: string | null) {
  chmodSync(a.storage, 0o755);
  copyFileSync(join(repoRoot, 'examples', 'fake-vmm.mjs'), join(a.storage, 'fake-vmm.mjs'));
  const qmp = `${a.runtimeDir}/vmm/${sub ? `${sub}/` : ''}qmp.sock`;
  const fake = [process.execPath, `${a.storage}/fake-vmm.mjs`, '--qmp', qmp, '--boot-ms', '100'];
  const run = start(
    vmConfig(a, [
      service({
        name: 'vmm', vmm: true, uid: 62002, gid: 62002, storage: 'ro',
        argv: sub ? ['/bin/sh', '-c', `mkdir ${a.runtimeDir}/vmm/${sub} && exec ${fake.join(' ')}`] : fake,
        env: { PATH: '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' },
        landlock: { read: [...SYSTEM_READ, a.storage, ...(sub ? [process.execPath] : [])], write: [] },
        stop: { qmp },
      }),
    ]),
    a,
  );
  await run.waitFor('running');
  expect(await until(() => existsSync(qmp), 10_000)).toBe(true);
  return { run, qmp };
}

/**
 * B's stop is refused (`why`: its first request fails, so the stop is forced) while A runs on, its
 * QMP answering; then A's own manager stops A over QMP (control: its socket is the vmm's own).
 */
async function expectBRefusedARunsOn(a: TestVm, runA: Run, qmpA: string, b: TestVm, runB: Run, why: RegExp) {
  const outB = await stop(runB);
  expect(outB.outcome).toBe('forced');
  expect(outB.errors.join('\n')).toMatch(why);
  expect(runA.actor.getSnapshot().matches('running')).toBe(true);
  expect(await firstLine(qmpA)).toMatch(/"QMP"/);
  expect(leftovers(b)).toEqual([]);
  const outA = await stop(runA);
  expect(outA).toMatchObject({ outcome: 'stopped', exitCode: 0 });
  expect(leftovers(a)).toEqual([]);
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
    const { run: runA, qmp: qmpA } = await startStandIn(a, null);

    // VM B: its (compromised) vmm plants a symlink where its manager will look for its QMP socket.
    const b = newTestVm();
    vms.push(b);
    const qmpB = `${b.runtimeDir}/vmm/qmp.sock`;
    const runB = await startPlanter(b, 62003, `ln -s ${qmpA} ${qmpB}`, qmpB);

    // Control: as root, the planted path leads to VM A's QMP.
    expect(await firstLine(qmpB)).toMatch(/"QMP"/);

    // B's stop: its manager refuses the symlink; A never got a power-down; A's own manager stops it.
    await expectBRefusedARunsOn(a, runA, qmpA, b, runB, /qmp\.sock is a symlink, not the vmm's \(uid 62003\) socket: not connecting to it as root/);
  }, 40_000);

  it('a directory on the way to the QMP socket replaced by a symlink (both vmms of one uid) is refused; a real directory there is fine', async () => {
    ensureNative();
    // VM A: the QEMU stand-in, its QMP socket one directory below its vmm's own (the vmm makes it).
    const a = newTestVm();
    vms.push(a);
    const { run: runA, qmp: qmpA } = await startStandIn(a, 'qemu');

    // VM B, its vmm of the same uid: the socket's owner is right whichever VM's it is, so only the
    // way there tells them apart. It makes the directory its QMP path goes through a symlink to A's.
    const b = newTestVm();
    vms.push(b);
    const qmpB = `${b.runtimeDir}/vmm/qemu/qmp.sock`;
    const runB = await startPlanter(b, 62002, `ln -s ${a.runtimeDir}/vmm/qemu ${b.runtimeDir}/vmm/qemu`, qmpB);

    // Control: as root, B's QMP path leads to A's QMP, a socket of the vmms' uid.
    expect(await firstLine(qmpB)).toMatch(/"QMP"/);

    // B's stop: its manager does not follow the vmm's symlink; A runs on; and A's path, through a
    // real directory its vmm made, lets A's manager stop it over QMP.
    await expectBRefusedARunsOn(a, runA, qmpA, b, runB, /vmm\/qemu is a symlink in a directory uid 62002 can change: not following it as root/);
  }, 40_000);
});
