// npm run bench: simulated lifecycles per second with fault injection, on one core, against a
// baseline measured in the same run: the same machine with effects that resolve at once (what
// XState alone costs). Both numbers move with the machine's load; their ratio is the simulator's
// own overhead.

import { createActor } from 'xstate';
import type { SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';
import { configFromSeed } from '../sim/configs.js';
import { simulate } from '../sim/run.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

async function timed(label: string, body: (i: number) => Promise<void>): Promise<number> {
  for (let i = 0; i < 200; i++) await body(i); // warm-up: JIT and caches
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < SECONDS * 1000) await body(200 + n++);
  const rate = n / ((performance.now() - start) / 1000);
  process.stdout.write(`${label.padEnd(44)} ${rate.toFixed(0).padStart(7)} /s  (${n} in ${SECONDS} s)\n`);
  return rate;
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
  const actor = createActor(bareMachine, { input: { config } });
  actor.start();
  await hop(64);
  actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
  await hop(16);
  actor.send({ type: 'SERVICE_EXITED', service: 'vmm', pid: 2, code: 0, signal: null });
  await hop(64);
  if (actor.getSnapshot().status !== 'done') throw new Error(`bare lifecycle did not end: ${JSON.stringify(actor.getSnapshot().value)}`);
}

let failures = 0;
process.stdout.write(`vmsandbox bench (node ${process.version}, one core, ${SECONDS} s per measurement)\n`);
const baseline = await timed('baseline: machine alone, instant effects', bareLifecycle);
const sim = await timed('simulated lifecycles with fault injection', async (i) => {
  const r = await simulate(i);
  if (!r.ok) failures++;
});
process.stdout.write(`ratio simulated / baseline: ${(sim / baseline).toFixed(2)}\n`);
process.stdout.write(`a million seeds on one core: about ${(1e6 / sim / 60).toFixed(1)} min\n`);
if (failures) {
  process.stdout.write(`${failures} simulated runs violated invariants (run vmsandbox sim to see them)\n`);
  process.exitCode = 1;
}
