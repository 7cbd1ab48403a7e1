// One plan, two backends: the same config run on this host's kernel (effects/linux) and in the
// simulator (sim/), given this host's facts, executes the same operations in the same order, and
// those are exactly the plan's (plan/record.ts). So what the simulator checks is the policy that
// runs, not a copy of it.

import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { linuxHostFacts } from '../../effects/linux/hostFacts.js';
import { runSandbox, type SandboxRun } from '../../machines/runner.js';
import { planSandbox } from '../../plan/index.js';
import { setupOperations } from '../../plan/record.js';
import { createSimBackend } from '../../sim/backend.js';
import { VirtualClock } from '../../sim/clock.js';
import { demoPlan } from '../../sim/demoPlan.js';
import { SimKernel } from '../../sim/kernel.js';
import { start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`skipping the plan equivalence test: ${skip}`);

/** Step the simulator's virtual time until `done` holds (promises settled between steps). */
async function drive(clock: VirtualClock, run: SandboxRun, done: () => boolean): Promise<void> {
  for (let i = 0; i < 100_000; i++) {
    for (let h = 0; h < 16; h++) await null;
    if (done()) return;
    if (!clock.step()) throw new Error(`the simulation stopped before the condition held (at ${JSON.stringify(run.actor?.getSnapshot().value)})`);
  }
  throw new Error('the simulation did not reach the condition');
}

describe('the simulator and the Linux backend execute the same plan', () => {
  let vm: TestVm | null = null;
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => removeTestParents());

  it.skipIf(skip)('same operations, same order, and they are the plan\'s', async () => {
    ensureNative();
    vm = newTestVm();
    // Something of everything the plan decides: storage, private tmpfs, a capability, a socket, a
    // device, an optional limit, Landlock rules; the vmm last.
    const config = vmConfig(
      vm,
      [
        { ...SLEEPER, limits: { 'cpu.weight': 50 } },
        service({
          name: 'virtiofsd',
          argv: ['/bin/sleep', '1000'],
          storage: 'rw',
          tmp: '8M',
          shm: '4M',
          caps: ['CAP_CHOWN'],
          devices: ['/dev/fuse'],
          sockets: [{ path: `${vm.runtimeDir}/virtiofsd/fs.sock`, fd: 3, mode: '0660', gid: 62001 }],
        }),
      ],
      { cgroup: { parent: 'vmsandbox-test', limits: { 'pids.max': 100 }, limitsOptional: true } },
    );
    const facts = linuxHostFacts(config);
    const planned = planSandbox(config, facts);
    expect(planned.ok, JSON.stringify(planned)).toBe(true);
    if (!planned.ok) return;

    // On this host's kernel.
    const real = start(config, vm);
    await real.waitFor('running');
    const linux = [...real.backend.executed];
    expect((await stop(real)).outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);

    // In the simulator, given the same facts.
    const clock = new VirtualClock();
    const kernel = new SimKernel(clock, facts.landlockAbi, new Set(facts.cgroupControllers), () => undefined);
    const backend = createSimBackend(config, kernel, { ...demoPlan, stopAt: [], pidReuse: 0 }, clock, () => undefined, { record: true });
    const sim = runSandbox(backend, config, { clock });
    await drive(clock, sim, () => sim.actor!.getSnapshot().matches('running'));
    const simulated = [...backend.executed];
    sim.requestStop('SIGTERM');
    await drive(clock, sim, () => sim.actor!.getSnapshot().status === 'done');
    expect((await sim.done).outcome).toBe('stopped');

    expect(simulated).toEqual(linux);
    expect(linux).toEqual(setupOperations(planned.plan));
    expect(linux.filter((l) => l.startsWith('spawn ')).map((l) => l.split(' ')[1])).toEqual(['virtiofsd', 'vmm']);
  });
});
