// The root manager follows no path a service can change (issue 12, item 7; docs/threat-model.md,
// "The root manager follows no path a vmm can change"):
// - the walk to a vmm's socket (QMP, cloud-hypervisor API, readiness) follows a symlink only where
//   no user but root could have put it, and never at the last component;
// - teardown removes the runtime dir only once the VM's cgroup is empty (the init, every service
//   and the `command` stop method's leaf are dead), and the removal follows none of the symlinks
//   the services left in it.
// The two-VM attack on the walk is in vmm-socket.test.ts.

import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, chmodSync, closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLinuxBackend } from '../../effects/linux/index.js';
import { openWithoutPlantedLinks, vetVmmSocket } from '../../effects/linux/vmmSocket.js';
import { memoryJournal } from '../../effects/owner.js';
import { EffectError } from '../../effects/port.js';
import { removeLeftovers } from '../../s6/leftovers.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { cgroupParentDir } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
const O_PATH = 0o10000000;
if (skip) console.warn(`test/linux/root-paths skipped: ${skip}`);

function errno(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof EffectError) return `${e.errno}: ${e.message}`;
    throw e;
  }
  return 'no error';
}

describe.skipIf(skip)('the walk to a vmm socket', () => {
  let root: string;
  let server: Server;
  beforeAll(async () => {
    // A root-only tree, as /run is: root/real/sock is a socket of uid 62002 (the "vmm").
    root = mkdtempSync('/tmp/vmsandbox-walk-');
    chmodSync(root, 0o755);
    mkdirSync(join(root, 'real'), { mode: 0o755 });
    server = createServer();
    await new Promise<void>((r) => server.listen(join(root, 'real', 'sock'), r));
    chownSync(join(root, 'real', 'sock'), 62002, 62002);
    // The vmm's own directory (as <runtimeDir>/vmm) and a world-writable sticky one (as /tmp).
    mkdirSync(join(root, 'vmm'), { mode: 0o700 });
    chownSync(join(root, 'vmm'), 62002, 62002);
    mkdirSync(join(root, 'sticky'), { mode: 0o777 });
    chmodSync(join(root, 'sticky'), 0o1777);
    mkdirSync(join(root, 'group'));
    chmodSync(join(root, 'group'), 0o775);
    chownSync(join(root, 'group'), 0, 62002);
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(root, { recursive: true, force: true });
  });

  it('follows a symlink only root could have put (absolute and relative), as /var/run -> /run', () => {
    symlinkSync(join(root, 'real'), join(root, 'abs'));
    symlinkSync('real', join(root, 'rel'));
    symlinkSync('../real', join(root, 'real', 'up'));
    for (const via of ['abs/sock', 'rel/sock', 'real/up/sock', 'real/../real/sock', './real/./sock']) {
      vetVmmSocket('test', `${root}/${via}`, 62002).close();
    }
    const fd = openWithoutPlantedLinks('test', `${root}/abs/sock`);
    expect(fstatSync(fd).isSocket()).toBe(true);
    closeSync(fd);
  });

  it('refuses a symlink in a directory a user other than root can change: the vmm\'s own, a sticky world-writable one, a group-writable one', () => {
    symlinkSync(join(root, 'real'), join(root, 'vmm', 'planted'));
    symlinkSync(join(root, 'real'), join(root, 'sticky', 'planted'));
    symlinkSync(join(root, 'real'), join(root, 'group', 'planted'));
    // Control: as root, each of these paths reaches the socket.
    for (const d of ['vmm', 'sticky', 'group']) expect(rootReachesSocket(join(root, d, 'planted', 'sock'))).toBe(true);
    const vmm = errno(() => vetVmmSocket('test', join(root, 'vmm', 'planted', 'sock'), 62002));
    expect(vmm).toMatch(/^EPERM: /);
    expect(vmm).toContain(`${root}/vmm/planted/sock: ${root}/vmm/planted is a symlink in a directory uid 62002 can change: not following it as root`);
    expect(errno(() => vetVmmSocket('test', join(root, 'sticky', 'planted', 'sock'), 62002))).toMatch(/sticky\/planted is a symlink in a directory every user can change/);
    expect(errno(() => vetVmmSocket('test', join(root, 'group', 'planted', 'sock'), 62002))).toMatch(/group\/planted is a symlink in a directory group 62002 can change/);
    // A root-owned link further on does not launder one the vmm made before it.
    symlinkSync(join(root, 'vmm', 'planted'), join(root, 'laundered'));
    expect(errno(() => vetVmmSocket('test', join(root, 'laundered', 'sock'), 62002))).toMatch(/vmm\/planted is a symlink in a directory uid 62002 can change/);
  });

  it('never follows the last component; passes ENOENT through (a vmm that has not made its socket yet); refuses a socket of another uid', () => {
    symlinkSync(join(root, 'real', 'sock'), join(root, 'last'));
    expect(errno(() => vetVmmSocket('test', join(root, 'last'), 62002))).toMatch(/last is a symlink, not the vmm's \(uid 62002\) socket/);
    expect(errno(() => vetVmmSocket('test', join(root, 'real', 'missing'), 62002))).toMatch(/^ENOENT: /);
    expect(errno(() => vetVmmSocket('test', join(root, 'missing', 'sock'), 62002))).toMatch(/^ENOENT: /);
    expect(errno(() => vetVmmSocket('test', join(root, 'real', 'sock'), 62003))).toMatch(/is a socket of uid 62002, not the vmm's \(uid 62003\) socket/);
  });
});

/** Whether a plain open by path (as root, following every symlink) reaches a socket: the control. */
function rootReachesSocket(path: string): boolean {
  const fd = openSync(path, O_PATH);
  try {
    return fstatSync(fd).isSocket();
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(skip)('teardown and the runtime dir', () => {
  let vm: TestVm;
  let sleeper: ChildProcess | null = null;
  beforeAll(() => ensureNative());
  afterEach(() => {
    sleeper?.kill('SIGKILL');
    sleeper = null;
    forceCleanup(vm);
  });
  afterAll(() => removeTestParents());

  it('removes the runtime dir only once the VM\'s cgroup is empty, and follows none of the symlinks left in it (finish\'s path after a SIGKILLed manager)', async () => {
    vm = newTestVm();
    const config = vmConfig(vm, [service({ name: 'vmm', vmm: true, uid: 62002, gid: 62002, argv: ['/bin/true'] })]);
    // What a SIGKILLed manager leaves: the VM's cgroup with a process still in it (here in the leaf
    // of the `command` stop method, which runs as root on the host), and the runtime dir, in which
    // the vmm planted symlinks to a file and a directory of the host.
    const cg = join(cgroupParentDir(), vm.name);
    mkdirSync(join(cg, 'stop-command'), { recursive: true });
    sleeper = spawn('/bin/sleep', ['1000'], { stdio: 'ignore' });
    await new Promise((r) => sleeper!.once('spawn', r));
    writeFileSync(join(cg, 'stop-command', 'cgroup.procs'), String(sleeper.pid));
    const victims = mkdtempSync('/tmp/vmsandbox-victim-');
    writeFileSync(join(victims, 'file'), 'root data\n');
    mkdirSync(join(victims, 'dir'));
    writeFileSync(join(victims, 'dir', 'inner'), 'root data\n');
    mkdirSync(join(vm.runtimeDir, 'vmm', 'deep'), { recursive: true, mode: 0o700 });
    chownSync(join(vm.runtimeDir, 'vmm'), 62002, 62002);
    symlinkSync(join(victims, 'file'), join(vm.runtimeDir, 'vmm', 'to-file'));
    symlinkSync(join(victims, 'dir'), join(vm.runtimeDir, 'vmm', 'to-dir'));
    symlinkSync(victims, join(vm.runtimeDir, 'vmm', 'deep', 'to-victims'));
    const store = memoryJournal({ cgroup: cg, runtimeDir: vm.runtimeDir });

    // cleanup alone, with a process still in the cgroup: the cgroup cannot go, so neither does the
    // runtime dir (nothing of the VM may still be able to change it while root removes it).
    const backend = createLinuxBackend(config, { journal: store });
    const err = await backend.effects.cleanup({}, AbortSignal.timeout(5000)).then(() => null, (e: Error) => e);
    backend.dispose();
    expect(err?.message).toMatch(/rmdir .*stop-command.*EBUSY|EBUSY/);
    expect(existsSync(vm.runtimeDir), 'the runtime dir stays while the cgroup holds a process').toBe(true);
    expect(store.journal()).toEqual({ cgroup: cg, runtimeDir: vm.runtimeDir });

    // finish's path: killAll (cgroup.kill, wait until empty) then cleanup: everything goes, the
    // process first; the symlinks are removed, not followed.
    const removal = await removeLeftovers(config, store, () => undefined);
    expect(removal.problems).toEqual([]);
    expect(removal.removed).toEqual(expect.arrayContaining([`cgroup ${cg}`, `runtime dir ${vm.runtimeDir}`]));
    expect(await new Promise((r) => (sleeper!.exitCode !== null || sleeper!.signalCode !== null ? r(sleeper!.signalCode) : sleeper!.once('exit', (_c, s) => r(s))))).toBe('SIGKILL');
    expect(existsSync(vm.runtimeDir)).toBe(false);
    expect(readFileSync(join(victims, 'file'), 'utf8')).toBe('root data\n');
    expect(readFileSync(join(victims, 'dir', 'inner'), 'utf8')).toBe('root data\n');
    expect(leftovers(vm)).toEqual([]);
    rmSync(victims, { recursive: true, force: true });
  }, 30_000);
});
