// The host facts the plan needs (plan/types.ts HostFacts), probed on this host: the Landlock ABI
// and the cgroup v2 controllers the VM's cgroup can use. Read-only: nothing is created.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VmConfig } from '../../config/types.js';
import type { HostFacts } from '../../plan/types.js';
import { findCgroup2Mount } from './cgroup.js';
import { landlockAbi } from './native.js';

function words(path: string): string[] | null {
  try {
    return readFileSync(path, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return null;
  }
}

/**
 * The controllers the VM's cgroup can use: cgroup.controllers of the deepest directory that
 * exists on the way to cgroup.parent (the backend creates the rest and enables them on the way).
 */
export function cgroupControllersFor(config: VmConfig, mount: string): { where: string; controllers: string[] } {
  let where = mount;
  let controllers = words(join(mount, 'cgroup.controllers')) ?? [];
  for (const seg of config.cgroup.parent.split('/').filter(Boolean)) {
    const next = join(where, seg);
    const c = words(join(next, 'cgroup.controllers'));
    if (c === null) break;
    where = next;
    controllers = c;
  }
  return { where, controllers };
}

export function linuxHostFacts(config: VmConfig, mountinfo?: string): HostFacts & { cgroup2Mount: string | null } {
  const mount = findCgroup2Mount(mountinfo);
  return {
    landlockAbi: landlockAbi(),
    cgroupControllers: mount ? cgroupControllersFor(config, mount).controllers : [],
    cgroup2Mount: mount,
  };
}
