// The VM namespace's mount operations, as the plan holds them: the Linux backend sends each to the
// sandbox init (native/vmsandbox-init.c executes, it does not decide), the simulator applies each
// to its model kernel. Policy lives here.

import { posix } from 'node:path';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import type { Refusal } from './types.js';

type Refuse = (field: string, message: string) => void;

// mount(2) flags
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  REMOUNT: 0x20,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
} as const;
// mount_setattr(2) attributes
export const MOUNT_ATTR = { RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8 } as const;
export const MNT_DETACH = 2;

export type MountOp =
  | { verb: 'mkdir'; path: string; mode: number }
  | { verb: 'touch'; path: string; mode: number }
  | { verb: 'symlink'; target: string; path: string }
  | { verb: 'mknod'; source: string; path: string; mode: number; uid: number; gid: number }
  | { verb: 'mount'; source: string; target: string; fstype: string; flags: number; data: string }
  | { verb: 'umount'; path: string; flags: number }
  | { verb: 'setattr'; path: string; set: number; clr: number; recursive: boolean }
  /** Keep a detached copy of the mount tree at path in a slot of the init's (0..VIEW_SLOTS-1). */
  | { verb: 'clone'; path: string; slot: number }
  /** Attach a slot's tree at path, on a mount point of its own type made there. */
  | { verb: 'place'; slot: number; path: string };

/** How many trees the init keeps at once between `clone` and `place` (native/vmsandbox-init.c). */
export const VIEW_SLOTS = 64;

export function opArgs(op: MountOp): string[] {
  switch (op.verb) {
    case 'mkdir':
    case 'touch':
      return [op.path, op.mode.toString(8)];
    case 'symlink':
      return [op.target, op.path];
    case 'mknod':
      return [op.source, op.path, op.mode.toString(8), String(op.uid), String(op.gid)];
    case 'mount':
      return [op.source, op.target, op.fstype, String(op.flags), op.data];
    case 'umount':
      return [op.path, String(op.flags)];
    case 'setattr':
      return [op.path, String(op.set), String(op.clr), op.recursive ? '1' : '0'];
    case 'clone':
      return [op.path, String(op.slot)];
    case 'place':
      return [String(op.slot), op.path];
  }
}

export function describeOp(op: MountOp): string {
  return `${op.verb} ${opArgs(op).join(' ')}`;
}

/** The staging tmpfs's data (at /tmp, where the VM's /dev is assembled). */
export const STAGE_DATA = 'mode=0755,size=64k';

/** Device nodes every sandbox's /dev has. */
export const BASE_DEVICES = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom', '/dev/tty'];

function plainAbsolute(p: string): boolean {
  return posix.isAbsolute(p) && posix.normalize(p) === p && !p.includes('\n');
}

/** The base devices and every granted one; a granted path that is not a plain /dev path is refused. */
export function grantedDevices(config: VmConfig, refuse: Refuse = () => undefined): string[] {
  const set = new Set(BASE_DEVICES);
  config.services.forEach((s, i) =>
    s.devices.forEach((d, j) => {
      if (!plainAbsolute(d) || !d.startsWith('/dev/')) refuse(`services[${i}].devices[${j}]`, `${JSON.stringify(d)} must be a normalized absolute path under /dev`);
      else set.add(d);
    }),
  );
  return [...set];
}

/**
 * Who owns each granted device that is not a base device: its node in the sandbox's /dev is
 * private to that service (its uid, mode 0600), e.g. /dev/kvm for the vmm.
 */
export function deviceOwners(config: VmConfig, refuse: Refuse = () => undefined): Map<string, ServiceConfig> {
  const owners = new Map<string, ServiceConfig>();
  config.services.forEach((s, i) =>
    s.devices.forEach((d, j) => {
      if (BASE_DEVICES.includes(d)) return;
      const other = owners.get(d);
      if (other && other !== s) {
        return refuse(`services[${i}].devices[${j}]`, `${d} is granted to both ${other.name} and ${s.name}: a device node belongs to one service`);
      }
      owners.set(d, s);
    }),
  );
  return owners;
}

