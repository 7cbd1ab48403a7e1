// Removing what a VM's earlier runs left: the journalled cgroup (its processes killed first) and
// runtime directory, with the Linux backend's own killAll + cleanup. `vmsandbox finish` runs it
// after a manager died; `vmsandbox run` runs it when it takes a VM whose last owner died without
// tearing down. Only ever what the journal names (effects/owner.ts).

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VmConfig } from '../config/types.js';
import { createLinuxBackend } from '../effects/linux/index.js';
import { journalIsEmpty, type Journal, type JournalStore } from '../effects/owner.js';

interface Found {
  cgroups: string[];
  processes: number;
  runtimeDir: boolean;
}

function cgroupDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out = [dir];
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...cgroupDirs(join(dir, e.name)));
  } catch {
    /* vanished */
  }
  return out;
}

function countProcs(dirs: string[]): number {
  let n = 0;
  for (const d of dirs) {
    try {
      n += readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).length;
    } catch {
      /* gone */
    }
  }
  return n;
}

function survey(j: Journal): Found {
  const cgroups = j.cgroup ? cgroupDirs(j.cgroup) : [];
  return { cgroups, processes: countProcs(cgroups), runtimeDir: j.runtimeDir !== null && existsSync(j.runtimeDir) };
}

export interface Removal {
  /** What was there and is gone: "3 process(es)", "cgroup …", "runtime dir …". */
  removed: string[];
  /** What went wrong, and what is still there. */
  problems: string[];
}

export async function removeLeftovers(config: VmConfig, store: JournalStore, log: (msg: string) => void): Promise<Removal> {
  const journal = store.journal();
  const before = survey(journal);
  const problems: string[] = [];
  if (!journalIsEmpty(journal)) {
    if (process.getuid?.() !== 0) {
      problems.push('not root: cannot remove the leftovers');
    } else {
      const backend = createLinuxBackend(config, { journal: store, log });
      const bound = AbortSignal.timeout(config.timeouts.killMs + 2000);
      for (const op of ['killAll', 'cleanup'] as const) {
        try {
          await backend.effects[op]({}, bound);
        } catch (e) {
          problems.push(`${op}: ${(e as Error).message}`);
        }
      }
      backend.dispose();
    }
  }
  const after = survey(journal);
  const removed = [
    ...(before.processes > after.processes ? [`${before.processes - after.processes} process(es)`] : []),
    ...before.cgroups.filter((d) => !after.cgroups.includes(d)).map((d) => `cgroup ${d}`),
    ...(before.runtimeDir && !after.runtimeDir ? [`runtime dir ${journal.runtimeDir}`] : []),
  ];
  if (after.cgroups.length || after.runtimeDir) {
    problems.push(`still there: ${[...after.cgroups.map((d) => `cgroup ${d}`), ...(after.runtimeDir ? [`runtime dir ${journal.runtimeDir}`] : [])].join(', ')}`);
  }
  return { removed, problems };
}
