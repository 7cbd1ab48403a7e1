// `vmsandbox run` as a child process, the config file it reads, and `finish`'s teardown from the
// journal after the child was SIGKILLed.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VmConfig } from '../../../config/types.js';
import { createLinuxBackend } from '../../../effects/linux/backend.js';
import { linuxOwnership } from '../../../effects/linux/owner.js';
import { CGROUP_PARENT, repoRoot } from './paths.js';
import { service, SYSTEM_READ, vmConfig, type TestVm } from './vm.js';

/**
 * What `vmsandbox finish` does after a SIGKILLed manager: take the VM's lock (free: its owner is
 * dead), and with a fresh backend on the lock's journal, killAll + cleanup, twice (idempotent: the
 * second round finds nothing and must succeed too).
 */
export async function finishFromJournal(config: VmConfig): Promise<void> {
  const claim = linuxOwnership().tryClaim(config, { pid: process.pid, phase: 'finish' });
  if (!claim.ok) throw new Error(`vm ${config.name} is still owned: ${JSON.stringify(claim.holder)}`);
  const fresh = createLinuxBackend(config, { journal: claim.lock });
  const ac = new AbortController();
  try {
    for (let round = 0; round < 2; round++) {
      await fresh.effects.killAll({}, ac.signal);
      await fresh.effects.cleanup({}, ac.signal);
    }
  } finally {
    fresh.dispose();
    claim.lock.release();
  }
}

/** A `vmsandbox run CONFIG` child, its stdout parsed as pino JSON lines as they arrive. */
export interface RunningManager {
  /** The manager's pid (bin/vmsandbox execs node: the same process). */
  pid: number;
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
  stderr(): string;
  /** Everything it printed, for assertion messages. */
  log(): string;
  kill(sig: NodeJS.Signals): void;
  /** Resolves once a line with this state was logged; rejects with the log after timeoutMs. */
  waitForState(state: string, timeoutMs?: number): Promise<void>;
}

export function spawnRun(file: string): RunningManager {
  const child = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const log = () => `${lines.map((l) => JSON.stringify(l)).join('\n')}\n--- stderr ---\n${stderr}`;
  return {
    pid: child.pid!,
    lines,
    exited,
    stderr: () => stderr,
    log,
    kill: (sig) => child.kill(sig),
    waitForState: (state, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no state ${state} within ${timeoutMs} ms; log:\n${log()}`)), timeoutMs);
        const check = () => {
          if (lines.some((l) => l.state === state)) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      }),
  };
}

/** The raw JSON config `vmsandbox run` reads (a helper sleeper and a vmm), written to the scratch dir. */
export function writeRunConfig(vm: TestVm, vmmArgv: string[], timeouts = { stopMs: 3000, killMs: 2000 }): { file: string; config: VmConfig } {
  const raw = {
    name: vm.name,
    storage: vm.storage,
    runtimeDir: vm.runtimeDir,
    timeouts,
    cgroup: { parent: CGROUP_PARENT },
    landlock: { minAbi: 1 },
    services: [
      { name: 'helper', argv: ['/bin/sleep', '1000'], uid: 62001, gid: 62001, tmp: true, landlock: { read: SYSTEM_READ, write: [] } },
      { name: 'vmm', vmm: true, argv: vmmArgv, uid: 62002, gid: 62002, env: { PATH: '/usr/bin:/bin' }, landlock: { read: SYSTEM_READ, write: [] } },
    ],
  };
  const file = join(vm.scratch, 'vm.json');
  writeFileSync(file, JSON.stringify(raw));
  // The same VM as a typed config, for a fresh backend's killAll/cleanup (they use name, cgroup, runtimeDir).
  const config = vmConfig(vm, [service({ name: 'helper', argv: ['/bin/sleep', '1000'] }), service({ name: 'vmm', argv: vmmArgv, vmm: true, uid: 62002, gid: 62002 })], {
    timeouts: { setupMs: 10_000, ...timeouts },
  });
  return { file, config };
}
