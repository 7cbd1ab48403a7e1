// Views instead of visibility: a VM's mount namespace shows its own runtime dir and no other VM's,
// and each service's directory there is its own (0700). Two VMs at once. The probe holds
// CAP_DAC_OVERRIDE, as virtiofsd does: file modes do not stop it, and Landlock does not govern
// connect(2) to a named socket, so only not seeing the other VM's directory does.

import { existsSync, readFileSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { serviceExit, start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`skipping the view tests: ${skip}`);

describe.skipIf(skip)('a VM sees its own runtime dir, not another VM\'s', () => {
  const vms: TestVm[] = [];
  afterEach(() => {
    for (const vm of vms.splice(0)) forceCleanup(vm);
  });
  afterAll(() => removeTestParents());

  it('a service with DAC_OVERRIDE in VM B finds nothing of VM A under the runtime root; it does reach its sibling\'s 0700 dir (control)', async () => {
    ensureNative();
    const a = newTestVm();
    vms.push(a);
    const runA = start(vmConfig(a, [SLEEPER]), a);
    await runA.waitFor('running');

    const b = newTestVm();
    vms.push(b);
    const out = `${b.runtimeDir}/probe/out`;
    const script = [
      `exec >${out} 2>&1`,
      `[ -e ${b.runtimeDir}/vmm ] && echo "own-vmm-dir: visible" || echo "own-vmm-dir: absent"`,
      `[ -e ${a.runtimeDir} ] && echo "other-vm: visible" || echo "other-vm: absent"`,
      `[ -e ${a.runtimeDir}/vmm ] && echo "other-vmm-dir: visible" || echo "other-vmm-dir: absent"`,
      // Control: the capability does bypass modes where the view shows something: the vmm's own dir is 0700, uid 62002.
      `ls -ld ${b.runtimeDir}/vmm | cut -c1-10`,
      `touch ${b.runtimeDir}/vmm/dac-override && echo "sibling-dir: writable" || echo "sibling-dir: denied"`,
    ].join('\n');
    const probe = service({ name: 'probe', argv: ['/bin/sh', '-c', script], caps: ['CAP_DAC_OVERRIDE'], landlock: { read: ['/usr', '/bin', '/lib', '/lib64', '/etc'], write: [b.runtimeDir] } });
    const runB = start(vmConfig(b, [probe, { ...SLEEPER, onExit: 'stop' }], {}), b);
    const exit = await serviceExit(runB, 'probe');
    expect(exit.code).toBe(0);
    const said = readFileSync(out, 'utf8');
    // stat(2) sees what is in the view (Landlock does not govern path walks): its own VM's, not A's.
    expect(said).toContain('own-vmm-dir: visible');
    expect(said).toContain('other-vm: absent');
    expect(said).toContain('other-vmm-dir: absent');
    expect(said).toContain('drwx------');
    expect(said).toContain('sibling-dir: writable');
    // On the host A's directories are there, A running: only B's view lacks them.
    expect(existsSync(`${a.runtimeDir}/vmm`)).toBe(true);
    await stop(runB);
    expect((await stop(runA)).outcome).toBe('stopped');
    expect(leftovers(a)).toEqual([]);
    expect(leftovers(b)).toEqual([]);
  }, 30_000);
});
