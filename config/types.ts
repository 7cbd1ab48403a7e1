// The validated, defaults-filled shape of a VM's sandbox config (config v1).
// Everything downstream (machine, backends, CLI) consumes this type, never raw JSON.

export type Limits = Record<string, string | number>;

export type StopMethod =
  | { signal: string }
  | { qmp: string }
  | { cloudHypervisorApi: string }
  | { command: string[] };

export type StorageAccess = 'none' | 'ro' | 'rw';

/** What happens when a service other than the vmm exits while the VM runs. */
export type ExitPolicy = 'stop' | 'ignore';

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
  landlock: { read: string[]; write: string[] };
  limits: Limits;
  /** Capabilities kept (ambient) after the uid drop, e.g. ["CAP_DAC_READ_SEARCH"]. */
  caps: string[];
  /** Host device nodes made available in the sandbox's /dev, e.g. ["/dev/kvm"]. */
  devices: string[];
  /** How the vmm is asked to stop gracefully (vmm only). */
  stop: StopMethod;
  onExit: ExitPolicy;
}

export interface VmConfig {
  name: string;
  storage: string;
  runtimeDir: string;
  timeouts: { setupMs: number; stopMs: number; killMs: number };
  cgroup: { parent: string; limits: Limits; limitsOptional: boolean };
  landlock: { minAbi: number; allowDegraded: boolean };
  services: ServiceConfig[];
}

export function vmmOf(config: VmConfig): ServiceConfig {
  const vmm = config.services.find((s) => s.vmm);
  // The loader guarantees exactly one vmm; reaching this is a programming error.
  if (!vmm) throw new Error(`config ${config.name}: no vmm service`);
  return vmm;
}
