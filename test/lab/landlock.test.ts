// Landlock below landlock.minAbi on a real older ABI (the lab's Debian 6.1 kernel offers ABI 2):
// refused by default, runs degraded and reported with allowDegraded — and what ABI 2 does enforce
// still holds. Runs in the kernel lab (`npm run test:lab`, docs/lab.md); skips on a kernel whose
// ABI has every protection the plan knows (nothing to degrade) or no Landlock.

import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { landlockAbi } from '../../effects/linux/native.js';
import { missingFeatures } from '../../plan/landlock.js';
import { start, stop } from '../linux/helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { repoRoot } from '../linux/helpers/paths.js';
import { runProbe } from '../linux/helpers/probe.js';
import { skipReason } from '../linux/helpers/skip.js';
import { newTestVm, SLEEPER, vmConfig, type TestVm } from '../linux/helpers/vm.js';
import { report } from './helpers.js';

function abiSkip(): { reason: string | null; abi: number } {
  const base = skipReason();
  if (base) return { reason: base, abi: 0 };
  ensureNative();
  const abi = landlockAbi();
  if (abi < 1) return { reason: 'no Landlock in this kernel', abi };
  if (missingFeatures(abi).length === 0) return { reason: `Landlock ABI ${abi} has every protection the plan knows: nothing runs degraded here (run it in the kernel lab: npm run test:lab)`, abi };
  return { reason: null, abi };
}

const { reason: skip, abi } = abiSkip();
if (skip) console.warn(`test/lab/landlock skipped: ${skip}`);

describe.skipIf(skip)(`Landlock below minAbi on the real ABI ${abi} (kernel lab)`, () => {
  let vm: TestVm;
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());
  const minAbi = abi + 1;

  it(`minAbi ${minAbi} is refused by default, naming what ABI ${abi} lacks`, async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [SLEEPER], { landlock: { minAbi, allowDegraded: false } }), vm);
    const out = await run.done;
    report('landlock-refused', { abi, minAbi, outcome: out.outcome, exitCode: out.exitCode, errors: out.errors });
    expect(out.outcome).toBe('setupFailed');
    expect(run.run.refused).not.toBeNull();
    expect(out.errors.join('\n')).toContain(`landlock.minAbi: the kernel offers Landlock ABI ${abi}, the config needs ${minAbi} (missing: ${missingFeatures(abi).join(', ')})`);
    expect(leftovers(vm)).toEqual([]);
  });

  it('with allowDegraded it runs, reports the ABI and what it lacks, and still enforces the ABI\'s rules', async () => {
    vm = newTestVm();
    // The probe may read the system paths only: the repo (readable by its mode bits) is outside its rules.
    const r = await runProbe(vm, `cat ${repoRoot}/package.json >/dev/null && echo read-ok || echo read-denied`, {
      vmOver: { landlock: { minAbi, allowDegraded: true } },
    });
    const report_ = r.run.actor.getSnapshot().context.landlock!;
    report('landlock-degraded', { abi, minAbi, landlock: report_, probe: r.out });
    expect(report_.abi).toBe(abi);
    expect(report_.degraded).toEqual(missingFeatures(abi));
    expect(report_.degraded.length).toBeGreaterThan(0);
    expect(r.out).toMatch(/read-denied/);
    const output = await stop(r.run);
    expect(output.outcome).toBe('stopped');
    expect(leftovers(vm)).toEqual([]);
  });
});
