// The cgroup layout of a VM, relative to the cgroup2 mount, in one place: the Linux backend, the
// host check, the status socket and the simulator all derive their paths from here.
//
//   <cgroup.parent>/<name>                 the VM: holds no process, carries the VM's limits
//   <cgroup.parent>/<name>/init            the sandbox's PID 1
//   <cgroup.parent>/<name>/svc-<service>   one leaf per service, with its limits
//
// The "svc-" prefix keeps a service named "init" from colliding with the init's leaf.

import type { VmConfig } from './types.js';

export const INIT_LEAF = 'init';

export function serviceLeaf(service: string): string {
  return `svc-${service}`;
}

/** "<parent>/<name>", parent's empty segments dropped (cgroup.parent is validated by the loader). */
export function vmCgroupPath(config: Pick<VmConfig, 'name' | 'cgroup'>): string {
  return [...config.cgroup.parent.split('/').filter(Boolean), config.name].join('/');
}

export function initCgroupPath(config: Pick<VmConfig, 'name' | 'cgroup'>): string {
  return `${vmCgroupPath(config)}/${INIT_LEAF}`;
}

export function serviceCgroupPath(config: Pick<VmConfig, 'name' | 'cgroup'>, service: string): string {
  return `${vmCgroupPath(config)}/${serviceLeaf(service)}`;
}
