// The constants of config v1 that both the loader (config/load.ts) and the JSON Schema
// (config/schema.ts) are built from, so the two cannot drift apart on a list or a bound.
// Patterns are kept as source strings because JSON Schema needs them as strings.

/** VM and service names become cgroup and directory names, so they stay short and path-safe. */
export const IDENTIFIER_PATTERN = '^[a-z][a-z0-9-]{0,30}$';

/**
 * cgroup.parent: a relative path below the cgroup root. Segments are wider than names so
 * systemd-style parents ("vmsandbox.slice") work; a segment cannot start with ".", so "." and ".."
 * cannot appear.
 */
const CGROUP_SEGMENT = '[A-Za-z0-9_@][A-Za-z0-9_.@-]{0,63}';
export const CGROUP_PARENT_PATTERN = `^${CGROUP_SEGMENT}(?:/${CGROUP_SEGMENT})*$`;

/**
 * tmpfs sizes. A zero size would tell tmpfs "no limit", the opposite of what a sandbox wants,
 * so sizes start with a non-zero digit.
 */
export const TMPFS_SIZE_PATTERN = '^[1-9][0-9]{0,15}[KMG]?$';
export const TMPFS_DEFAULT_SIZE = '64M';

/** 4294967295 is (uid_t)-1, the kernel's "no id" in setresuid() and chown(). */
export const ID_MAX = 4294967294;

export const TIMEOUT_MAX_MS = 3_600_000;
export const TIMEOUT_DEFAULTS = { setupMs: 30_000, stopMs: 10_000, killMs: 2_000 } as const;
export const TIMEOUT_MINIMUMS = { setupMs: 1, stopMs: 0, killMs: 1 } as const;

export const CGROUP_PARENT_DEFAULT = 'vmsandbox';
export const LANDLOCK_ABI_MIN = 1;
export const LANDLOCK_ABI_MAX = 7;
export const LANDLOCK_ABI_DEFAULT = 6;

export const STORAGE_ACCESS = ['none', 'ro', 'rw'] as const;
export const EXIT_POLICIES = ['stop', 'ignore'] as const;
/** `network`: the VM's own network namespace with loopback only (the default), or the host's. */
export const NETWORK_MODES = ['none', 'host'] as const;
export const NETWORK_DEFAULT = 'none';

/** Signals that ask a vmm to shut down. SIGKILL is absent on purpose: that is the kill phase. */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGPWR'] as const;
export const DEFAULT_STOP_SIGNAL = 'SIGTERM';
export const STOP_METHODS = ['signal', 'qmp', 'cloudHypervisorApi', 'command'] as const;
/** Readiness conditions of the vmm: "immediate", or an object with exactly one of these keys. */
export const READY_METHODS = ['socket', 'qmp'] as const;
export const READY_IMMEDIATE = 'immediate';

/** Every capability of Linux 6.x (capability.h), without the CAP_ prefix. */
export const CAPABILITIES = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID',
  'SETPCAP', 'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW',
  'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT',
  'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD',
  'LEASE', 'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG',
  'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
] as const;

/**
 * Capabilities no service may keep, each with the reason an operator is shown. The one list: the
 * config loader refuses them (so `check` and `run` exit 100 alike) and the Linux backend refuses
 * them again at launch (effects/linux/plan.ts), from this table.
 */
export const FORBIDDEN_CAPABILITIES: Readonly<Record<string, string>> = {
  SYS_ADMIN:
    'a service holding it can undo its own sandbox (remount its read-only root, or clear mount ' +
    'flags with mount_setattr); give the service the narrower capability it needs instead',
  SYS_MODULE: 'it loads kernel modules: arbitrary code in the host kernel',
  SYS_RAWIO: 'raw I/O (iopl, /dev/mem, SG_IO) reaches the host\'s hardware and memory past every file rule',
  SYS_PTRACE: 'it ptraces and reads the memory of every process it can name, siblings of its uid included',
  SYS_BOOT: 'it reboots the host or loads a new kernel (kexec_load)',
  SYS_RESOURCE: 'it overrides resource limits and quotas, and raises other processes\' limits',
  MAC_OVERRIDE: 'it overrides mandatory access control (Smack, …) meant to confine it',
  MAC_ADMIN: 'it changes the mandatory access control policy itself',
  PERFMON: 'perf_event_open on other processes: it reads siblings\' /proc/PID/environ and maps, and kernel state',
  BPF: 'it loads BPF programs and maps: host-wide kernel code and data',
  CHECKPOINT_RESTORE: 'it chooses pids for new processes and reads other processes\' state, as checkpoint/restore does',
  NET_ADMIN:
    'it reconfigures the network namespace it is in: with network "host" the host\'s interfaces, routes and ' +
    'firewall (nf_tables), and in any namespace it widens the kernel\'s attack surface; no VMM or virtiofsd needs it',
  NET_RAW: 'raw and packet sockets: it forges and sniffs traffic on every interface of its network namespace',
};

