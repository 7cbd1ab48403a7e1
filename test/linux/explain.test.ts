// Run-time errors that name the thing (effects/linux/explain.ts): the init's failing step, with the
// request and the config, mapped to the object, its field path, the errno's meaning and the fix.
// Pure: no root needed.

import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  describeErrno,
  errnoMeaning,
  explainedError,
  explainMountError,
  explainMountStep,
  explainSpawnStep,
} from '../../effects/linux/explain.js';
import { describeOp, planMounts, type MountOp } from '../../plan/mounts.js';
import { InitStepError } from '../../effects/linux/protocol.js';
import { EffectError } from '../../effects/port.js';
import { repoRoot } from './helpers/paths.js';
import { service, vmConfig } from './helpers/vm.js';

const vm = { name: 'vm1', storage: '/var/lib/x', runtimeDir: '/run/vmsandbox/vm1', scratch: '/tmp/x' };
const virtiofsd = service({
  name: 'virtiofsd',
  argv: ['/usr/libexec/virtiofsd', '--fd=3'],
  storage: 'rw',
  tmp: '16M',
  groups: [62010],
  caps: ['CAP_DAC_READ_SEARCH'],
  sockets: [{ path: '/run/vmsandbox/vm1/virtiofsd.sock', fd: 3, mode: '0660', gid: 62002 }],
});
const vmm = service({ name: 'vmm', argv: ['/nonexistent/vmm'], vmm: true, uid: 62002, gid: 62002, devices: ['/dev/kvm'] });
const config = vmConfig(vm, [virtiofsd, vmm]);

/**
 * Every step the init can report for a spawn, read from its source: the spawner (native/spawn.c:
 * child_fail, open_listener, spawn_start), PID 1's do_spawn (native/vmsandbox-init.c) and the
 * views' trees (native/tree.c).
 */
