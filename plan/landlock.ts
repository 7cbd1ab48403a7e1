// Landlock in the plan: which protections this kernel's ABI lacks, whether the config lets the
// sandbox run without them, and each service's ruleset down to the masks and flags the sandbox
// init hands to the kernel (it decides nothing: native/spawn.c applies what it is given).

import type { ServiceConfig, VmConfig } from '../config/types.js';
import type { Refusal } from './types.js';

/**
 * Landlock's constants, from the kernel's include/uapi/linux/landlock.h, each with the ABI (the
 * kernel release) that added it. The only copy: the init receives masks built from this table.
 */
export const LANDLOCK = {
  /** landlock_ruleset_attr.handled_access_fs and landlock_path_beneath_attr.allowed_access */
  fs: {
    EXECUTE: { bit: 1 << 0, abi: 1 }, // Linux 5.13
    WRITE_FILE: { bit: 1 << 1, abi: 1 },
    READ_FILE: { bit: 1 << 2, abi: 1 },
    READ_DIR: { bit: 1 << 3, abi: 1 },
    REMOVE_DIR: { bit: 1 << 4, abi: 1 },
    REMOVE_FILE: { bit: 1 << 5, abi: 1 },
    MAKE_CHAR: { bit: 1 << 6, abi: 1 },
    MAKE_DIR: { bit: 1 << 7, abi: 1 },
    MAKE_REG: { bit: 1 << 8, abi: 1 },
    MAKE_SOCK: { bit: 1 << 9, abi: 1 },
    MAKE_FIFO: { bit: 1 << 10, abi: 1 },
    MAKE_BLOCK: { bit: 1 << 11, abi: 1 },
    MAKE_SYM: { bit: 1 << 12, abi: 1 },
    REFER: { bit: 1 << 13, abi: 2 }, // Linux 5.19
    TRUNCATE: { bit: 1 << 14, abi: 3 }, // Linux 6.2
    IOCTL_DEV: { bit: 1 << 15, abi: 5 }, // Linux 6.10
  },
  /**
   * landlock_ruleset_attr.handled_access_net, ABI 4 (Linux 6.7). Handled only where a service
   * shares the host's network (`network: "host"`): in the VM's own network namespace there is
   * nothing to reach but its loopback.
   */
  net: {
    BIND_TCP: { bit: 1 << 0, abi: 4 },
    CONNECT_TCP: { bit: 1 << 1, abi: 4 },
  },
  /** landlock_ruleset_attr.scoped, ABI 6 (Linux 6.12) */
  scope: {
    ABSTRACT_UNIX_SOCKET: { bit: 1 << 0, abi: 6 },
    SIGNAL: { bit: 1 << 1, abi: 6 },
  },
  /**
   * landlock_restrict_self() flags, ABI 7 (Linux 6.15): audit logging of denials. By default the
   * kernel does not audit a program exec'd into a domain it did not create, i.e. the service;
   * LOG_NEW_EXEC_ON (set from ABI 7 on) does, so that a service's denial is a record naming the
   * access and the path, which the manager reads back to tell the operator the rule to add
   * (effects/linux/landlockAudit.ts). Records exist only while the kernel's audit is enabled.
   */
  restrictSelf: {
    LOG_SAME_EXEC_OFF: { bit: 1 << 0, abi: 7 },
    LOG_NEW_EXEC_ON: { bit: 1 << 1, abi: 7 },
    LOG_SUBDOMAINS_OFF: { bit: 1 << 2, abi: 7 },
  },
} as const;

/** Landlock protections by the ABI that introduced them (what a lower ABI lacks). */
export const LANDLOCK_FEATURES: Array<[number, string]> = [
  [LANDLOCK.fs.EXECUTE.abi, 'filesystem access rules'],
  [LANDLOCK.fs.REFER.abi, 'file reparenting (refer) control'],
  [LANDLOCK.fs.TRUNCATE.abi, 'truncate control'],
  [LANDLOCK.fs.IOCTL_DEV.abi, 'device ioctl control'],
  [LANDLOCK.scope.SIGNAL.abi, 'signal scoping'],
  [LANDLOCK.scope.ABSTRACT_UNIX_SOCKET.abi, 'abstract unix socket scoping'],
];

/** What an ABI lacks of LANDLOCK_FEATURES. */
export function missingFeatures(abi: number): string[] {
  return LANDLOCK_FEATURES.filter(([v]) => abi < v).map(([, what]) => what);
}

/**
 * The VM-wide Landlock decision: the ABI to build rulesets for and what runs degraded, or the
 * refusal (a kernel below landlock.minAbi without landlock.allowDegraded).
 */
