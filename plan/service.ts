// A service's part of the plan: who it runs as, what it keeps, what it reaches. Every rule comes
// from config/rules.ts's tables; a config the loader would refuse is refused here too (as a
// refusal naming the field, never a throw), because planSandbox also takes configs built in code.

import { posix } from 'node:path';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { networkOf } from '../config/types.js';
import {
  canonicalCapability,
  canonicalSecurebit,
  FORBIDDEN_CAPABILITIES,
  IDENTIFIER_PATTERN,
  SECUREBITS,
  SOCKET_FD_MAX,
  SOCKET_FD_MIN,
  SOCKET_MODE_PATTERN,
} from '../config/rules.js';
import { serviceCgroupPath, serviceLeaf } from './cgroup.js';
import { planServiceLandlock } from './landlock.js';
import { planSeccomp } from './seccomp.js';
import { BASE_DEVICES, MOUNT_ATTR, MS } from './mounts.js';
import type { Refusal, ServicePlan, SocketPlan, StoragePlan, TmpfsPlan, ViewPlan } from './types.js';

export type Refuse = (field: string, message: string) => void;

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

/** Capabilities a service may never keep: config/rules.ts's list, with the CAP_ prefix. */
export const FORBIDDEN_CAPS = new Set(Object.keys(FORBIDDEN_CAPABILITIES).map((c) => `CAP_${c}`));

function capNumbers(service: ServiceConfig, field: string, refuse: Refuse): number[] {
  const out: number[] = [];
  service.caps.forEach((name, j) => {
    const n = `CAP_${canonicalCapability(name)}`;
    const num = CAPS[n];
    if (num === undefined) return refuse(`${field}.caps[${j}]`, `unknown capability ${name}`);
    const why = FORBIDDEN_CAPABILITIES[n.slice(4)];
    if (why) return refuse(`${field}.caps[${j}]`, `capability ${n} would let the service leave its sandbox (${why}); it cannot be kept`);
    out.push(num);
  });
  return out;
}

function securebitsMask(service: ServiceConfig, field: string, refuse: Refuse): number {
  let mask = 0;
  (service.securebits ?? []).forEach((name, j) => {
    const bit = SECUREBITS[canonicalSecurebit(name)];
    if (bit === undefined) return refuse(`${field}.securebits[${j}]`, `unknown or unsupported securebit ${name}`);
    mask |= 1 << bit;
  });
  return mask;
}

/** A normalized absolute path without a newline (the init's protocol is line-based). */
export function isPlainAbsolute(p: string): boolean {
  return posix.isAbsolute(p) && posix.normalize(p) === p && !p.includes('\n');
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
  return { read: [...new Set(read)], write: [...new Set(write)] };
}

function sockets(config: VmConfig, service: ServiceConfig, field: string, refuse: Refuse): SocketPlan[] {
  const out: SocketPlan[] = [];
  (service.sockets ?? []).forEach((sock, j) => {
    const f = `${field}.sockets[${j}]`;
    if (!isPlainAbsolute(sock.path) || !sock.path.startsWith(`${config.runtimeDir}/`)) {
      return refuse(`${f}.path`, `${sock.path} must be a normalized absolute path inside the runtime dir ${config.runtimeDir}`);
    }
    if (!Number.isInteger(sock.fd) || sock.fd < SOCKET_FD_MIN || sock.fd > SOCKET_FD_MAX) {
      return refuse(`${f}.fd`, `fd ${sock.fd} is not in ${SOCKET_FD_MIN}..${SOCKET_FD_MAX}`);
    }
    if (!new RegExp(SOCKET_MODE_PATTERN).test(sock.mode)) return refuse(`${f}.mode`, `mode ${sock.mode} is not octal permission bits`);
    out.push({ path: sock.path, fd: sock.fd, mode: Number.parseInt(sock.mode, 8), gid: sock.gid, backlog: SOCKET_BACKLOG });
  });
  return out;
}

/**
 * A private tmpfs: sticky and world-writable like a host's /tmp (the service may run helpers under
 * other uids it holds CAP_SETUID for), nosuid and nodev (nothing planted there gains privilege or
 * reaches a device), size from the config.
 */
function tmpfs(path: TmpfsPlan['path'], size: string): TmpfsPlan {
  return { path, flags: MS.NOSUID | MS.NODEV, data: `mode=1777,size=${size}` };
}

