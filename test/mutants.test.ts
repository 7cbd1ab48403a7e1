// The simulator's teeth: realistic machine bugs, made here as mutants of the real machine (never
// committed to it), must each be caught by the seeds and invariants. docs/simulation.md lists them.

import { describe, expect, it } from 'vitest';
import { createMachine } from 'xstate';
import { bindEffects } from '../machines/bindBackend.js';
import { sandboxMachine } from '../machines/sandbox.js';
import { simulate } from '../sim/run.js';

type Cfg = Record<string, unknown>;

/** Copy the machine config along `path`, replacing what is there with edit(old). */
function edit(cfg: Cfg, path: string[], change: (old: Cfg) => Cfg): Cfg {
  if (path.length === 0) return change(cfg);
  const [head, ...rest] = path;
  return { ...cfg, [head!]: edit(cfg[head!] as Cfg, rest, change) };
}

function mutant(change: (cfg: Cfg) => Cfg) {
  const m = createMachine(change(sandboxMachine.config as unknown as Cfg) as never, sandboxMachine.implementations as never);
  return (effects: Parameters<typeof bindEffects>[0]) => bindEffects(effects, m as unknown as typeof sandboxMachine);
}

const without = (key: string) => (o: Cfg) => {
  const copy = { ...o };
  delete copy[key];
  return copy;
};

/** The first failing seed in 1..limit, and its violations. */
async function hunt(machine: ReturnType<typeof mutant>, limit = 2000) {
  for (let seed = 1; seed <= limit; seed++) {
    const r = await simulate(seed, { machine });
    if (!r.ok) return { seed, violations: r.violations };
  }
  return null;
}

describe('mutants of the machine are caught by the simulator', () => {
  it('the real machine passes the same seeds (the control)', async () => {
    expect(await hunt((effects) => bindEffects(effects), 500)).toBeNull();
  });

  it('bug 1: a stop request dropped during setup', async () => {
    const found = await hunt(mutant((c) => edit(c, ['states', 'setup', 'on'], without('STOP_REQUESTED'))));
    expect(found).not.toBeNull();
    expect(found!.violations.join('\n')).toMatch(/stop request at \d+ ms was not honoured|still running/);
  });

  it('bug 2: cleanup skipped after a failed mount', async () => {
    const found = await hunt(
      mutant((c) =>
        edit(c, ['states', 'setup', 'states', 'mount', 'invoke'], (inv) => ({
          ...inv,
          onError: { target: '#vmsandbox.failed', actions: (inv.onError as Cfg).actions },
        })),
      ),
    );
    expect(found).not.toBeNull();
    expect(found!.violations.join('\n')).toMatch(/processes left: vmsandbox-init|mounts left/);
  });

  it('bug 3: no deadline on the graceful stop', async () => {
    const found = await hunt(mutant((c) => edit(c, ['states', 'gracefulStop'], without('after'))));
    expect(found).not.toBeNull();
    expect(found!.violations.join('\n')).toMatch(/did not terminate|not honoured|still running|teardown took/);
  });

  it('bug 4: parent death ignored while running', async () => {
    const found = await hunt(mutant((c) => edit(c, ['states', 'running', 'on'], without('PARENT_DIED'))));
    expect(found).not.toBeNull();
    expect(found!.violations.join('\n')).toMatch(/parent death at \d+ ms was not honoured/);
  });

  it('bug 5: the others never told to stop after the vmm (terminateServices skipped)', async () => {
    const found = await hunt(
      mutant((c) =>
        edit(c, ['states', 'gracefulStop', 'states', 'vmm', 'on'], (on) => ({
          ...on,
          SERVICE_EXITED: [{ guard: 'isVmmExit', target: '#vmsandbox.cleanup', actions: 'recordExit' }, { actions: 'recordExit' }],
        })),
      ),
    );
    expect(found).not.toBeNull();
    expect(found!.violations.join('\n')).toMatch(/processes left|cgroups left/);
  });
});
