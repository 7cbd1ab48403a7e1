// A fault plan: everything that will go wrong (or right) in one simulated run, derived from the
// seed alone. Printing the plan is enough to understand a failing seed; replaying the seed
// rebuilds the same plan.

import { Prng } from './prng.js';

export type Op =
  | 'createNamespaces'
  | 'mount'
  | 'prepareLandlock'
  | 'createCgroups'
  | 'launch'
  | 'requestStop'
  | 'terminateServices'
  | 'killAll'
  | 'cleanup';

export const SETUP_OPS: readonly Op[] = ['createNamespaces', 'mount', 'prepareLandlock', 'createCgroups', 'launch'];

/** Realistic errnos per operation: what the real syscalls behind each step return. */
export const ERRNOS: Record<Op, readonly string[]> = {
  createNamespaces: ['EPERM', 'ENOMEM', 'EAGAIN', 'ENOSPC'],
  mount: ['ENOENT', 'EPERM', 'EINVAL', 'ENODEV'],
  prepareLandlock: ['EINVAL', 'E2BIG', 'ENOMEM'],
  createCgroups: ['ENOENT', 'EACCES', 'ENOSPC', 'EEXIST'],
  launch: ['ENOENT', 'EACCES', 'EAGAIN', 'ENOEXEC'],
  requestStop: ['ECONNREFUSED', 'ENOENT', 'ETIMEDOUT'],
  terminateServices: [],
  killAll: [],
  cleanup: [],
};

export interface FaultPlan {
  seed: number;
  /** Duration of each operation (ms); Infinity means it hangs until aborted. */
  delays: Partial<Record<Op, number>>;
  /** One operation fails, on its Nth call (launch is called once per service). */
  fail: { op: Op; call: number; errno: string } | null;
  /** The kernel's Landlock ABI (0 = not available) and the cgroup controllers it offers. */
  landlockAbi: number;
  controllers: string[];
  /** Times (ms from start) at which the manager receives its signals. */
  stopAt: number[];
  parentDiesAt: number | null;
  initDiesAt: number | null;
  /** A service crashes at this time: index into the launch order, exit code or signal. */
  crash: { index: number; at: number; code: number | null; signal: string | null } | null;
  /** The guest powers off by itself at this time (the vmm exits 0). */
  powerOffAt: number | null;
  vmmIgnoresStop: boolean;
  vmmStopMs: number;
  /** Services other than the vmm ignore SIGTERM. */
  othersIgnoreTerm: boolean;
  /** rmdir of the VM cgroup fails with EBUSY this many times before it works. */
  cleanupBusy: number;
  /** Chance that a PID freed by the VM is taken by a host process (or another VM's) at once. */
  pidReuse: number;
  /**
   * The guest arms its power button at this time (ms from start); a stop request to the guest
   * (qmp, API, command) that arrives earlier is dropped, as a booting guest drops it. null: armed
   * from the start. A signal stop goes to the vmm process, not the guest, and is not affected.
   */
  vmmArmsAt: number | null;
  /**
   * A second manager for the same VM starts at this time (ms from start): an operator's
   * `vmsandbox run`, or s6 restarting the service while the first is still tearing down. It must
   * refuse (exit 101, touching nothing) while the first is live, wait while it is stopping.
   */
  secondManagerAt: number | null;
  /** `vmsandbox finish` runs at this time: it must refuse while a manager holds the VM. */
  finishAt: number | null;
}

export function planFromSeed(seed: number): FaultPlan {
  const r = new Prng(seed ^ 0x5eed5eed);
  const ops: Op[] = [...SETUP_OPS, 'requestStop', 'terminateServices', 'killAll', 'cleanup'];
  const delays: Partial<Record<Op, number>> = {};
  for (const op of ops) {
    const roll = r.next();
    // Mostly fast, sometimes slow, rarely hung.
    // killAll and cleanup act at once and then wait for the kernel; their delay is that wait
    // (slow process teardown), which stays below the smallest killMs the configs use.
    if (op === 'killAll' || op === 'cleanup') delays[op] = roll < 0.8 ? r.int(0, 5) : r.int(20, 100);
    else delays[op] = roll < 0.8 ? r.int(0, 20) : roll < 0.97 ? r.int(50, 3000) : Infinity;
  }
  let fail: FaultPlan['fail'] = null;
  if (r.chance(0.2)) {
    const op = r.pick(ops.filter((o) => ERRNOS[o].length > 0));
    fail = { op, call: op === 'launch' ? r.int(1, 3) : 1, errno: r.pick(ERRNOS[op]) };
  }
  const stopAt: number[] = [];
  const firstStop = r.chance(0.3) ? r.int(0, 200) : r.int(200, 20000);
  stopAt.push(firstStop);
  if (r.chance(0.2)) stopAt.push(firstStop + r.int(0, 5000));
  return {
    seed,
    delays,
    fail,
    landlockAbi: r.chance(0.1) ? r.pick([0, 3, 4, 5]) : r.pick([6, 7]),
    controllers: r.chance(0.1) ? [] : ['memory', 'pids', 'cpu', 'io'],
    stopAt,
    parentDiesAt: r.chance(0.1) ? r.int(0, 15000) : null,
    initDiesAt: r.chance(0.05) ? r.int(0, 15000) : null,
    crash: r.chance(0.15)
      ? { index: r.int(0, 2), at: r.int(0, 15000), ...(r.chance(0.5) ? { code: r.int(0, 255), signal: null } : { code: null, signal: 'SIGSEGV' }) }
      : null,
    powerOffAt: r.chance(0.1) ? r.int(100, 15000) : null,
    vmmIgnoresStop: r.chance(0.15),
    vmmStopMs: r.chance(0.8) ? r.int(10, 3000) : r.int(3000, 15000),
    othersIgnoreTerm: r.chance(0.1),
    cleanupBusy: r.chance(0.1) ? r.int(1, 3) : 0,
    pidReuse: r.pick([0, 0.5, 1]),
    // Drawn last, so the fields above stay what they were for every seed. Around the first stop
    // request (up to a second before it, up to 12 s after): a stop sent while the guest boots.
    vmmArmsAt: r.chance(0.3) ? Math.max(0, firstStop + r.int(-1000, 12000)) : null,
    // Appended after the fields above, for the same reason. Most of them before the first stop
    // request (the first manager is starting or running, or has ended already), the others in the
    // half second after it (while it is stopping, mostly).
    secondManagerAt: r.chance(0.02) ? (r.chance(0.6) ? r.int(0, firstStop) : firstStop + r.int(0, 500)) : null,
    finishAt: r.chance(0.02) ? (r.chance(0.6) ? r.int(0, firstStop) : firstStop + r.int(0, 500)) : null,
  };
}