/** A backlog for handed-over sockets: their clients are the VM's few other services. */
const SOCKET_BACKLOG = 16;

/**
 * Storage for `access`: bound in nosuid and nodev (a setuid file or a device node a compromised
 * service leaves in storage is inert for every service), read-only for 'ro'; for 'none', the path
 * is covered by an empty, read-only, mode 000 tmpfs, so not even its names show.
 */
function storagePlan(access: ServiceConfig['storage'], path: string): StoragePlan {
  const base = MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV;
  if (access === 'rw') return { access, path, bind: { set: base, clr: MOUNT_ATTR.RDONLY }, hide: null };
  if (access === 'ro') return { access, path, bind: { set: base | MOUNT_ATTR.RDONLY, clr: 0 }, hide: null };
  return { access, path, bind: null, hide: { flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=000,size=4k' } };
}

function inside(path: string, dir: string): boolean {
  return path.startsWith(`${dir}/`);
}

/**
 * A service sees, of the runtime dir, its own directory and the handed-over sockets it owns or is
 * a client of (`sockets[j].clients`); nothing else, whatever its capabilities: the vmm's QMP socket
 * is not in virtiofsd's view, and no socket is reachable by a service that was not given it.
 */
export function planView(config: VmConfig, service: ServiceConfig): ViewPlan {
  const own = serviceRuntimeDir(config, service);
  const shared = config.services.flatMap((s) =>
    (s.sockets ?? []).filter((k) => s === service || (k.clients ?? []).includes(service.name)).map((k) => k.path),
  );
  const wanted = [...new Set([own, ...shared])];
  return {
    path: config.runtimeDir,
    flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC,
    data: 'mode=0711,size=16k',
    // A path inside another shown one comes with it (its own socket in its own directory).
    show: wanted.filter((p) => !wanted.some((q) => inside(p, q))).sort(),
  };
}

/** A service's plan for the kernel's Landlock ABI `abi` (the VM-wide decision, plan/landlock.ts). */
export function planService(config: VmConfig, service: ServiceConfig, index: number, abi: number, refuse: Refuse): ServicePlan {
  const field = `services[${index}]`;
  if (!new RegExp(IDENTIFIER_PATTERN).test(service.name)) refuse(`${field}.name`, `${JSON.stringify(service.name)} must match ${IDENTIFIER_PATTERN}`);
  const argv0 = service.argv[0];
  if (argv0 === undefined || !isPlainAbsolute(argv0)) refuse(`${field}.argv[0]`, `must be a normalized absolute path, got ${JSON.stringify(argv0)}`);
  const rules = landlockRules(config, service);
  for (const [kind, list] of [['read', service.landlock.read], ['write', service.landlock.write]] as const) {
    list.forEach((p, j) => isPlainAbsolute(p) || refuse(`${field}.landlock.${kind}[${j}]`, `must be a normalized absolute path, got ${JSON.stringify(p)}`));
  }
  const env = Object.entries(service.env);
  for (const [k] of env) if (k === '' || k.includes('=')) refuse(`${field}.env`, `bad environment name ${JSON.stringify(k)}`);
  const tmp: TmpfsPlan[] = [];
  if (service.tmp !== false) tmp.push(tmpfs('/tmp', service.tmp));
  if (service.shm !== false) tmp.push(tmpfs('/dev/shm', service.shm));
  return {
    name: service.name,
    vmm: service.vmm,
    uid: service.uid,
    gid: service.gid,
    groups: [...service.groups],
    caps: capNumbers(service, field, refuse),
    securebits: securebitsMask(service, field, refuse),
    sockets: sockets(config, service, field, refuse),
    cgroup: serviceCgroupPath(config, service.name),
    leaf: serviceLeaf(service.name),
    storage: storagePlan(service.storage, config.storage),
    tmpfs: tmp,
    keep: [config.runtimeDir],
    view: planView(config, service),
    // TCP rules only where the service shares the host's network (plan/landlock.ts).
    landlock: planServiceLandlock(
      abi,
      rules,
      networkOf(config) === 'host' ? { bind: service.landlock.bindTcp ?? [], connect: service.landlock.connectTcp ?? [] } : null,
    ),
    seccomp: planSeccomp(service.seccomp?.allow ?? [], `${field}.seccomp.allow`, refuse),
    argv: [...service.argv],
    env,
  };
}

export type { Refusal };