function spawnSteps(): string[] {
  const c = ['spawn.c', 'vmsandbox-init.c', 'tree.c'].map((f) => readFileSync(join(repoRoot, 'native', f), 'utf8')).join('\n');
  const steps = new Set<string>();
  for (const re of [/child_fail\(pipefd, "([^"]+)"\)/g, /\*step = "([^"]+)"/g, /fail\(tree, step, "([^"]+)"\)/g, /failed = "([^"]+)"/g, /start_failed\(step, "([^"]+)"/g, /reply_err\(id, [^,]+, "([^"]+)"\)/g]) {
    for (const m of c.matchAll(re)) steps.add(m[1]!);
  }
  return [...steps];
}

describe('explain: errno meanings', () => {
  it('names the errno with strerror’s words, and leaves a non-errno as it is', () => {
    expect(describeErrno('ENOENT')).toBe('ENOENT (no such file or directory)');
    expect(describeErrno('EACCES')).toBe('EACCES (permission denied)');
    expect(describeErrno('ENOEXEC')).toBe('ENOEXEC (exec format error)');
    // Linux's 95: os.constants.errno names it ENOTSUP first.
    expect(describeErrno('ENOTSUP')).toBe('ENOTSUP (operation not supported)');
    expect(errnoMeaning('EXIT_3')).toBeNull();
    expect(describeErrno('EXIT_3')).toBe('EXIT_3');
  });
});

describe('explain: spawn steps → config objects', () => {
  it('execve: the program path and its field, the meaning and the fix', () => {
    const ex = explainSpawnStep(config, vmm, 'execve', 'ENOENT');
    expect(ex).toMatchObject({ object: '/nonexistent/vmm', field: 'services[1].argv[0]' });
    const e = explainedError('launch vmm', 'ENOENT', 'execve', ex);
    expect(e).toBeInstanceOf(EffectError);
    expect(e.errno).toBe('ENOENT');
    expect(e.message).toMatch(/^launch vmm: \/nonexistent\/vmm \(services\[1\]\.argv\[0\]\): ENOENT \(no such file or directory\) at execve: .*does not exist: install it or fix argv\[0\]$/);
    expect(explainSpawnStep(config, vmm, 'execve', 'EACCES').fix).toMatch(/uid 62002 .*services\[1\]\.landlock\.read/);
    expect(explainSpawnStep(config, vmm, 'execve', 'ENOEXEC').fix).toMatch(/not a program this kernel can run/);
  });

  it('clone-storage: the storage directory, field storage, and the mkdir that fixes it', () => {
    const e = explainedError('launch virtiofsd', 'ENOENT', 'clone-storage', explainSpawnStep(config, virtiofsd, 'clone-storage', 'ENOENT'));
    expect(e.message).toBe(
      'launch virtiofsd: storage /var/lib/x (storage): ENOENT (no such file or directory) at clone-storage: the directory does not exist: create it (mkdir -p /var/lib/x)',
    );
    expect(explainSpawnStep(config, virtiofsd, 'clone-storage', 'ENOTDIR').fix).toMatch(/is not a directory/);
  });

  it('names the field each identity and resource step concerns', () => {
    const field = (s: typeof vmm, step: string, errno = 'EPERM') => explainSpawnStep(config, s, step, errno).field;
    expect(field(virtiofsd, 'setresuid', 'EAGAIN')).toBe('services[0].uid');
    expect(explainSpawnStep(config, virtiofsd, 'setresuid', 'EAGAIN').fix).toMatch(/RLIMIT_NPROC/);
    expect(field(virtiofsd, 'setresgid')).toBe('services[0].gid');
    expect(field(virtiofsd, 'setgroups')).toBe('services[0].groups');
    for (const step of ['capbset-drop', 'keepcaps', 'capset', 'ambient']) expect(field(virtiofsd, step)).toBe('services[0].caps');
    expect(field(virtiofsd, 'securebits')).toBe('services[0].securebits');
    expect(field(virtiofsd, 'mount-tmp', 'EINVAL')).toBe('services[0].tmp');
    expect(explainSpawnStep(config, virtiofsd, 'mount-tmp', 'EINVAL').object).toBe('private /tmp (tmpfs, size 16M)');
    expect(field(virtiofsd, 'mount-shm')).toBe('services[0].shm');
    expect(field(virtiofsd, 'landlock-rule', 'EACCES')).toBe('services[0].landlock');
    expect(field(virtiofsd, 'landlock-create', 'EOPNOTSUPP')).toBe('landlock.minAbi');
    for (const step of ['clone-keep', 'mkdir-keep', 'move-keep']) expect(field(virtiofsd, step)).toBe('runtimeDir');
    expect(field(vmm, 'hide-storage')).toBe('services[1].storage');
    expect(explainSpawnStep(config, vmm, 'clone3', 'EAGAIN', '/sys/fs/cgroup/vmsandbox/vm1/svc-vmm')).toMatchObject({
      object: 'cgroup leaf /sys/fs/cgroup/vmsandbox/vm1/svc-vmm',
      fix: expect.stringMatching(/pids\.max/),
    });
  });

  it('a handed-over socket: its path and field; a file in the way is named as the cause', () => {
    const ex = explainSpawnStep(config, virtiofsd, 'listen-path', 'EEXIST');
    expect(ex).toMatchObject({ object: 'socket /run/vmsandbox/vm1/virtiofsd.sock', field: 'services[0].sockets[0].path' });
    expect(ex.fix).toMatch(/not a socket is in the way/);
    const two = { ...virtiofsd, sockets: [...virtiofsd.sockets!, { path: `/run/vmsandbox/vm1/${'x'.repeat(120)}`, fd: 4, mode: '0600', gid: 62001 }] };
    const cfg = vmConfig(vm, [two, vmm]);
    expect(explainSpawnStep(cfg, two, 'listen-path', 'ENAMETOOLONG').field).toBe('services[0].sockets[1].path');
    expect(explainSpawnStep(cfg, two, 'listen-bind', 'EACCES').field).toBe('services[0].sockets');
  });

  it('every step the init can report maps to something named, never to the catch-all', () => {
    const steps = spawnSteps();
    // A sanity check that the source was read: the steps the brief names are all there.
    for (const s of ['execve', 'clone-storage', 'listen-path', 'listen-bind', 'chdir', 'setresuid', 'landlock-rule', 'capset', 'open-leaf', 'clone3']) {
      expect(steps).toContain(s);
    }
    for (const step of steps) {
      const ex = explainSpawnStep(config, virtiofsd, step, 'EPERM');
      expect(ex.object, step).not.toMatch(/^the spawn request's/);
      expect(ex.object.length, step).toBeGreaterThan(0);
    }
    // A spawn field the init could not parse (its key is the step): a manager/init mismatch.
    expect(explainSpawnStep(config, virtiofsd, 'uid', 'EINVAL')).toMatchObject({ object: "the spawn request's uid field", fix: expect.stringMatching(/make -C native/) });
    expect(explainSpawnStep(config, virtiofsd, 'rule', 'EINVAL').object).toBe("the spawn request's rule field");
    // The kernel refusing the planned masks is not a missing Landlock: the fix says so.
    expect(explainSpawnStep(config, virtiofsd, 'landlock-create', 'E2BIG').fix).toMatch(/handled rights or scopes planned/);
    expect(explainSpawnStep(config, virtiofsd, 'landlock-create', 'EOPNOTSUPP').fix).toMatch(/lsm=/);
  });
});

describe('explain: mount-plan requests → VM paths and fields', () => {
  const plan = planMounts(config);
  const find = (pred: (op: MountOp) => boolean) => plan.find(pred)!;

  it('a granted device that is missing: the device, its field, and check’s fix', () => {
    const op = find((o) => o.verb === 'mknod' && o.source === '/dev/kvm');
    const ex = explainMountStep(config, op, 'stat', 'ENOENT');
    expect(ex).toMatchObject({ object: 'device /dev/kvm', field: 'services[1].devices[0]' });
    expect(ex.fix).toBe('/dev/kvm does not exist on this host: remove it from devices, or load the driver that provides it');
    const e = explainMountError(config, op, describeOp(op), new InitStepError('mount', 'ENOENT', 'stat'));
    expect(e.message).toMatch(/^mount: device \/dev\/kvm \(services\[1\]\.devices\[0\]\): ENOENT \(no such file or directory\) at stat: .* \(request: mknod \/dev\/kvm \/tmp\/dev\/kvm 600 62002 62002\)$/);
  });

  it('the runtime dir kept in the view names runtimeDir, the storage storage; staging paths name the VM path they build', () => {
    const bind = find((o) => o.verb === 'clone' && o.path === vm.runtimeDir);
    expect(explainMountStep(config, bind, 'open_tree', 'ENOENT').field).toBe('runtimeDir');
    const storage = find((o) => o.verb === 'clone' && o.path === config.storage);
    expect(explainMountStep(config, storage, 'open_tree', 'ENOENT')).toMatchObject({ field: 'storage', fix: `the directory does not exist: create it (mkdir -p ${config.storage})` });
    const cover = find((o) => o.verb === 'mount' && o.fstype === 'tmpfs' && o.target === posix.dirname(vm.runtimeDir));
    expect(explainMountStep(config, cover, 'mount', 'EPERM').object).toMatch(/^the view covering/);
    const nul = find((o) => o.verb === 'touch' && o.path === '/tmp/dev/null');
    expect(explainMountStep(config, nul, 'open', 'EROFS').object).toBe("/dev/null in the VM's /dev");
    const root = find((o) => o.verb === 'setattr' && o.path === '/');
    expect(explainMountStep(config, root, 'mount_setattr', 'ENOSYS').fix).toMatch(/mount_setattr/);
    for (const op of plan) expect(explainMountStep(config, op, 'mount', 'EPERM').object.length, describeOp(op)).toBeGreaterThan(0);
  });

  it('an error that is not an init step (the init gone) keeps the request as its prefix', () => {
    const op = plan[0]!;
    const e = explainMountError(config, op, describeOp(op), new EffectError('init', 'EPIPE', 'control socket closed (EOF): the sandbox init is gone'));
    expect(e.message).toBe(`mount: EPIPE: ${describeOp(op)}: init: EPIPE: control socket closed (EOF): the sandbox init is gone`);
  });
});
