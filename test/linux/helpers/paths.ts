// Where the real-kernel tests put their VMs on the host: their own cgroup parent and runtime root,
// apart from a production manager's, so a leak check or cleanup can never touch a real VM.

import { join } from 'node:path';
import { findCgroup2Mount } from '../../../effects/linux/cgroup.js';

export const repoRoot = join(import.meta.dirname, '..', '..', '..');

/** The cgroup parent of every test VM (config `cgroup.parent`). */
export const CGROUP_PARENT = 'vmsandbox-test';

/** The directory holding every test VM's runtime dir (`vmsandbox inspect --runtime-root` to see them). */
export const TEST_RUNTIME_ROOT = '/run/vmsandbox-test';

export function cgroupParentDir(): string {
  return join(findCgroup2Mount()!, CGROUP_PARENT);
}
