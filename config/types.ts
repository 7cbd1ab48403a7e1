// The validated, defaults-filled shape of a VM's sandbox config (config v1).
// Everything downstream (machine, backends, CLI) consumes this type, never raw JSON.

export type Limits = Record<string, string | number>;

export type StopMethod =
  | { signal: string }
  | { qmp: string }
  | { cloudHypervisorApi: string }
  | { command: string[] };

/**
 * When the vmm counts as ready (s6 readiness: `vmsandbox run --notify-fd`): as soon as it is
 * launched, once a path exists (a socket it creates), or once a QMP greeting answers there.
 */
export type ReadyCondition = 'immediate' | { socket: string } | { qmp: string };

export type StorageAccess = 'none' | 'ro' | 'rw';

/** What happens when a service other than the vmm exits while the VM runs. */
export type ExitPolicy = 'stop' | 'ignore';

/**
 * The network the VM's services see: "none" (the default) is a network namespace of the VM's own
 * with only its loopback up; "host" keeps the host's network namespace (docs/config.md says what
 * that exposes).
 */
export type NetworkMode = 'none' | 'host';

/**
 * A listening unix socket the sandbox creates for a service and hands to it at `fd` (like
 * `virtiofsd --fd=3`): created at `path` (in the runtime dir), owned by the service's uid and `gid`.
 */
export interface SocketConfig {
  path: string;
  /** The fd number the service finds it at (3–255). */
  fd: number;
  /** Permission bits of the socket file, octal as written ("0660"): clients need write permission. */
  mode: string;
  /** Group of the socket file (default: the service's gid): give it to the client service's gid. */
  gid: number;
  /**
   * The services of the VM that see the socket (at its path) in their view of the runtime dir.
   * No other service does, whatever its capabilities. Optional in hand-built configs (= []).
   */
  clients?: string[];
}

export interface ServiceConfig {
  name: string;
  argv: string[];
  env: Record<string, string>;
  uid: number;
  gid: number;
  groups: number[];
  vmm: boolean;
  storage: StorageAccess;
  /** Private tmpfs on /tmp; size in bytes-with-suffix (e.g. "64M"), or false for none. */
  tmp: false | string;
  /** Private tmpfs on /dev/shm, as for tmp. */
  shm: false | string;
  /**
   * Landlock rules: paths it may read / write, and, with `network: "host"` on ABI ≥ 4, the TCP
   * ports it may bind / connect to (every other port is denied; absent: none).
   */
  landlock: { read: string[]; write: string[]; bindTcp?: number[]; connectTcp?: number[] };
  limits: Limits;
  /** Capabilities kept (ambient) after the uid drop, e.g. ["CAP_DAC_READ_SEARCH"]. */
  caps: string[];
  /**
   * Host device nodes made available in the sandbox's /dev, e.g. ["/dev/kvm"]: a private node with
   * the host node's device number, owned by this service's uid, mode 0600.
   */
  devices: string[];
  /** Listening sockets handed to the service as fds. Optional in hand-built configs (= []). */
  sockets?: SocketConfig[];
  /** Securebits set before the uid switch, e.g. ["SECBIT_NO_SETUID_FIXUP"]. Optional (= []). */
  securebits?: string[];
  /**
   * Syscalls of the default seccomp deny list (plan/seccomp.ts) this service may use after all, by
   * name, e.g. { allow: ["userfaultfd"] }. Optional (= { allow: [] }).
   */
  seccomp?: { allow: string[] };
  /** How the vmm is asked to stop gracefully (vmm only). */
  stop: StopMethod;
  /**
   * When the vmm is ready (vmm only). The loader always fills it ("immediate" by default);
   * optional in the type so configs built in code may leave it out (absent = "immediate").
   */
  ready?: ReadyCondition;
  onExit: ExitPolicy;
}

export interface VmConfig {
  name: string;
  storage: string;
  runtimeDir: string;
  timeouts: { setupMs: number; stopMs: number; killMs: number };
  cgroup: { parent: string; limits: Limits; limitsOptional: boolean };
  landlock: { minAbi: number; allowDegraded: boolean };
  /**
   * The loader always fills it ("none" by default); optional in the type so configs built in code
   * may leave it out (absent = "none", the safe choice). Read it through networkOf().
   */
  network?: NetworkMode;
  services: ServiceConfig[];
}

/** The VM's network mode, "none" when absent. */
export function networkOf(config: VmConfig): NetworkMode {
  return config.network ?? 'none';
}

/** The vmm's readiness condition, "immediate" when absent. */
export function readyOf(service: ServiceConfig): ReadyCondition {
  return service.ready ?? 'immediate';
}

export function vmmOf(config: VmConfig): ServiceConfig {
  const vmm = config.services.find((s) => s.vmm);
  // The loader guarantees exactly one vmm; reaching this is a programming error.
  if (!vmm) throw new Error(`config ${config.name}: no vmm service`);
  return vmm;
}
