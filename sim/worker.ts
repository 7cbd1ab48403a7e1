// A worker thread running a slice of seeds for `vmsandbox sim --jobs N`.

import { parentPort, workerData } from 'node:worker_threads';
import type { VmConfig } from '../config/types.js';
import { runSeed } from './bulk.js';
import type { Engine } from './run.js';

const { from, to, config, engine } = workerData as { from: number; to: number; config?: VmConfig; engine: Engine };
const failures: { seed: number; violations: string[] }[] = [];
let passed = 0;
for (let seed = from; seed < to; seed++) {
  const r = await runSeed(seed, { config, engine });
  if (r.ok) passed++;
  else failures.push({ seed, violations: r.violations });
}
parentPort!.postMessage({ passed, failures });
