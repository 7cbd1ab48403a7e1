// What the plan holds: every operation a sandbox's setup performs, decided from the config and the
// host's facts before anything is created. The Linux backend and the simulator both execute these
// operations (and record them, test/plan-equivalence.test.ts compares the two records); `check`
// and `run` report the same refusals, because both come from planSandbox (plan/index.ts).

import type { StopMethod, ReadyCondition, Limits } from '../config/types.js';
import type { MountOp } from './mounts.js';
import type { LandlockPlan } from './landlock.js';
import type { SeccompPlan } from './seccomp.js';

/** What the plan needs to know about the host: probed by a backend, never assumed. */
export interface HostFacts {
  /** The Landlock ABI the kernel offers (0: Landlock unavailable). */
  landlockAbi: number;
  /**
   * cgroup v2 controllers the VM's cgroup can use: cgroup.controllers of the deepest directory
   * that exists on the way to cgroup.parent (the rest is created with the same set).
   */
  cgroupControllers: readonly string[];
}

/** Something the plan cannot do on this host with this config: the field to change and how. */
export interface Refusal {
  /** A config field path (`landlock.minAbi`, `services[1].limits["memory.max"]`). */
  field: string;
  message: string;
}

export interface SocketPlan {
  path: string;
  fd: number;
  /** Permission bits of the socket file. */
  mode: number;
  gid: number;
  /** listen(2) backlog. */
  backlog: number;
}

/** A private tmpfs of a service: where, and the mount(2) flags and data (mode, size) it gets. */
export interface TmpfsPlan {
  path: '/tmp' | '/dev/shm';
  flags: number;
  data: string;
}

/**
 * The VM storage in a service's mount namespace: bound in with these mount_setattr(2) attributes,
 * or (access none) hidden under an empty tmpfs mounted with these flags and data.
 */
export interface StoragePlan {
  access: 'none' | 'ro' | 'rw';
  path: string;
  bind: { set: number; clr: number } | null;
  hide: { flags: number; data: string } | null;
}

/**
 * What a service sees of the VM's runtime dir (plan/service.ts): `path` covered by a tmpfs mounted
 * with `flags` and `data` once `show` (its own directory, the sockets shared with it) is placed back.
 */
export interface ViewPlan {
  path: string;
  flags: number;
  data: string;
  show: string[];
}

export interface ServicePlan {
  name: string;
  vmm: boolean;
  uid: number;
  gid: number;
  groups: number[];
  /** Capability numbers the service keeps (bounding, permitted, effective, inheritable, ambient). */
  caps: number[];
  /** securebits mask set (and locked as the names say) before exec. */
  securebits: number;
  sockets: SocketPlan[];
  /** Its cgroup leaf, relative to the cgroup2 mount, and the leaf's name in the VM's cgroup. */
  cgroup: string;
  leaf: string;
  /** How the VM storage appears in its mount namespace. */
  storage: StoragePlan;
  tmpfs: TmpfsPlan[];
  /** Paths its own namespace keeps from the VM's (the runtime dir, for the sockets). */
  keep: string[];
  /** Its view of the runtime dir: an empty tmpfs over it, with only these paths placed back. */
  view: ViewPlan;
  /** Its Landlock ruleset; null when the kernel has no Landlock and the config allows that. */
  landlock: LandlockPlan | null;
  /** Its seccomp filter (plan/seccomp.ts), loaded last before exec; null when every default rule is allowed away. */
  seccomp: SeccompPlan | null;
  argv: string[];
  env: Array<[string, string]>;
}

/** One limit write: the file in a cgroup directory and the value, with the field it comes from. */
export interface LimitWrite {
  /** cgroup directory relative to the cgroup2 mount. */
  cgroup: string;
  key: string;
  value: string;
  field: string;
}

export interface CgroupPlan {
  /** The VM's cgroup (relative to the cgroup2 mount): holds no process, carries the VM's limits. */
  vm: string;
  /** The init's leaf; the init is cloned straight into it (CLONE_INTO_CGROUP). */
  init: string;
  /** One leaf per service, in config order. */
  leaves: string[];
  limits: LimitWrite[];
  /** Limits left out (controller unavailable, cgroup.limitsOptional), as `<field>: <why>`. */
  skipped: string[];
}

/** A directory the manager creates (root-side, before the services start) and gives to a uid. */
export interface DirPlan {
  path: string;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * The namespaces the init is cloned into besides its PID and mount namespaces (always new: the init
 * is PID 1 and builds the VM's mount tree), and what is set up in them before the init runs.
 */
export interface NamespacesPlan {
  /**
   * New namespaces, named as in /proc/PID/ns: `ipc` always (SysV IPC and POSIX message queues are
   * then the VM's own), `net` unless the config keeps the host's network (`network: "host"`).
   */
  clone: Array<'ipc' | 'net'>;
  /** Bring the new network namespace's `lo` up (only with `net`): loopback inside the VM works. */
  loopback: boolean;
}

export interface SandboxPlan {
  vm: string;
  runtimeDir: string;
  namespaces: NamespacesPlan;
  /** The runtime dir's per-service directories. */
  dirs: DirPlan[];
  /** The VM namespace's mount operations, in order (plan/mounts.ts). */
  mounts: MountOp[];
  landlock: { abi: number; degraded: string[] };
  cgroup: CgroupPlan;
  /** In launch order: the others in config order, the vmm last. */
  services: ServicePlan[];
  stop: StopMethod;
  ready: ReadyCondition;
}

export type PlanResult = { ok: true; plan: SandboxPlan } | { ok: false; refusals: Refusal[] };

export type { Limits };
