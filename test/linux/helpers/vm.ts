// Test VMs: unique names and directories, and configs built from a few defaults.

import { mkdtempSync } from 'node:fs';
import type { ServiceConfig, VmConfig } from '../../../config/types.js';
import { CGROUP_PARENT, TEST_RUNTIME_ROOT } from './paths.js';

let counter = 0;

export interface TestVm {
  /** The VM's PID namespace (readlink of /proc/<init>/ns/pid), once known. */
  pidNs?: string[];
  name: string;
  storage: string;
  runtimeDir: string;
  scratch: string;
}

/** Unique names and temp dirs for one test VM. */
export function newTestVm(): TestVm {
  const name = `vmsandbox-t${process.pid}-${++counter}`;
  const storage = mkdtempSync('/tmp/vmsandbox-storage-');
  const scratch = mkdtempSync('/tmp/vmsandbox-scratch-');
  return { name, storage, runtimeDir: `${TEST_RUNTIME_ROOT}/${name}`, scratch };
}

/** Paths every test service may read: enough to run /bin/sh and coreutils. */
export const SYSTEM_READ = ['/usr', '/bin', '/lib', '/lib64', '/etc'];

export function service(over: Partial<ServiceConfig> & { name: string; argv: string[] }): ServiceConfig {
  return {
    env: { PATH: '/usr/bin:/bin' },
    uid: 62001,
    gid: 62001,
    groups: [],
    vmm: false,
    storage: 'none',
    tmp: false,
    shm: false,
    landlock: { read: SYSTEM_READ, write: [] },
    limits: {},
    caps: [],
    devices: [],
    stop: { signal: 'SIGTERM' },
    onExit: 'ignore',
    ...over,
  };
}

export function vmConfig(vm: TestVm, services: ServiceConfig[], over: Partial<VmConfig> = {}): VmConfig {
  return {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts: { setupMs: 10_000, stopMs: 3_000, killMs: 3_000 },
    cgroup: { parent: CGROUP_PARENT, limits: {}, limitsOptional: false },
    landlock: { minAbi: 1, allowDegraded: false },
    services,
    ...over,
  };
}

export const SLEEPER = service({ name: 'vmm', argv: ['/bin/sleep', '1000'], vmm: true });
