// Pure planning: the mount requests for the VM's namespace, the spawn request for a service, and
// capability names. Policy lives here (TypeScript); native/vmsandbox-init.c only executes it.

import { posix } from 'node:path';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { canonicalSecurebit, FORBIDDEN_CAPABILITIES, IDENTIFIER_PATTERN, SECUREBITS } from '../../config/rules.js';
import { EffectError } from '../port.js';
import { serviceLeaf } from './cgroup.js';

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
  | { verb: 'setattr'; path: string; set: number; clr: number; recursive: boolean };

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
  }
}

export function describeOp(op: MountOp): string {
  return `${op.verb} ${opArgs(op).join(' ')}`;
}

/** Device nodes every sandbox's /dev has. */
export const BASE_DEVICES = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom', '/dev/tty'];

function checkAbsolute(what: string, p: string): string {
  if (!posix.isAbsolute(p) || posix.normalize(p) !== p || p.includes('\n')) {
    throw new EffectError('config', 'EINVAL', `${what} must be a normalized absolute path, got ${JSON.stringify(p)}`);
  }
  return p;
}

export function grantedDevices(config: VmConfig): string[] {
  const set = new Set(BASE_DEVICES);
  for (const s of config.services) for (const d of s.devices) set.add(checkAbsolute(`${s.name}.devices`, d));
  for (const d of set) {
    if (!d.startsWith('/dev/')) throw new EffectError('mount', 'EINVAL', `device ${d} is not under /dev`);
  }
  return [...set];
}

/**
 * Who owns each granted device that is not a base device: its node in the sandbox's /dev is
 * private to that service (its uid, mode 0600), e.g. /dev/kvm for the vmm.
 */
export function deviceOwners(config: VmConfig): Map<string, ServiceConfig> {
  const owners = new Map<string, ServiceConfig>();
  for (const s of config.services) {
    for (const d of s.devices) {
      if (BASE_DEVICES.includes(d)) continue;
      const other = owners.get(d);
      if (other && other !== s) {
        throw new EffectError('mount', 'EINVAL', `device ${d} is granted to both ${other.name} and ${s.name}: a device node belongs to one service`);
      }
      owners.set(d, s);
    }
  }
  return owners;
}

/**
 * The VM namespace's mount tree, built in place inside the init's (already MS_SLAVE) namespace:
 *  1. every inherited mount read-only + nosuid (one recursive mount_setattr);
 *  2. a fresh /proc for the new PID namespace; a fresh read-only sysfs (no host submounts such as
 *     the cgroup v1 hierarchies: the old /sys tree is detached);
 *  3. a minimal /dev assembled on a staging tmpfs, moved over the detached host /dev, then read-only;
 *  4. the runtime directory bound read-write at its host path (sockets reachable from the manager).
 * Storage is not mounted here: each service's own namespace gets it (or not) at spawn.
 */
export function planMounts(config: VmConfig): MountOp[] {
  const runtime = checkAbsolute('runtimeDir', config.runtimeDir);
  const stage = '/tmp';
  const sdev = `${stage}/dev`;
  const ops: MountOp[] = [
    { verb: 'setattr', path: '/', set: MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID, clr: 0, recursive: true },
    { verb: 'umount', path: '/proc', flags: MNT_DETACH },
    { verb: 'mount', source: 'proc', target: '/proc', fstype: 'proc', flags: MS.NOSUID | MS.NODEV | MS.NOEXEC, data: '' },
    { verb: 'umount', path: '/sys', flags: MNT_DETACH },
    { verb: 'mount', source: 'sysfs', target: '/sys', fstype: 'sysfs', flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: '' },
    { verb: 'mount', source: 'tmpfs', target: stage, fstype: 'tmpfs', flags: MS.NOSUID | MS.NODEV, data: 'mode=0755,size=64k' },
    { verb: 'mkdir', path: sdev, mode: 0o755 },
    { verb: 'mount', source: 'tmpfs', target: sdev, fstype: 'tmpfs', flags: MS.NOSUID | MS.NOEXEC, data: 'mode=0755,size=64k' },
  ];
  const owners = deviceOwners(config);
  for (const dev of grantedDevices(config)) {
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
    { verb: 'mount', source: runtime, target: runtime, fstype: '', flags: MS.BIND, data: '' },
    { verb: 'setattr', path: runtime, set: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV, clr: MOUNT_ATTR.RDONLY, recursive: false },
  );
  return ops;
}

export const CAPS: Record<string, number> = {
  CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_DAC_READ_SEARCH: 2, CAP_FOWNER: 3, CAP_FSETID: 4, CAP_KILL: 5,
  CAP_SETGID: 6, CAP_SETUID: 7, CAP_SETPCAP: 8, CAP_LINUX_IMMUTABLE: 9, CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11, CAP_NET_ADMIN: 12, CAP_NET_RAW: 13, CAP_IPC_LOCK: 14, CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16, CAP_SYS_RAWIO: 17, CAP_SYS_CHROOT: 18, CAP_SYS_PTRACE: 19, CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21, CAP_SYS_BOOT: 22, CAP_SYS_NICE: 23, CAP_SYS_RESOURCE: 24, CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26, CAP_MKNOD: 27, CAP_LEASE: 28, CAP_AUDIT_WRITE: 29, CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31, CAP_MAC_OVERRIDE: 32, CAP_MAC_ADMIN: 33, CAP_SYSLOG: 34, CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36, CAP_AUDIT_READ: 37, CAP_PERFMON: 38, CAP_BPF: 39, CAP_CHECKPOINT_RESTORE: 40,
};

