// npm run bench: simulated lifecycles per second with fault injection, on one core.
//
// "One core" literally: each measurement runs in its own process under `taskset` on the last CPU,
// so V8's GC threads share that core instead of borrowing another (VMSANDBOX_BENCH_PIN=0 measures
// unpinned). Its own process, because code shared by the two engines (the runner, the backend)
// runs slower once it has seen both: `sim --runs` sees (almost) only the lean one.
//
// Each process first runs for BENCH_WARMUP_MS: V8 keeps optimizing this code for thousands of
// lifecycles (the lean engine's first 0.7 s runs at a fifth of its steady rate), and a million-seed
// run lives in the steady state. Then BENCH_ROUNDS rounds of BENCH_ROUND_MS. These machines are
// shared and their speed drifts by 2x within minutes, so the three measurements are taken in
// BENCH_PASSES passes (A B C A B C), and each is reported as median and best over all its rounds:
//
//   baseline  the machine alone on XState with effects that finish at once: what XState's actor
//             runtime costs before any simulation
//   lean      the simulator as `vmsandbox sim --runs` runs it (sim/engine.ts; XState re-checks it)
//   xstate    the same seeds with XState interpreting the machine (what tests and --trace use)
//
// Environment: BENCH_PASSES (2), BENCH_ROUNDS (5), BENCH_ROUND_MS (600), BENCH_WARMUP_MS (2500),
// VMSANDBOX_BENCH_PIN.

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
const PASSES = Number(process.env.BENCH_PASSES ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 600);
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 2500);

function allowedCpus(): string {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'));
  return line?.split(':')[1]?.trim() ?? '?';
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

const measurements: Record<string, [string, (seed: number) => Promise<void>]> = {
  baseline: ['baseline: machine alone on XState, instant effects', bareLifecycle],
  lean: ['simulated, lean engine (sim --runs)', simulated('lean')],
  xstate: ['simulated, XState engine', simulated('xstate')],
};

async function round(body: (seed: number) => Promise<void>, firstSeed: number, ms: number): Promise<number> {
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < ms) await body(firstSeed + n++);
  return n / ((performance.now() - start) / 1000);
}

/** In a child: one measurement, its rates as one JSON line. */
async function measure(name: string, pass: number): Promise<void> {
  const body = measurements[name]![1];
  await round(body, 10_000_000, WARMUP_MS);
  const rates: number[] = [];
  // Every measurement runs the same seeds in the same round.
  for (let r = 0; r < ROUNDS; r++) rates.push(await round(body, (pass * ROUNDS + r) * 100_000, ROUND_MS));
  process.stdout.write(JSON.stringify({ rates, failures, cpus: allowedCpus() }) + '\n');
}

const self = fileURLToPath(import.meta.url);
const arg = process.argv.indexOf('--measure');
if (arg >= 0) {
  await measure(process.argv[arg + 1]!, Number(process.argv[arg + 2] ?? 0));
} else {
  const pin = process.env.VMSANDBOX_BENCH_PIN !== '0' && availableParallelism() > 1;
  const cpu = String(availableParallelism() - 1);
  const rates: Record<string, number[]> = { baseline: [], lean: [], xstate: [] };
  let cpus = '?';
  for (let pass = 0; pass < PASSES; pass++) {
    for (const name of Object.keys(measurements)) {
      const cmd = pin ? ['taskset', ['-c', cpu, process.execPath, self, '--measure', name, String(pass)]] as const
        : [process.execPath, [self, '--measure', name, String(pass)]] as const;
      const r = spawnSync(cmd[0], [...cmd[1]], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (r.status !== 0 || r.error) {
        process.stderr.write(`bench: ${name} failed (${r.error?.message ?? `exit ${r.status}`})${pin ? '; VMSANDBOX_BENCH_PIN=0 runs it without taskset' : ''}\n`);
        process.exit(1);
      }
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { rates: number[]; failures: number; cpus: string };
      rates[name]!.push(...out.rates);
      failures += out.failures;
      cpus = out.cpus;
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const fmt = (x: number) => x.toFixed(0).padStart(6);
  process.stdout.write(
    `vmsandbox bench: node ${process.version}, each measurement in its own process on CPU ${cpus}, ` +
      `${WARMUP_MS} ms warm-up, ${PASSES} passes of ${ROUNDS} rounds of ${ROUND_MS} ms\n`,
  );
  process.stdout.write(`${''.padEnd(52)}  median    best   (lifecycles/s)\n`);
  for (const [name, [label]] of Object.entries(measurements)) {
    process.stdout.write(`${label.padEnd(52)}  ${fmt(median(rates[name]!))}  ${fmt(Math.max(...rates[name]!))}\n`);
  }
  const base = median(rates.baseline!);
  const lean = median(rates.lean!);
  const xs = median(rates.xstate!);
  process.stdout.write(`lean / baseline: ${(lean / base).toFixed(2)}   lean / xstate: ${(lean / xs).toFixed(2)}\n`);
  process.stdout.write(`a million seeds, one core, lean: about ${(1e6 / lean / 60).toFixed(1)} min\n`);
  process.stdout.write(`goal ${GOAL}/s on one core: ${lean >= GOAL ? 'met' : 'NOT met'} (median of the rounds)\n`);
  if (failures) {
    process.stdout.write(`${failures} simulated runs violated invariants (run vmsandbox sim to see them)\n`);
    process.exitCode = 1;
  }
}
