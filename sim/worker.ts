// A worker thread of `vmsandbox sim --jobs J` (sim/parallel.ts): runs the batches of seeds it is
// sent, one at a time, and answers each with its tally.

import { parentPort, workerData } from 'node:worker_threads';
import type { VmConfig } from '../config/types.js';
import { runBatch } from './tally.js';

const { config } = workerData as { config?: VmConfig };
parentPort!.on('message', ({ from, to }: { from: number; to: number }) => {
  void runBatch(from, to, { config }).then((t) => parentPort!.postMessage(t));
});
