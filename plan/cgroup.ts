// The cgroup part of the plan: the VM's layout, relative to the cgroup2 mount, in one place (the
// Linux backend, the host check, the status socket and the simulator all derive their paths from
// here), and the limits each directory gets on this host.
//
//   <cgroup.parent>/<name>                 the VM: holds no process, carries the VM's limits
//   <cgroup.parent>/<name>/init            the sandbox's PID 1
//   <cgroup.parent>/<name>/svc-<service>   one leaf per service, with its limits
//   <cgroup.parent>/<name>/stop-command    the vmm's `command` stop method, on the host (made when
//                                          it first runs: effects/linux/stop.ts)
//
// The "svc-" prefix keeps a service named "init" (or "stop-command") from colliding with the
// init's leaf or the stop command's.

import type { Limits, VmConfig } from '../config/types.js';
import type { CgroupPlan, HostFacts, LimitWrite } from './types.js';

export const INIT_LEAF = 'init';
/**
 * The stop command runs unsandboxed on the host, but in this leaf of the VM's cgroup: whatever it
 * starts dies with the VM's cgroup.kill (teardown, or `finish` after the manager was SIGKILLed).
 */
export const STOP_COMMAND_LEAF = 'stop-command';

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

/**
 * The VM's cgroups and limit writes. A limit needs its controller: one the host does not offer is
 * refused, naming the limit's field, or skipped (and listed) with cgroup.limitsOptional.
 */
export function planCgroups(config: VmConfig, facts: HostFacts, refuse: (field: string, message: string) => void): CgroupPlan {
  const vm = vmCgroupPath(config);
  const limits: LimitWrite[] = [];
  const skipped: string[] = [];
  const add = (cgroup: string, set: Limits, fieldOf: (key: string) => string) => {
    for (const [key, value] of Object.entries(set)) {
      const field = fieldOf(key);
      const ctl = key.split('.')[0]!;
      if (facts.cgroupControllers.includes(ctl)) {
        limits.push({ cgroup, key, value: String(value), field });
        continue;
      }
      const why = `the ${ctl} controller is not available to the VM's cgroup in this cgroup2 hierarchy (is it bound to a cgroup v1 hierarchy? see /proc/cgroups)`;
      if (config.cgroup.limitsOptional) skipped.push(`${field}: ${why}`);
      else refuse(field, `${why}. Fix: give cgroup v2 the ${ctl} controller, or set cgroup.limitsOptional to run without this limit`);
    }
  };
  add(vm, config.cgroup.limits, (k) => `cgroup.limits[${JSON.stringify(k)}]`);
  config.services.forEach((s, i) => add(serviceCgroupPath(config, s.name), s.limits, (k) => `services[${i}].limits[${JSON.stringify(k)}]`));
  return {
    vm,
    init: initCgroupPath(config),
    leaves: config.services.map((s) => serviceCgroupPath(config, s.name)),
    limits,
    skipped,
  };
}