/**
 * The VM namespace's mount tree, built in place inside the init's (already MS_SLAVE) namespace:
 *  1. every inherited mount read-only + nosuid (one recursive mount_setattr);
 *  2. a fresh /proc for the new PID namespace; a fresh read-only sysfs (no host submounts such as
 *     the cgroup v1 hierarchies: the old /sys tree is detached);
 *  3. a minimal /dev assembled on a staging tmpfs, moved over the detached host /dev, then read-only;
 *  4. the VM's views (planViews): its runtime dir, read-write at its host path (sockets reachable
 *     from the manager), and its storage, each with no sibling beside it (no other VM's).
 * Storage is not mounted here: each service's own namespace gets it (or not) at spawn.
 */
export function planMounts(config: VmConfig, refuse: Refuse = () => undefined): MountOp[] {
  const stage = '/tmp';
  const sdev = `${stage}/dev`;
  const ops: MountOp[] = [
    { verb: 'setattr', path: '/', set: MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID, clr: 0, recursive: true },
    { verb: 'umount', path: '/proc', flags: MNT_DETACH },
    { verb: 'mount', source: 'proc', target: '/proc', fstype: 'proc', flags: MS.NOSUID | MS.NODEV | MS.NOEXEC, data: '' },
    { verb: 'umount', path: '/sys', flags: MNT_DETACH },
    { verb: 'mount', source: 'sysfs', target: '/sys', fstype: 'sysfs', flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: '' },
    { verb: 'mount', source: 'tmpfs', target: stage, fstype: 'tmpfs', flags: MS.NOSUID | MS.NODEV, data: STAGE_DATA },
    { verb: 'mkdir', path: sdev, mode: 0o755 },
    { verb: 'mount', source: 'tmpfs', target: sdev, fstype: 'tmpfs', flags: MS.NOSUID | MS.NOEXEC, data: 'mode=0755,size=64k' },
  ];
  const owners = deviceOwners(config, refuse);
  for (const dev of grantedDevices(config, refuse)) {
    const rel = dev.slice('/dev/'.length);
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) ops.push({ verb: 'mkdir', path: `${sdev}/${parts.slice(0, i).join('/')}`, mode: 0o755 });
    const target = `${sdev}/${rel}`;
    const owner = owners.get(dev);
    if (owner) {
      // A private node (same type and device number as the host's), owned by the one service that
      // asked for it: no group membership on the host needed, and no other uid in the VM opens it.
      ops.push({ verb: 'mknod', source: dev, path: target, mode: 0o600, uid: owner.uid, gid: owner.gid });
      continue;
    }
    ops.push(
      { verb: 'touch', path: target, mode: 0o600 },
      { verb: 'mount', source: dev, target, fstype: '', flags: MS.BIND, data: '' },
      // A bind copies the source mount's flags (here read-only, from step 1): clear them.
      { verb: 'mount', source: '', target, fstype: '', flags: MS.REMOUNT | MS.BIND | MS.NOSUID | MS.NOEXEC, data: '' },
    );
  }
  ops.push(
    { verb: 'symlink', target: '/proc/self/fd', path: `${sdev}/fd` },
    { verb: 'symlink', target: '/proc/self/fd/0', path: `${sdev}/stdin` },
    { verb: 'symlink', target: '/proc/self/fd/1', path: `${sdev}/stdout` },
    { verb: 'symlink', target: '/proc/self/fd/2', path: `${sdev}/stderr` },
    { verb: 'mkdir', path: `${sdev}/shm`, mode: 0o1777 },
    { verb: 'umount', path: '/dev', flags: MNT_DETACH },
    { verb: 'mount', source: sdev, target: '/dev', fstype: '', flags: MS.MOVE, data: '' },
    { verb: 'mount', source: '', target: '/dev', fstype: '', flags: MS.REMOUNT | MS.RDONLY | MS.NOSUID | MS.NOEXEC, data: 'mode=0755' },
    { verb: 'umount', path: stage, flags: MNT_DETACH },
    ...planViews(config, refuse),
  );
  return ops;
}


