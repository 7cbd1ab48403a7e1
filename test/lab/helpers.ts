// Helpers of the kernel-lab tests (test/lab/, run for real by `npm run test:lab` inside a guest
// kernel whose cgroup2 has every controller; see docs/lab.md). On a host without the controllers
// they skip with the reason printed, like test/linux/limits.test.ts.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findCgroup2Mount } from '../../effects/linux/cgroup.js';
import { cgroupParentDir } from '../linux/helpers/paths.js';
import { skipReason } from '../linux/helpers/skip.js';

/** Why the cgroup controllers `need` cannot be used for a test VM here, or null. */
export function controllersSkipReason(need: string[]): string | null {
  const base = skipReason();
  if (base) return base;
  // Where the VM's cgroups would be created: the controllers the hierarchy can hand down (the
  // root's, since createCgroups enables them on the way down).
  let dir = cgroupParentDir();
  while (!existsSync(join(dir, 'cgroup.controllers'))) dir = join(dir, '..');
  const root = findCgroup2Mount()!;
  const available = readFileSync(join(root, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
  const missing = need.filter((c) => !available.includes(c));
  return missing.length ? `the cgroup2 hierarchy here has no ${missing.join(' or ')} controller (run it in the kernel lab: npm run test:lab)` : null;
}

/** A cgroup interface file as key → number (cpu.stat, memory.stat, memory.events, pids.events). */
export function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}

/** A single-value cgroup file as a number (memory.current, …); null if absent. */
export function readNumber(file: string): number | null {
  try {
    const v = readFileSync(file, 'utf8').trim();
    return v === 'max' ? Infinity : Number(v);
  } catch {
    return null;
  }
}

/** The cgroup2 directory of this process (the manager: the tests run the machine in process). */
export function ownCgroupDir(): string {
  const rel = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
  return join(findCgroup2Mount()!, rel);
}

export const MiB = 1024 * 1024;
export const mib = (bytes: number | null) => (bytes === null ? 'n/a' : (bytes / MiB).toFixed(1));

/** One line of the lab's results (printed; the lab keeps vitest's output in test-output/lab/). */
export function report(what: string, data: unknown): void {
  console.log(`LAB RESULT ${what}: ${JSON.stringify(data)}`);
}
