// A service that exits at once: its `exit` from the init can be read in the same chunk as its
// spawn's reply, before the launch has recorded the service. The backend must still know it
// exited; otherwise the graceful stop waits for it until stopMs and ends forced (exit 2). Found
// when the manager's setup got faster (its cgroupfs calls synchronous) and the escape tests' stops
// came out forced now and then.

import { createActor } from 'xstate';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxEffects } from '../../effects/port.js';
import { bindEffects } from '../../machines/bindBackend.js';
import { serviceExit, start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/early-exit skipped: ${skip}`);

/** Block the event loop: whatever the init sends meanwhile is read afterwards, in one go. */
function busy(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

/**
 * The real effects, except that launching `name` blocks the manager's event loop once the spawn
 * request is written: the init answers, the service exits and the init reports it, all before the
 * manager reads any of it.
 */
function readLate(effects: SandboxEffects, name: string): SandboxEffects {
  return {
    ...effects,
    launch: async (input, signal) => {
      const launched = effects.launch(input, signal);
      if (input.service.name === name) {
        await new Promise((r) => setImmediate(r));
        busy(300);
      }
      return launched;
    },
  };
}

describe.skipIf(skip)('a service that exits at once', () => {
  let vm: TestVm | null = null;
  beforeAll(() => ensureNative());
  afterEach(async () => {
    if (vm) await forceCleanup(vm);
    vm = null;
  });
  afterAll(() => removeTestParents());

  it('is known to have exited even when its exit is read with its launch\'s reply: the stop is graceful, well before stopMs', async () => {
    vm = newTestVm();
    const quick = service({ name: 'quick', argv: ['/bin/true'] });
    const config = vmConfig(vm, [quick, SLEEPER]);
    const run = start(config, vm, {
      hooks: { actorFor: (effects, options) => createActor(bindEffects(readLate(effects, 'quick')), options as never) },
    });
    expect(await serviceExit(run, 'quick')).toMatchObject({ code: 0 });
    await run.waitFor('running');
    const t = Date.now();
    expect(await stop(run)).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(Date.now() - t).toBeLessThan(config.timeouts.stopMs);
    expect(leftovers(vm)).toEqual([]);
  });
});
