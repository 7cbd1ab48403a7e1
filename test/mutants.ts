// Realistic machine bugs, made as mutants of the real machine's config (never committed to it).
// test/mutants.test.ts shows the simulator catches each; test/engine.test.ts that the lean engine
// catches each at the same seed as XState. docs/simulation.md lists them.

import { createMachine } from 'xstate';
import { sandboxMachine } from '../machines/sandbox.js';
import type { SandboxMachine } from '../machines/sandbox.js';

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
  /** What the violation found must say. */
  caughtBy: RegExp;
}

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
        SERVICE_EXITED: [{ guard: 'isVmmExit', target: '#vmsandbox.cleanup', actions: 'recordExit' }, { actions: 'recordExit' }],
      })),
    ),
    caughtBy: /processes left|cgroups left/,
  },
];
