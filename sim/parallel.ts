// Spread seeds over worker threads (one per core): a run is a pure function of its seed, so the
// slices are independent and the result is the same as one thread's, only sooner.

import { Worker } from 'node:worker_threads';
import type { VmConfig } from '../config/types.js';
import type { Engine } from './run.js';

export interface SliceResult {
  passed: number;
  failures: { seed: number; violations: string[] }[];
}

export async function simulateParallel(from: number, runs: number, jobs: number, config: VmConfig | undefined, engine: Engine): Promise<SliceResult> {
  const size = Math.ceil(runs / jobs);
  const slices: Promise<SliceResult>[] = [];
  for (let start = from; start < from + runs; start += size) {
    const to = Math.min(start + size, from + runs);
    slices.push(
      new Promise((resolve, reject) => {
        const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: { from: start, to, config, engine } });
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (code) => code !== 0 && reject(new Error(`simulation worker exited with code ${code}`)));
      }),
    );
  }
  const results = await Promise.all(slices);
  return {
    passed: results.reduce((n, r) => n + r.passed, 0),
    failures: results.flatMap((r) => r.failures).sort((a, b) => a.seed - b.seed),
  };
}
