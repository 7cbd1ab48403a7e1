// Many seeds at once (`vmsandbox sim --runs N --jobs J`): a run is a pure function of its seed, so
// seeds can go to worker threads, one per core, in any order; the merged tally is the one a single
// thread gives, only sooner. Seeds are handed out in batches as workers ask for more, so a core
// that the machine's other load slows down takes fewer, and each finished batch is a progress
// report for the main thread.

import { Worker } from 'node:worker_threads';
import type { VmConfig } from '../config/types.js';
import type { SimOptions } from './run.js';
import type { Tally } from './tally.js';
import { emptyTally, mergeTally, runBatch } from './tally.js';

/** Runs seeds from..to-1 somewhere and tallies them. */
export type Executor = (from: number, to: number) => Promise<Tally>;

/** At most this many seeds per batch: about half a second of one core, so progress stays live. */
export const MAX_BATCH = 1000;

export interface SeedsOptions {
  config?: VmConfig;
  /** Worker threads; 1 runs every seed in this thread (no worker started). */
  jobs: number;
  /** Called after each batch with the tally so far (failures not yet in seed order). */
  onBatch?: (sofar: Tally) => void;
}

export async function simulateSeeds(from: number, runs: number, opts: SeedsOptions): Promise<Tally> {
  const jobs = Math.max(1, Math.min(opts.jobs, runs));
  if (jobs === 1) return dispatch(from, runs, [inThread({ config: opts.config })], opts.onBatch);
  const pool = workerPool(jobs, opts.config);
  try {
    return await dispatch(from, runs, pool.executors, opts.onBatch);
  } finally {
    await pool.close();
  }
}

/** `jobs` worker threads, each an executor of one batch at a time; close() ends them. */
export function workerPool(jobs: number, config: VmConfig | undefined): { executors: Executor[]; close: () => Promise<void> } {
  const workers = Array.from({ length: jobs }, () => new SimWorker(config));
  return { executors: workers.map((w) => w.run), close: async () => void (await Promise.all(workers.map((w) => w.close()))) };
}

/** Seeds in this thread; tests pass a machine or a VM lock of their own (they cannot cross to a worker). */
export function inThread(opts: Pick<SimOptions, 'config' | 'machine' | 'ownership'>): Executor {
  return (from, to) => runBatch(from, to, opts);
}

/**
 * Seeds from..from+runs-1 over the executors: each takes the next batch as soon as it is free.
 * The tally's failures come back in seed order.
 */
export async function dispatch(from: number, runs: number, executors: Executor[], onBatch?: (sofar: Tally) => void): Promise<Tally> {
  const total = emptyTally();
  const end = from + runs;
  // Small runs still give every executor several batches.
  const size = Math.max(1, Math.min(MAX_BATCH, Math.ceil(runs / (executors.length * 4))));
  let next = from;
  const loop = async (run: Executor) => {
    while (next < end) {
      const start = next;
      next = Math.min(end, start + size);
      mergeTally(total, await run(start, next));
      onBatch?.(total);
    }
  };
  await Promise.all(executors.map(loop));
  total.failures.sort((a, b) => a.seed - b.seed);
  return total;
}

/** One worker thread (sim/worker.ts), one batch at a time. */
class SimWorker {
  private readonly worker: Worker;
  private pending: { resolve: (t: Tally) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;

  constructor(config: VmConfig | undefined) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { config } });
    this.worker.on('message', (t: Tally) => this.settle(null, t));
    this.worker.on('error', (e) => this.settle(e, null));
    this.worker.on('exit', (code) => this.settle(new Error(`simulation worker exited with code ${code}`), null));
  }

  readonly run: Executor = (from, to) => {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage({ from, to });
    });
  };

  private settle(error: Error | null, tally: Tally | null): void {
    const p = this.pending;
    this.pending = null;
    if (error) this.failed ??= error;
    if (!p) return;
    if (tally) p.resolve(tally);
    else p.reject(this.failed!);
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
