// Realistic machine bugs, made as mutants of the real machine's config (never committed to it),
// and one of the VM lock: a manager that does not respect it.
// test/mutants.test.ts shows the simulator catches each, by the first seed docs/simulation.md
// lists for it.

import { createMachine } from 'xstate';
import { emptyJournal, type OwnerRecord, type VmLock } from '../effects/owner.js';
import { sandboxMachine } from '../machines/sandbox.js';
import type { SandboxMachine } from '../machines/sandbox.js';
import type { OwnershipFactory } from '../sim/owner.js';
import { simOwnership } from '../sim/owner.js';

type Cfg = Record<string, unknown>;

/** Copy the machine config along `path`, replacing what is there with change(old). */
function edit(cfg: Cfg, path: string[], change: (old: Cfg) => Cfg): Cfg {
  if (path.length === 0) return change(cfg);
  const [head, ...rest] = path;
  return { ...cfg, [head!]: edit(cfg[head!] as Cfg, rest, change) };
}

export function mutant(change: (cfg: Cfg) => Cfg): SandboxMachine {
  return createMachine(change(sandboxMachine.config as unknown as Cfg) as never, sandboxMachine.implementations as never) as unknown as SandboxMachine;
}

const without = (key: string) => (o: Cfg) => {
  const copy = { ...o };
  delete copy[key];
  return copy;
};

export interface Mutant {
  name: string;
  machine: SandboxMachine;
  /** A VM lock other than the simulator's (the machine is then the product's). */
  ownership?: OwnershipFactory;
  /** What the violation found must say. */
  caughtBy: RegExp;
}

/**
 * A VM lock that does not lock: tryClaim always succeeds. Where the lock is taken it reads the
 * holder's record and goes ahead as if the VM were its own (a `vmsandbox run` or `finish` that
 * forgot the flock, or checked a pid file instead). The table, like the kernel's flock, still says
 * who really holds it.
 */
export const locklessOwnership: OwnershipFactory = (kernel, clock, manager) => {
  const port = simOwnership(kernel, clock, manager);
  return {
    ...port,
    tryClaim(config, me) {
      const c = port.tryClaim(config, me);
      if (c.ok) return c;
      const record: OwnerRecord = { ...(c.holder ?? { vm: config.name, since: clock.now(), stopBy: null, exitCode: null, endedAt: null }), pid: me.pid, phase: me.phase, journal: c.holder?.journal ?? emptyJournal() };
      const lock: VmLock = {
        previous: c.holder,
        record,
        journal: () => record.journal,
        setJournal: (j) => void (record.journal = j),
        update: (patch) => void Object.assign(record, patch),
        release: () => undefined,
      };
      return { ok: true, lock };
    },
  };
};

export const mutants: Mutant[] = [
  {
    name: 'bug 1: a stop request dropped during setup',
    machine: mutant((c) => edit(c, ['states', 'setup', 'on'], without('STOP_REQUESTED'))),
    caughtBy: /stop request at \d+ ms was not honoured|still running/,
  },
  {
    name: 'bug 2: cleanup skipped after a failed mount',
    machine: mutant((c) =>
      edit(c, ['states', 'setup', 'states', 'mount', 'invoke'], (inv) => ({
        ...inv,
        onError: { target: '#vmsandbox.failed', actions: (inv.onError as Cfg).actions },
      })),
    ),
    caughtBy: /processes left: vmsandbox-init|mounts left/,
  },
  {
    name: 'bug 3: no deadline on the graceful stop',
    machine: mutant((c) => edit(c, ['states', 'gracefulStop'], without('after'))),
    caughtBy: /did not terminate|not honoured|still running|teardown took/,
  },
  {
    name: 'bug 4: parent death ignored while running',
    machine: mutant((c) => edit(c, ['states', 'running', 'on'], without('PARENT_DIED'))),
    caughtBy: /parent death at \d+ ms was not honoured/,
  },
  {
    name: 'bug 5: the others never told to stop after the vmm (terminateServices skipped)',
    machine: mutant((c) =>
      edit(c, ['states', 'gracefulStop', 'states', 'vmm', 'on'], (on) => ({
        ...on,
        SERVICE_EXITED: [{ guard: 'isVmmExit', target: '#vmsandbox.teardown.cleanup', actions: 'recordExit' }, { actions: 'recordExit' }],
      })),
    ),
    caughtBy: /processes left|cgroups left/,
  },
  {
    name: 'bug 6: the VM lock not respected (tryClaim always succeeds: a second manager or finish takes a live VM)',
    machine: sandboxMachine,
    ownership: locklessOwnership,
    caughtBy: /(the second manager|`vmsandbox finish`) \(pid 100[23]\) .* while (the first manager \(pid 1001\) owned vm|nobody held the lock)/,
  },
];