export function planLandlockAbi(config: VmConfig, abi: number): { abi: number; degraded: string[] } | Refusal {
  const degraded = missingFeatures(abi);
  const min = config.landlock.minAbi;
  if (abi < min && !config.landlock.allowDegraded) {
    return {
      field: 'landlock.minAbi',
      message:
        `the kernel offers Landlock ABI ${abi}, the config needs ${min} (missing: ${degraded.join(', ') || 'none'}): ` +
        `use a kernel with Landlock ABI ${min} (and "landlock" in lsm=), lower landlock.minAbi, or set landlock.allowDegraded`,
    };
  }
  return { abi, degraded };
}

type Bits = Record<string, { bit: number; abi: number }>;

/** The bits of `table` an ABI knows. */
function known(table: Bits, abi: number): number {
  let mask = 0;
  for (const { bit, abi: since } of Object.values(table)) if (since <= abi) mask |= bit;
  return mask;
}

const FS = LANDLOCK.fs;

/**
 * What a `read` rule grants: run, open for reading, list. Nothing that changes the tree (no
 * truncate, no ioctl on devices, no refer).
 */
export const READ_ACCESS = FS.EXECUTE.bit | FS.READ_FILE.bit | FS.READ_DIR.bit;

/**
 * The rights the kernel accepts in a rule on a non-directory (its ACCESS_FILE): a rule on a file
 * keeps only these of its mask (landlock_add_rule() refuses the others with EINVAL).
 */
export const FILE_ACCESS = FS.EXECUTE.bit | FS.WRITE_FILE.bit | FS.READ_FILE.bit | FS.TRUNCATE.bit | FS.IOCTL_DEV.bit;

/** handled_access_fs for an ABI: every filesystem right it knows (deny by default, then grant). */
export function handledAccessFs(abi: number): number {
  return known(FS, abi);
}

/** scoped for an ABI: every scope it knows (signals and abstract unix sockets from ABI 6). */
export function scopedFor(abi: number): number {
  return known(LANDLOCK.scope, abi);
}

/** One landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH): the rights granted beneath `path`. */
export interface LandlockRule {
  path: string;
  /** allowed_access; on a non-directory the init applies `access & fileAccess` (the kernel's rule). */
  access: number;
}

/**
 * A service's ruleset, as the init applies it: landlock_create_ruleset(handledFs, scoped), one
 * landlock_add_rule per rule, landlock_restrict_self(restrictFlags). `read`/`write` are the paths
 * the rules come from (for messages).
 */
export interface LandlockPlan {
  abi: number;
  /** landlock_ruleset_attr.handled_access_fs */
  handledFs: number;
  /** landlock_ruleset_attr.scoped (0 below ABI 6: older kernels reject a non-zero one) */
  scoped: number;
  /** landlock_restrict_self() flags */
  restrictFlags: number;
  /** What a rule keeps on a non-directory: FILE_ACCESS within handledFs. */
  fileAccess: number;
  /** One per path, in order (read paths first); a path both read and written gets both grants. */
  rules: LandlockRule[];
  /** landlock_ruleset_attr.handled_access_net: 0, or TCP bind and connect (network "host", ABI ≥ 4). */
  handledNet: number;
  /** One landlock_add_rule(LANDLOCK_RULE_NET_PORT) per port: the rights granted on it. */
  ports: Array<{ port: number; access: number }>;
  read: string[];
  write: string[];
}

/** A read rule grants READ_ACCESS; a write rule every handled right. ABI 0: no Landlock (null). */
export function planServiceLandlock(
  abi: number,
  rules: { read: string[]; write: string[] },
  tcp: { bind: number[]; connect: number[] } | null = null,
): LandlockPlan | null {
  if (abi === 0) return null;
  // TCP: every bind and connect denied but the listed ports, where the kernel can say so.
  const handledNet = tcp && abi >= LANDLOCK.net.BIND_TCP.abi ? known(LANDLOCK.net, abi) : 0;
  const ports = new Map<number, number>();
  if (handledNet && tcp) {
    for (const p of tcp.bind) ports.set(p, (ports.get(p) ?? 0) | LANDLOCK.net.BIND_TCP.bit);
    for (const p of tcp.connect) ports.set(p, (ports.get(p) ?? 0) | LANDLOCK.net.CONNECT_TCP.bit);
  }
  const handledFs = handledAccessFs(abi);
  const access = new Map<string, number>();
  for (const p of rules.read) access.set(p, (access.get(p) ?? 0) | (READ_ACCESS & handledFs));
  for (const p of rules.write) access.set(p, (access.get(p) ?? 0) | handledFs);
  return {
    abi,
    handledFs,
    scoped: scopedFor(abi),
    restrictFlags: abi >= LANDLOCK.restrictSelf.LOG_NEW_EXEC_ON.abi ? LANDLOCK.restrictSelf.LOG_NEW_EXEC_ON.bit : 0,
    fileAccess: FILE_ACCESS & handledFs,
    rules: [...access].map(([path, a]) => ({ path, access: a })),
    handledNet,
    ports: [...ports].map(([port, a]) => ({ port, access: a })),
    read: rules.read,
    write: rules.write,
  };
}

export type { ServiceConfig };
