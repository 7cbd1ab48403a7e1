// A probe: a /bin/sh script run as service "probe" of a test VM (next to other services and a
// sleeping vmm), its output kept in its own runtime dir for the test to read.

import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'vitest';
import type { ServiceConfig, VmConfig } from '../../../config/types.js';
import { serviceExit, start, stop, type Run } from './inprocess.js';
import { leftovers } from './leftovers.js';
import { service, SLEEPER, vmConfig, type TestVm } from './vm.js';

export interface ProbeResult {
  code: number | null;
  signal: string | null;
  out: string;
  run: Run;
}

/** Run `script` as service "probe"; resolves when it exited and the VM runs (stop it with stopProbe). */
export async function runProbe(
  vm: TestVm,
  script: string,
  opts: { env?: Record<string, string>; over?: Partial<ServiceConfig>; others?: ServiceConfig[]; vmOver?: Partial<VmConfig>; exitTimeoutMs?: number } = {},
): Promise<ProbeResult> {
  const outFile = `${vm.runtimeDir}/probe/out`;
  const p = service({
    name: 'probe',
    argv: ['/bin/sh', '-c', `exec >${outFile} 2>&1\n${script}`],
    env: { PATH: '/usr/bin:/bin', ...opts.env },
    ...opts.over,
  });
  const run = start(vmConfig(vm, [...(opts.others ?? []), p, SLEEPER], opts.vmOver), vm);
  const exit = await serviceExit(run, 'probe', opts.exitTimeoutMs);
  await run.waitFor('running');
  const out = existsSync(outFile) ? readFileSync(outFile, 'utf8') : '';
  if (process.env.VMSANDBOX_TEST_DEBUG) console.log(`probe exit ${exit.code ?? exit.signal}:\n${out}`);
  return { code: exit.code, signal: exit.signal, out, run };
}

/** Stop the probe's VM: it stops cleanly and leaves nothing. */
export async function stopProbe(vm: TestVm, r: ProbeResult): Promise<void> {
  const output = await stop(r.run);
  expect({ ...output, events: r.run.events }).toMatchObject({ outcome: 'stopped' });
  expect(leftovers(vm)).toEqual([]);
}