/** Capabilities a service may never keep: config/rules.ts's list (the loader refuses them first). */
export const FORBIDDEN_CAPS = new Set(Object.keys(FORBIDDEN_CAPABILITIES).map((c) => `CAP_${c}`));

export function capNumbers(service: ServiceConfig): number[] {
  return service.caps.map((name) => {
    const n = name.toUpperCase().startsWith('CAP_') ? name.toUpperCase() : `CAP_${name.toUpperCase()}`;
    const num = CAPS[n];
    if (num === undefined) throw new EffectError('launch', 'EINVAL', `${service.name}: unknown capability ${name}`);
    if (FORBIDDEN_CAPS.has(n)) throw new EffectError('launch', 'EPERM', `${service.name}: capability ${n} would let the service leave its sandbox (${FORBIDDEN_CAPABILITIES[n.slice(4)]}); it cannot be kept`);
    return num;
  });
}

export interface LandlockRules {
  read: string[];
  write: string[];
}

/** The service's own directory under the runtime dir (owned by its uid). */
export function serviceRuntimeDir(config: VmConfig, service: ServiceConfig): string {
  return posix.join(config.runtimeDir, service.name);
}

/**
 * The Landlock rules a service gets: its configured read/write paths plus what the sandbox itself
 * hands it (implicit rules): the basic /dev nodes and its granted devices (read-write), its private
 * /tmp and /dev/shm, the VM storage as its access says, the runtime dir (read) and its own directory
 * in it (read-write).
 */
export function landlockRules(config: VmConfig, service: ServiceConfig): LandlockRules {
  const read = [...service.landlock.read, config.runtimeDir];
  const write = [...service.landlock.write, ...BASE_DEVICES, ...service.devices, serviceRuntimeDir(config, service)];
  if (service.tmp !== false) write.push('/tmp');
  if (service.shm !== false) write.push('/dev/shm');
  if (service.storage === 'rw') write.push(config.storage);
  if (service.storage === 'ro') read.push(config.storage);
  for (const p of [...read, ...write]) checkAbsolute(`${service.name}.landlock path`, p);
  return { read: [...new Set(read)], write: [...new Set(write)] };
}

/** The mask of a service's securebits: config/rules.ts's table (names and securebits.h bit numbers). */
export function securebitsMask(service: ServiceConfig): number {
  let mask = 0;
  for (const name of service.securebits ?? []) {
    const bit = SECUREBITS[canonicalSecurebit(name)];
    if (bit === undefined) throw new EffectError('launch', 'EINVAL', `${service.name}: unknown or unsupported securebit ${name}`);
    mask |= 1 << bit;
  }
  return mask;
}

/** `listen=` fields: sockets the init creates (owned by the service's uid) and hands over at fd. */
export function listenFields(config: VmConfig, service: ServiceConfig): string[] {
  return (service.sockets ?? []).map((sock) => {
    checkAbsolute(`${service.name}.sockets path`, sock.path);
    if (!sock.path.startsWith(`${config.runtimeDir}/`)) {
      throw new EffectError('launch', 'EINVAL', `${service.name}: socket ${sock.path} is not in the runtime dir ${config.runtimeDir}`);
    }
    if (!Number.isInteger(sock.fd) || sock.fd < 3 || sock.fd > 255) throw new EffectError('launch', 'EINVAL', `${service.name}: socket fd ${sock.fd} not in 3..255`);
    if (!/^0?[0-7]{3}$/.test(sock.mode)) throw new EffectError('launch', 'EINVAL', `${service.name}: socket mode ${sock.mode}`);
    return `listen=${sock.fd},${Number.parseInt(sock.mode, 8).toString(8)},${sock.gid},${sock.path}`;
  });
}

/** The `spawn` request fields for a service (see do_spawn in native/vmsandbox-init.c). */
export function spawnFields(config: VmConfig, service: ServiceConfig, abi: number): string[] {
  if (!new RegExp(IDENTIFIER_PATTERN).test(service.name)) {
    throw new EffectError('launch', 'EINVAL', `service name ${JSON.stringify(service.name)} must match ${IDENTIFIER_PATTERN} (config/rules.ts)`);
  }
  const argv0 = service.argv[0];
  if (!argv0) throw new EffectError('launch', 'EINVAL', `${service.name}: empty argv`);
  checkAbsolute(`${service.name}.argv[0]`, argv0);
  const f: string[] = [
    `name=${service.name}`,
    `leaf=${serviceLeaf(service.name)}`,
    `uid=${service.uid}`,
    `gid=${service.gid}`,
    ...service.groups.map((g) => `group=${g}`),
    ...capNumbers(service).map((c) => `cap=${c}`),
    ...(securebitsMask(service) ? [`secbits=${securebitsMask(service)}`] : []),
    ...listenFields(config, service),
    `storage=${service.storage}`,
    `storagepath=${checkAbsolute('storage', config.storage)}`,
    `keep=${config.runtimeDir}`,
    `landlock=${abi}`,
  ];
  if (service.tmp !== false) f.push(`tmp=${service.tmp}`);
  if (service.shm !== false) f.push(`shm=${service.shm}`);
  if (abi > 0) {
    const rules = landlockRules(config, service);
    f.push(...rules.read.map((p) => `ro=${p}`), ...rules.write.map((p) => `rw=${p}`));
  }
  f.push(...service.argv.map((a) => `arg=${a}`));
  for (const [k, v] of Object.entries(service.env)) {
    if (k.includes('=') || k === '') throw new EffectError('launch', 'EINVAL', `${service.name}: bad environment name ${k}`);
    f.push(`env=${k}=${v}`);
  }
  return f;
}