/**
 * Capabilities a service may keep, with what each still lets a compromised service do: `check`
 * warns with these words and `run` logs them, so an operator grants them knowingly. virtiofsd
 * needs most of them (it acts for arbitrary guest uids).
 */
export const RISKY_CAPABILITIES: Readonly<Record<string, string>> = {
  SETUID: 'it becomes any uid: another service\'s (then it can signal, ptrace-free inspect via /proc and use what that uid owns), or root\'s uid without the capabilities',
  SETGID: 'it joins any group, and reaches every file and device whose group permissions allow',
  DAC_OVERRIDE: 'it reads and writes any file its Landlock rules reach, whatever the file\'s owner and mode',
  FOWNER: 'it chmods and chowns-by-owner files it does not own within its Landlock rules (another service\'s socket in the runtime dir)',
  FSETID: 'it keeps setuid/setgid bits on files it writes: a setuid binary in storage, inert only where storage is nosuid',
  MKNOD: 'it creates device nodes (a block node for a host disk), inert only where the filesystem is nodev',
  CHOWN: 'it gives files to any uid: with FSETID, a setuid-root file in storage',
};

export const ALLOWED_CAPABILITIES: readonly string[] = CAPABILITIES.filter((c) => !(c in FORBIDDEN_CAPABILITIES));

/**
 * Config accepts "cap_chown", "CHOWN" and "CAP_CHOWN" alike. Only ASCII letters are folded:
 * String#toUpperCase would also turn "ı" into "I" and accept names no schema pattern matches.
 */
export function canonicalCapability(name: string): string {
  const upper = name.replace(/[a-z]/g, (c) => c.toUpperCase());
  return upper.startsWith('CAP_') ? upper.slice(4) : upper;
}

/**
 * Securebits a service may ask for (securebits.h), without the SECBIT_ prefix, with their bit numbers.
 * KEEP_CAPS is vmsandbox's own business (it keeps `caps` across the uid switch) and
 * NO_CAP_AMBIENT_RAISE would stop it from raising them, so neither is offered.
 */
export const SECUREBITS: Readonly<Record<string, number>> = {
  NOROOT: 0, NOROOT_LOCKED: 1, NO_SETUID_FIXUP: 2, NO_SETUID_FIXUP_LOCKED: 3,
};
export const SECUREBIT_NAMES = Object.keys(SECUREBITS);

/** Config accepts "no_setuid_fixup" and "SECBIT_NO_SETUID_FIXUP" alike (as canonicalCapability). */
export function canonicalSecurebit(name: string): string {
  const upper = name.replace(/[a-z]/g, (c) => c.toUpperCase());
  return upper.startsWith('SECBIT_') ? upper.slice(7) : upper;
}

/**
 * argv and env of one service together, in bytes (each string and its NUL). The spawn request to
 * the sandbox init carries them percent-encoded (up to 3 bytes a byte) in a 64 KiB line, next to
 * the Landlock paths and sockets; 16 KiB leaves room for those. Far above what a VMM needs.
 */
export const MAX_EXEC_BYTES = 16384;

/** Handed-over sockets: fd numbers (0–2 are stdio) and permission bits. */
export const SOCKET_FD_MIN = 3;
export const SOCKET_FD_MAX = 255;
export const SOCKET_MODE_PATTERN = '^0?[0-7]{3}$';
export const SOCKET_MODE_DEFAULT = '0600';
export const SOCKET_KEYS = ['path', 'fd', 'mode', 'gid', 'clients'] as const;

/** Keys of service objects, in documentation order. */
export const SERVICE_KEYS = [
  'name', 'argv', 'env', 'uid', 'gid', 'groups', 'vmm', 'storage', 'tmp', 'shm', 'landlock',
  'limits', 'caps', 'devices', 'sockets', 'securebits', 'seccomp', 'stop', 'ready', 'onExit',
] as const;
export const SERVICE_SECCOMP_KEYS = ['allow'] as const;
export const TOP_KEYS = ['name', 'storage', 'runtimeDir', 'timeouts', 'cgroup', 'landlock', 'network', 'services'] as const;
export const TIMEOUT_KEYS = ['setupMs', 'stopMs', 'killMs'] as const;
export const CGROUP_KEYS = ['parent', 'limits', 'limitsOptional'] as const;
export const VM_LANDLOCK_KEYS = ['minAbi', 'allowDegraded'] as const;
export const SERVICE_LANDLOCK_KEYS = ['read', 'write', 'bindTcp', 'connectTcp'] as const;
export const TCP_PORT_MAX = 65535;

/** Kernel filesystems: never a VM's storage or runtime dir (`/proc/self/root` is the host's root). */
export const KERNEL_FS_PATTERN = '^(?:/+\\.?)*/+(?:proc|sys|dev)(?:/|$)';

export function runtimeDirDefault(name: string): string {
  return `/run/vmsandbox/${name}`;
}