function under(path: string, dir: string): boolean {
  return dir === '/' ? path !== '/' : path.startsWith(`${dir}/`);
}

/** Every path a service of the VM names for itself: its Landlock rules and its program. */
function servicePaths(config: VmConfig): string[] {
  return config.services.flatMap((s) => [...s.landlock.read, ...s.landlock.write, ...(s.argv[0] ? [s.argv[0]] : [])]);
}

/**
 * The VM sees its own runtime dir and storage and no other VM's. The parents they share with other
 * VMs' (/run/vmsandbox, /var/lib/vmsandbox) are covered by empty tmpfs, and what the VM may see
 * there is kept: copies of its runtime dir, its storage and every path under a cover that one of
 * its services names (a Landlock rule, a program) are cloned first and placed back on the covers,
 * which then go read-only. Without this a service whose capabilities bypass file modes
 * (virtiofsd's DAC_OVERRIDE) connects to another VM's QMP socket (Landlock does not govern
 * connect(2)), and one with a broad Landlock rule (a parent of the storage) reads other VMs' disks.
 */
export function planViews(config: VmConfig, refuse: Refuse = () => undefined): MountOp[] {
  const { runtimeDir: runtime, storage } = config;
  if (!plainAbsolute(runtime)) refuse('runtimeDir', `must be a normalized absolute path, got ${JSON.stringify(runtime)}`);
  if (!plainAbsolute(storage)) refuse('storage', `must be a normalized absolute path, got ${JSON.stringify(storage)}`);
  if (posix.dirname(runtime) === '/') refuse('runtimeDir', `${runtime} is directly under /: the VM's view covers the runtime dir's parent (so no VM sees another's), and covering / hides the whole host; use a directory such as /run/vmsandbox/${config.name}`);
  if (posix.dirname(storage) === '/') refuse('storage', `${storage} is directly under /: the VM's view covers the storage's parent (so no VM sees another's), and covering / hides the whole host; use a directory such as /var/lib/vmsandbox/${config.name}`);
  const parents = [...new Set([posix.dirname(runtime), posix.dirname(storage)])].filter((p) => p !== '/');
  // A cover inside another is covered already.
  const covers = parents.filter((p) => !parents.some((q) => q !== p && under(p, q))).sort();
  const wanted = [runtime, storage, ...servicePaths(config).filter(plainAbsolute)].filter((p) => covers.some((c) => under(p, c)));
  // A kept path inside another comes with it.
  const keeps = [...new Set(wanted)].filter((p, _, all) => !all.some((q) => q !== p && under(p, q))).sort();
  if (keeps.length > VIEW_SLOTS) refuse('services', `${keeps.length} paths under ${covers.join(', ')} are named by the services; a view keeps at most ${VIEW_SLOTS}: name a common parent instead`);
  const ops: MountOp[] = keeps.map((path, slot) => ({ verb: 'clone', path, slot }));
  for (const c of covers) ops.push({ verb: 'mount', source: 'tmpfs', target: c, fstype: 'tmpfs', flags: MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=0755,size=16k' });
  keeps.forEach((path, slot) => ops.push({ verb: 'place', slot, path }));
  // The runtime dir's copy has the read-only root's flags (step 1): the VM writes its sockets there.
  if (keeps.includes(runtime)) ops.push({ verb: 'setattr', path: runtime, set: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV, clr: MOUNT_ATTR.RDONLY, recursive: false });
  for (const c of covers) ops.push({ verb: 'mount', source: '', target: c, fstype: '', flags: MS.REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=0755' });
  return ops;
}

export type { Refusal };
