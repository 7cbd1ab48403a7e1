// The VM lock in the simulator: the ownership port (effects/owner.ts) over the model kernel's lock
// table, in virtual time. Same shape as the Linux one (effects/linux/owner.ts): a VM lock and a
// runtime-directory lock, both taken or neither, never blocking; a held lock's record carries the
// journal; the record stays in the table after the holder lets go while it has a reader (as the
// lock file does: recordWorthKeeping), so the next owner sees what the last one left. What to do with a claim (wait for a stopping owner,
// refuse, what to say) is effects/owner.ts's, shared with `vmsandbox run` and `finish`.

import type { VmConfig } from '../config/types.js';
import type { Claim, Journal, OwnerRecord, OwnershipPort, Phase, VmLock } from '../effects/owner.js';
import { emptyJournal, recordWorthKeeping } from '../effects/owner.js';
import { EffectError } from '../effects/port.js';
import type { VirtualClock } from './clock.js';
import type { LockSlot, SimKernel } from './kernel.js';

/** Managers are host processes outside the model's PID space: manager n has pid 1000 + n. */
export function managerPid(manager: number): number {
  return 1000 + manager;
}

/** Builds the ownership port a manager uses (tests pass a broken one to show the invariant bites). */
export type OwnershipFactory = (kernel: SimKernel, clock: VirtualClock, manager: number) => OwnershipPort;

function slot(table: Map<string, LockSlot>, key: string): LockSlot {
  let s = table.get(key);
  if (!s) table.set(key, (s = { holder: 0, record: null }));
  return s;
}

/** A held lock of the table. A class, not closures: every simulated run takes one. */
class SimLock implements VmLock {
  private released = false;

  constructor(
    readonly previous: OwnerRecord | null,
    readonly record: OwnerRecord,
    private readonly vm: LockSlot,
    private readonly rd: LockSlot,
  ) {}

  journal(): Journal {
    return this.record.journal;
  }

  setJournal(j: Journal): void {
    if (this.released) throw new EffectError('lock', 'EBADF', `the lock of vm ${this.record.vm} was released`);
    this.record.journal = j;
  }

  update(patch: Partial<Omit<OwnerRecord, 'vm' | 'pid' | 'journal'>>): void {
    if (!this.released) Object.assign(this.record, patch);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    // As the Linux port unlinks its files: the record stays only while it has a reader.
    if (!recordWorthKeeping(this.record)) this.vm.record = null;
    this.rd.record = null;
    this.vm.holder = 0;
    this.rd.holder = 0;
  }
}

export const simOwnership: OwnershipFactory = (kernel, clock, manager) => ({
  now: () => clock.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = clock.schedule(ms, done);
      signal?.addEventListener('abort', done, { once: true });
    }),
  tryClaim(config: VmConfig, me: { pid: number; phase: Phase }): Claim {
    const vm = slot(kernel.vmLocks, config.name);
    if (vm.holder !== 0) return { ok: false, what: `vm ${config.name}`, holder: vm.record };
    const rd = slot(kernel.dirLocks, config.runtimeDir);
    if (rd.holder !== 0) return { ok: false, what: `runtime dir ${config.runtimeDir}`, holder: rd.record };
    const previous = vm.record;
    const record: OwnerRecord = {
      vm: config.name,
      pid: me.pid,
      since: clock.now(),
      phase: me.phase,
      stopBy: null,
      exitCode: null,
      endedAt: null,
      // What the previous owners left stays ours to remove until it is removed.
      journal: previous?.journal ?? emptyJournal(),
    };
    vm.holder = manager;
    rd.holder = manager;
    vm.record = record;
    rd.record = record;
    const lock = new SimLock(previous, record, vm, rd);
    return { ok: true, lock };
  },
});
