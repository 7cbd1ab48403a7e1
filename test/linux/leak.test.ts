// SIGKILL the manager (`vmsandbox run`, a separate process) at random moments during setup and
// while running. Afterwards, within a bounded time, no process and no mount of the VM may remain:
// the init dies with the manager (PR_SET_PDEATHSIG + EOF on its control socket) and takes the PID
// and mount namespaces with it. The cgroup directories and the runtime dir may remain (the s6
// finish script removes them): killAll + cleanup on the lock's journal must remove them, twice over.
//
// The delays come from a seeded PRNG: VMSANDBOX_LEAK_SEED=<seed> replays a run's delays (the seed
// is printed, and every assertion message names the seed, the run and its delay).

import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Prng } from '../../sim/prng.js';
import { forceCleanup, leftovers, removeTestParents, vmMounts, vmProcesses } from './helpers/leftovers.js';
import { finishFromJournal, writeRunConfig } from './helpers/manager.js';
import { ensureNative, staticCcSkipReason, testProgram, underReaper } from './helpers/native.js';
import { repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, type TestVm } from './helpers/vm.js';

// The manager runs under a small C subreaper (so the init it leaves behind is reaped at once and
// reported, instead of waiting for the host's PID 1): that needs `cc -static`.
const skip = skipReason() ?? staticCcSkipReason();
if (skip) console.warn(`test/linux/leak skipped: ${skip}`);

const RUNS = Number(process.env.VMSANDBOX_LEAK_RUNS ?? 50);
const LANES = Number(process.env.VMSANDBOX_LEAK_LANES ?? 2);
const SEED = Number(process.env.VMSANDBOX_LEAK_SEED ?? Math.floor(Math.random() * 2 ** 31));

interface Kill {
  run: number;
  /** Where the delay is counted from: the manager's spawn, or its first log line (setup started). */
  anchor: 'spawn' | 'setup';
  delayMs: number;
}

/** The plan of kills for a seed: most counted from the start of setup (0..300 ms; half of them 0..100 ms so setup gets its share), some from spawn (Node startup, the edge into setup). */
function planKills(seed: number): Kill[] {
  const prng = new Prng(seed);
  const rnd = () => prng.next();
  return Array.from({ length: RUNS }, (_, run) => {
    const r = rnd();
    if (r < 0.1) return { run, anchor: 'spawn', delayMs: Math.floor(rnd() * 500) };
    return { run, anchor: 'setup', delayMs: Math.floor(rnd() * (r < 0.55 ? 100 : 300)) };
  });
}

describe.skipIf(skip)('SIGKILL of the manager at random moments leaves no process and no mount; finish removes the rest', () => {
  /** VMs of runs in progress: a failed run's VM is cleaned up after the test. */
  const live = new Set<TestVm>();
  let reaper = '';
  beforeAll(() => {
    ensureNative();
    reaper = testProgram('reaper');
    console.log(`[leak] seed ${SEED} (replay: VMSANDBOX_LEAK_SEED=${SEED})`);
  });
  afterEach(() => {
    for (const vm of live) forceCleanup(vm);
    live.clear();
  });
  afterAll(() => {
    removeTestParents();
  });

  it(`${RUNS} runs, each SIGKILLed after a seeded random delay (${LANES} at a time)`, async () => {
    const statesAtKill = new Map<string, number>();
    const plan = planKills(SEED);
    // LANES lanes (default 2), each one VM at a time: run k belongs to lane k % LANES (for the time budget).
    const lane = async (n: number) => {
      for (const k of plan.filter((p) => p.run % LANES === n)) {
        if (failed) return;
        const vm = newTestVm();
        live.add(vm);
        const t0 = performance.now();
        const where = `seed ${SEED} run ${k.run}: SIGKILL ${k.delayMs} ms after ${k.anchor}`;
        const { file, config } = writeRunConfig(vm, ['/bin/sleep', '1000']);
        const r = underReaper(reaper, [join(repoRoot, 'bin', 'vmsandbox'), 'run', file]);
        const manager = await r.child;
        if (k.anchor === 'setup') await r.waitLine(/"state":/, 10_000);
        await new Promise((res) => setTimeout(res, k.delayMs));
        const stateAtKill = [...r.lines.join('\n').matchAll(/"state":"([^"]+)"/g)].at(-1)?.[1] ?? 'startup';
        process.kill(manager, 'SIGKILL');
        const how = await r.waitReaped(manager, 5000);
        const tKilled = performance.now();
        const context = () => `${where} (last logged state ${stateAtKill})\nlog:\n${r.lines.join('\n')}\nstderr:\n${r.stderr()}\nreaped: ${JSON.stringify([...r.reaped])}`;
        // The manager must have been killed, not have finished on its own.
        expect(how, context()).toBe('signal 9');
        statesAtKill.set(stateAtKill, (statesAtKill.get(stateAtKill) ?? 0) + 1);

        // Within 2 s: no process of the VM (the orphaned init was reaped: the reaper, with no child
        // left, exits) and no mount of it.
        const reaperDone = await Promise.race([r.exited.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 2000))]);
        const gone = await until(() => vmProcesses(vm).length === 0 && vmMounts(vm).length === 0, 2000);
        const tGone = performance.now();
        expect(reaperDone, `${context()}\nthe reaper still has children 2 s after the SIGKILL`).toBe(true);
        expect(gone, `${context()}\nleft: ${JSON.stringify(vmProcesses(vm))} ${vmMounts(vm).join(' | ')}`).toBe(true);

        // What the s6 finish script does: on the dead manager's lock journal, killAll + cleanup, twice (idempotent).
        await finishFromJournal(config);
        expect(leftovers(vm), context()).toEqual([]);
        if (process.env.VMSANDBOX_TEST_DEBUG) {
          console.log(`[leak] ${where}: killed at ${(tKilled - t0).toFixed(0)} ms (${stateAtKill}), gone +${(tGone - tKilled).toFixed(0)} ms, finished +${(performance.now() - tGone).toFixed(0)} ms`);
        }
        live.delete(vm);
        forceCleanup(vm);
      }
    };
    let failed = false;
    const results = await Promise.allSettled(
      Array.from({ length: LANES }, (_, n) =>
        lane(n).catch((e: unknown) => {
          failed = true; // the other lane stops at its next run
          throw e;
        }),
      ),
    );
    for (const res of results) if (res.status === 'rejected') throw res.reason;
    console.log(`[leak] seed ${SEED}: last logged state at SIGKILL: ${JSON.stringify(Object.fromEntries(statesAtKill))}`);
  }, 120_000);
});
