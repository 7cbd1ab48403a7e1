// npm run bench: simulated lifecycles per second with fault injection, on one core.
//
// "One core" literally: unless told not to (VMSANDBOX_BENCH_PIN=0), the bench re-runs itself under
// `taskset` on the last CPU, so V8's GC threads share that core instead of borrowing another.
// These machines are shared and their speed drifts by 2x within minutes, so every measurement is
// taken in short rounds, interleaved, and reported as median and best over the rounds, next to a
// baseline measured in the same rounds: the machine alone on XState with effects that finish at
// once (what XState's actor runtime costs before any simulation).
//
//   lean    the simulator as `vmsandbox sim --runs` runs it (sim/engine.ts; XState re-checks it)
//   xstate  the same seeds with XState interpreting the machine (what tests and --trace use)
//
// Environment: BENCH_ROUNDS (default 7), BENCH_ROUND_MS (default 700), VMSANDBOX_BENCH_PIN.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createActor } from 'xstate';
import type { SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';
import { configFromSeed } from '../sim/configs.js';
import type { Engine } from '../sim/run.js';
import { simulate } from '../sim/run.js';

const GOAL = 5000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 700);

function allowedCpus(): string {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'));
  return line?.split(':')[1]?.trim() ?? '?';
}

if (process.env.VMSANDBOX_BENCH_PIN !== '0' && availableParallelism() > 1 && !process.env.VMSANDBOX_BENCH_PINNED) {
  const cpu = String(availableParallelism() - 1);
  const r = spawnSync('taskset', ['-c', cpu, process.execPath, fileURLToPath(import.meta.url)], {
    stdio: 'inherit',
    env: { ...process.env, VMSANDBOX_BENCH_PINNED: cpu },
  });
  if (r.error) process.stderr.write(`taskset unavailable (${r.error.message}): measuring unpinned\n`);
  else process.exit(r.status ?? 1);
}

const instant = async () => undefined;
const bare: SandboxEffects = {
  createNamespaces: async () => ({ initPid: 1 }),
  mount: instant,
  prepareLandlock: async () => ({ abi: 7, degraded: [] }),
  createCgroups: instant,
  launch: async ({ service }) => ({ service: service.name, pid: 2 }),
  requestStop: instant,
  terminateServices: instant,
  killAll: instant,
  cleanup: instant,
};
const bareMachine = bindEffects(bare);
const hop = async (n: number) => {
  for (let i = 0; i < n; i++) await null;
};

async function bareLifecycle(i: number): Promise<void> {
  const config = configFromSeed(i);
  const vmm = config.services.find((s) => s.vmm)!.name;
  const actor = createActor(bareMachine, { input: { config } });
  actor.start();
  await hop(16);
  actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
  await hop(8);
  actor.send({ type: 'SERVICE_EXITED', service: vmm, pid: 2, code: 0, signal: null });
  await hop(16);
  if (actor.getSnapshot().status !== 'done') throw new Error(`bare lifecycle did not end: ${JSON.stringify(actor.getSnapshot().value)}`);
}

let failures = 0;
const simulated = (engine: Engine) => async (seed: number) => {
  const r = await simulate(seed, { engine });
  if (!r.ok) failures++;
};

const measurements: [string, (seed: number) => Promise<void>][] = [
  ['baseline: machine alone on XState, instant effects', bareLifecycle],
  ['simulated, lean engine (sim --runs)', simulated('lean')],
  ['simulated, XState engine', simulated('xstate')],
];

async function round(body: (seed: number) => Promise<void>, firstSeed: number): Promise<number> {
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < ROUND_MS) await body(firstSeed + n++);
  return n / ((performance.now() - start) / 1000);
}

const pinned = process.env.VMSANDBOX_BENCH_PINNED;
process.stdout.write(
  `vmsandbox bench: node ${process.version}, ${pinned !== undefined ? `pinned to CPU ${pinned}` : `CPUs ${allowedCpus()}`}, ` +
    `${ROUNDS} interleaved rounds of ${ROUND_MS} ms each\n`,
);
for (const [, body] of measurements) for (let i = 0; i < 300; i++) await body(1_000_000 + i); // JIT warm-up
const rates: number[][] = measurements.map(() => []);
for (let r = 0; r < ROUNDS; r++) {
  // Every measurement runs the same seeds in a round; the order rotates so none always goes first.
  for (let k = 0; k < measurements.length; k++) {
    const m = (k + r) % measurements.length;
    rates[m]!.push(await round(measurements[m]![1], r * 100_000));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => x.toFixed(0).padStart(6);
process.stdout.write(`${''.padEnd(52)}  median    best   (lifecycles/s)\n`);
measurements.forEach(([label], m) => {
  process.stdout.write(`${label.padEnd(52)}  ${fmt(median(rates[m]!))}  ${fmt(Math.max(...rates[m]!))}\n`);
});
const [base, lean, xs] = rates.map(median) as [number, number, number];
process.stdout.write(`lean / baseline: ${(lean / base).toFixed(2)}   lean / xstate: ${(lean / xs).toFixed(2)}\n`);
process.stdout.write(`a million seeds, one core, lean: about ${(1e6 / lean / 60).toFixed(1)} min\n`);
process.stdout.write(`goal ${GOAL}/s on one core: ${lean >= GOAL ? 'met' : 'NOT met'} (median of the rounds)\n`);
if (failures) {
  process.stdout.write(`${failures} simulated runs violated invariants (run vmsandbox sim to see them)\n`);
  process.exitCode = 1;
}
