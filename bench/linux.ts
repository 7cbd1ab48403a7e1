// Real-kernel benchmark of the manager (root). Run: `npm run build && npm run bench:linux`
// (or `node dist/bench/linux.js [runs]`; runs also from VMSANDBOX_BENCH_RUNS, default 20). All in
// one run, so every ratio compares figures taken on the same machine under the same load:
//
// 1. One VM at a time (its only service, the vmm, is /bin/sleep), interleaved round by round with
//    `node -e 0` and bubblewrap: exec → ready (spawn until the manager's "ready" record, which it
//    writes right after telling s6), the setup inside the manager (its own start → ready, from that
//    record: without Node's boot; and, for bin/vmsandbox, each step of it from the record's
//    `startup`), and SIGTERM → gone (kill until the manager exited: by then its
//    sandbox is torn down), then s6's `finish` after it (exec → exit). The manager is started each
//    way in turn: bin/vmsandbox (what s6 runs: sh in front of the next one), node on the bundle
//    with its code cache (start.cjs), node on the bundle alone, and the unbundled tsc output
//    through the whole CLI (how every run started before the bundle).
// 2. A boot storm (VMSANDBOX_BENCH_STORM VMs, default 30, VMSANDBOX_BENCH_STORMS rounds, default
//    3): all started at once through bin/vmsandbox → all ready, against as many concurrent
//    `node -e 0` → all exited; with all of them running, USS (private) and PSS (proportional) of
//    each manager and its vmsandbox-init from /proc/PID/smaps_rollup, against as many idle Node
//    processes (the floor of any Node process) and bubblewrap sandboxes; then SIGTERM to all → all
//    gone, and what is left of them (nothing should be).
// 3. The backend's operations one by one, in process (two services), through the real machine.
//
// VMSANDBOX_BENCH_NODE_FLAGS (e.g. "--max-semi-space-size=1") adds Node/V8 flags to the direct
// starts and the idle Node floor, VMSANDBOX_BENCH_STORM_START picks how the storm's managers start
// (a comma-separated list of bin, the default, cached, bundle, dist): the way flags
// were tried (docs/architecture.md, "Bench"). Memory is sampled 300 ms after ready and again after
// VMSANDBOX_BENCH_STEADY_MS (default 20 s). A missing bwrap skips its baselines, saying so. Every
// figure is a median and p90 over the runs (a storm's "all ready" is its slowest VM).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createActor } from 'xstate';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { createLinuxBackend } from '../effects/linux/backend.js';
import { findCgroup2Mount } from '../effects/linux/cgroup.js';
import { lastRunPath } from '../effects/linux/owner.js';
import type { SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = [resolve(here, '..'), resolve(here, '../..')].find((d) => existsSync(join(d, 'bin', 'vmsandbox')))!;
const CLI = join(repo, 'bin', 'vmsandbox');
const BUNDLE_DIR = join(repo, 'dist', 'bundle');
const CGROUP_PARENT = 'vmsandbox-bench';
const RUN_PARENT = '/run/vmsandbox-bench';
const SYSTEM_READ = ['/usr', '/bin', '/lib', '/lib64', '/etc'];
/** Memory is sampled twice: just after ready, and once V8's memory reducer has shrunk an idle heap. */
const BOOT_MS = 300;
const STEADY_MS = Number(process.env.VMSANDBOX_BENCH_STEADY_MS ?? 20_000);
const NODE_FLAGS = (process.env.VMSANDBOX_BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);

// ---------------------------------------------------------------- statistics
type Series = Map<string, number[]>;

function record(series: Series, key: string, value: number): void {
  (series.get(key) ?? series.set(key, []).get(key)!).push(value);
}

function quantile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

const median = (xs: number[]) => quantile(xs, 0.5);

function row(label: string, xs: number[] | undefined, unit: 'ms' | 'MiB'): string {
  if (!xs || xs.length === 0) return `${label.padEnd(52)} (not measured)`;
  const f = (v: number) => v.toFixed(1);
  return `${label.padEnd(52)} median ${f(median(xs)).padStart(7)} ${unit}   p90 ${f(quantile(xs, 0.9)).padStart(7)} ${unit}   (n=${xs.length})`;
}

function ratio(a: number[] | undefined, b: number[] | undefined): string {
  return a?.length && b?.length ? `${(median(a) / median(b)).toFixed(2)}×` : 'n/a';
}

// ---------------------------------------------------------------- /proc helpers
interface Memory {
  /** Private_Clean + Private_Dirty: what this process alone holds. */
  uss: number;
  /** Pss: its own pages plus its share of the pages it shares. */
  pss: number;
  rss: number;
}

/** USS, PSS and RSS (MiB) from /proc/PID/smaps_rollup, or null if the process is gone. */
function memory(pid: number): Memory | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return null;
  }
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { uss: (kb('Private_Clean') + kb('Private_Dirty')) / 1024, pss: kb('Pss') / 1024, rss: kb('Rss') / 1024 };
}

function children(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      out.push(...readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    }
  } catch {
    /* gone */
  }
  return out;
}

function comm(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Every descendant of `pid` whose comm is `name`. */
function findDescendants(pid: number, name: string): number[] {
  const queue = children(pid);
  const found: number[] = [];
  while (queue.length) {
    const p = queue.shift()!;
    if (comm(p) === name) found.push(p);
    queue.push(...children(p));
  }
  return found;
}

const findDescendant = (pid: number, name: string): number | null => findDescendants(pid, name)[0] ?? null;

function gone(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const exited = (child: ChildProcess) =>
  new Promise<number | null>((r) => (child.exitCode !== null || child.signalCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code))));

/** Poll `cond` as tightly as the event loop allows (setImmediate), up to `ms`. */
async function poll<T>(cond: () => T | null, ms: number): Promise<T | null> {
  const end = performance.now() + ms;
  for (;;) {
    const v = cond();
    if (v !== null) return v;
    if (performance.now() > end) return null;
    await new Promise((r) => setImmediate(r));
  }
}

// ---------------------------------------------------------------- how the manager starts
type Start = 'bin' | 'cached' | 'bundle' | 'dist';

const START_LABEL: Record<Start, string> = {
  bin: 'bin/vmsandbox run',
  cached: 'bundle + code cache (start.cjs)',
  bundle: 'bundle, no code cache',
  dist: 'tsc output, unbundled (before)',
};

const haveBundle = () => existsSync(join(BUNDLE_DIR, 'start.cjs'));

function launcher(start: Start, args: string[]): [string, string[]] {
  switch (start) {
    case 'bin':
      return [CLI, args];
    case 'cached':
      return [process.execPath, [...NODE_FLAGS, join(BUNDLE_DIR, 'start.cjs'), ...args]];
    case 'bundle':
      return [process.execPath, [...NODE_FLAGS, join(BUNDLE_DIR, 'manager.cjs'), ...args]];
    case 'dist':
      return [process.execPath, [...NODE_FLAGS, join(repo, 'dist', 'cli', 'bin.js'), ...args]];
  }
}

// ---------------------------------------------------------------- 1, 2. the manager, as s6 runs it
interface Vm {
  name: string;
  file: string;
  child: ChildProcess;
  /**
   * When the "ready" record arrived, its `ms` (the manager's own start → ready), and its `startup`
   * (each step reached, ms since the manager's process began: s6/run.ts, cli/startup.ts).
   */
  ready: Promise<{ at: number; ms: number; startup: Record<string, number> }>;
  exited: Promise<number | null>;
  log(): string;
  remove(): void;
}

function startVm(name: string, start: Start, scratch: string): Vm {
  const storage = mkdtempSync(join(tmpdir(), 'vmsandbox-bench-storage-'));
  const file = join(scratch, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      storage,
      runtimeDir: `${RUN_PARENT}/${name}`,
      timeouts: { setupMs: 20_000, stopMs: 5000, killMs: 5000 },
      cgroup: { parent: CGROUP_PARENT },
      landlock: { minAbi: 1 },
      services: [{ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: 62002, gid: 62002, landlock: { read: SYSTEM_READ, write: [] } }],
    }),
  );
  const [cmd, args] = launcher(start, ['run', file]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const log = () => `${out}${stderr}`;
  const ready = new Promise<{ at: number; ms: number; startup: Record<string, number> }>((resolveReady, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      const at = performance.now();
      buf += d.toString();
      out += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const r = JSON.parse(line) as { event?: string; ms?: number; startup?: Record<string, number> };
          if (r.event === 'ready') resolveReady({ at, ms: r.ms ?? NaN, startup: r.startup ?? {} });
        } catch {
          /* not a log line */
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`${name}: vmsandbox run exited ${code} before ready:\n${log()}`)));
    setTimeout(() => reject(new Error(`${name}: vmsandbox run not ready after 30 s:\n${log()}`)), 30_000).unref();
  });
  ready.catch(() => undefined);
  const remove = () => {
    rmSync(storage, { recursive: true, force: true });
    rmSync(lastRunPath(name), { force: true });
  };
  return { name, file, child, ready, exited: exited(child), log, remove };
}

/** Names of the start-up steps seen, in the order the managers reached them. */
const stepOrder: string[] = [];

/**
 * How long each step of a manager's start took: `main` from the process's start (Node's boot and
 * loading the manager), every later one since the step before it.
 */
function recordSteps(series: Series, start: Start, startup: Record<string, number>): void {
  let prev = 0;
  for (const [step, at] of Object.entries(startup)) {
    if (!stepOrder.includes(step)) stepOrder.push(step);
    record(series, `step ${start} ${step}`, at - prev);
    prev = at;
  }
}

/** After a failure: kill the manager and its cgroup (what `vmsandbox finish` would do). */
async function killVm(vm: Vm): Promise<void> {
  vm.child.kill('SIGKILL');
  await vm.exited;
  try {
    writeFileSync(join(findCgroup2Mount()!, CGROUP_PARENT, vm.name, 'cgroup.kill'), '1');
  } catch {
    /* absent */
  }
}

async function oneVm(i: number, start: Start, series: Series, scratch: string): Promise<void> {
  const t0 = performance.now();
  const vm = startVm(`vmsbench-${process.pid % 100000}-${start}-${i}`, start, scratch);
  try {
    const r = await vm.ready;
    record(series, `exec → ready ${start}`, r.at - t0);
    record(series, `setup ${start}`, r.ms);
    recordSteps(series, start, r.startup);
    const init = findDescendant(vm.child.pid!, 'vmsandbox-init');
    const tKill = performance.now();
    vm.child.kill('SIGTERM');
    const code = await vm.exited;
    record(series, `SIGTERM → gone ${start}`, performance.now() - tKill);
    if (code !== 0) throw new Error(`vmsandbox run exited ${code} after SIGTERM:\n${vm.log()}`);
    if (init !== null && !gone(init)) throw new Error(`the manager exited, its init (pid ${init}) did not`);
    // s6's finish after that run: exec → exit.
    const [cmd, args] = launcher(start, ['finish', vm.file, '0', '0']);
    const tFinish = performance.now();
    const fin = spawn(cmd, args, { stdio: 'ignore' });
    const finCode = await exited(fin);
    record(series, `finish ${start}`, performance.now() - tFinish);
    if (finCode !== 0) throw new Error(`vmsandbox finish exited ${finCode}`);
  } catch (e) {
    await killVm(vm);
    throw e;
  } finally {
    vm.remove();
  }
}

/** What the bench's VMs left: cgroups under its parent, runtime dirs under its root. */
function leftovers(): string[] {
  const out: string[] = [];
  const cg = join(findCgroup2Mount() ?? '/nonexistent', CGROUP_PARENT);
  for (const [dir, what] of [[cg, 'cgroup'], [RUN_PARENT, 'runtime dir']] as const) {
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(`${what} ${join(dir, e.name)}`);
    } catch {
      /* absent */
    }
  }
  return out;
}

function recordMemory(series: Series, key: string, m: Memory | null): void {
  if (!m) return;
  record(series, `${key} USS`, m.uss);
  record(series, `${key} PSS`, m.pss);
}

const sum = (ms: Array<Memory | null>): Memory | null =>
  ms.some((m) => m === null) ? null : ms.reduce<Memory>((a, m) => ({ uss: a.uss + m!.uss, pss: a.pss + m!.pss, rss: a.rss + m!.rss }), { uss: 0, pss: 0, rss: 0 });

let stormLeftovers = 0;

/** USS and PSS of each VM's manager and init, and the manager's RSS, under `key`. */
function sampleVms(series: Series, key: string, vms: Vm[]): void {
  for (const vm of vms) {
    const manager = memory(vm.child.pid!);
    const initPid = findDescendant(vm.child.pid!, 'vmsandbox-init');
    const init = initPid === null ? null : memory(initPid);
    recordMemory(series, `${key} manager`, manager);
    recordMemory(series, `${key} init`, init);
    recordMemory(series, `${key} vm`, sum([manager, init]));
    if (manager) record(series, `${key} manager RSS`, manager.rss);
  }
}

async function stormVms(round: number, n: number, start: Start, series: Series, scratch: string): Promise<void> {
  const t0 = performance.now();
  const vms = Array.from({ length: n }, (_, k) => startVm(`vmsstorm-${process.pid % 100000}-${start}-${round}-${k}`, start, scratch));
  try {
    const readies = await Promise.all(vms.map((v) => v.ready));
    record(series, `storm all ready ${start}`, Math.max(...readies.map((r) => r.at)) - t0);
    for (const r of readies) record(series, `storm setup ${start}`, r.ms);
    await sleep(BOOT_MS);
    sampleVms(series, `mem boot ${start}`, vms);
    await sleep(STEADY_MS - BOOT_MS);
    sampleVms(series, `mem steady ${start}`, vms);
    const tKill = performance.now();
    for (const vm of vms) vm.child.kill('SIGTERM');
    const codes = await Promise.all(vms.map((v) => v.exited));
    record(series, `storm SIGTERM → all gone ${start}`, performance.now() - tKill);
    const bad = codes.map((c, k) => [c, k] as const).filter(([c]) => c !== 0);
    if (bad.length) throw new Error(`${bad.length} managers exited non-zero after SIGTERM, e.g.:\n${vms[bad[0]![1]]!.log()}`);
    const left = leftovers();
    stormLeftovers += left.length;
    if (left.length) console.error(`bench: storm ${round} (${start}) left ${left.join(', ')}`);
  } catch (e) {
    await Promise.all(vms.map(killVm));
    throw e;
  } finally {
    for (const vm of vms) vm.remove();
  }
}

// ---------------------------------------------------------------- baselines
async function nodeBaseline(series: Series): Promise<void> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await exited(child);
  record(series, 'node -e 0', performance.now() - t0);
}

async function stormNode(n: number, series: Series): Promise<void> {
  const t0 = performance.now();
  await Promise.all(Array.from({ length: n }, () => exited(spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }))));
  record(series, 'storm node -e 0', performance.now() - t0);
}

/** n idle Node processes at once (they print, then wait): what any Node process holds. */
async function idleNodes(n: number, series: Series): Promise<void> {
  const kids = Array.from({ length: n }, () =>
    spawn(process.execPath, [...NODE_FLAGS, '-e', 'process.stdout.write("up\\n"); setInterval(() => {}, 1e6)'], { stdio: ['ignore', 'pipe', 'ignore'] }),
  );
  try {
    await Promise.all(kids.map((k) => new Promise((r) => k.stdout!.once('data', r))));
    await sleep(BOOT_MS);
    for (const k of kids) recordMemory(series, 'mem boot idle node', memory(k.pid!));
    await sleep(STEADY_MS - BOOT_MS);
    for (const k of kids) recordMemory(series, 'mem steady idle node', memory(k.pid!));
  } finally {
    for (const k of kids) k.kill('SIGKILL');
    await Promise.all(kids.map(exited));
  }
}

function findBwrap(): string | null {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) if (existsSync(join(d, 'bwrap'))) return join(d, 'bwrap');
  return null;
}

const BWRAP_ARGS = ['--unshare-pid', '--die-with-parent', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '/bin/sleep', '1000'];
let bwrapSurvivors = 0;

/** SIGTERM a bwrap sandbox and wait for its sleep to be gone (killing it if --die-with-parent did not). */
async function stopBwrap(child: ChildProcess, sleeper: number): Promise<void> {
  child.kill('SIGTERM');
  await exited(child);
  if ((await poll(() => (gone(sleeper) ? true : null), 2000)) !== null) return;
  // --die-with-parent did not take the sandbox down (seen here now and then): count it and kill
  // the sandbox's PID 1 (the sleep's parent), which ends its PID namespace.
  bwrapSurvivors += 1;
  let ppid = 0;
  try {
    ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${sleeper}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    /* gone meanwhile */
  }
  for (const pid of [ppid, sleeper]) {
    try {
      if (pid > 1) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await poll(() => (gone(sleeper) ? true : null), 2000);
}

async function bwrapBaseline(bwrap: string, series: Series): Promise<void> {
  const t0 = performance.now();
  const child = spawn(bwrap, BWRAP_ARGS, { stdio: 'ignore' });
  const sleeper = await poll(() => findDescendant(child.pid!, 'sleep'), 5000);
  if (sleeper === null) {
    child.kill('SIGKILL');
    throw new Error('bwrap: the sleep never appeared');
  }
  record(series, 'bwrap exec → sleep running', performance.now() - t0);
  const tKill = performance.now();
  await stopBwrap(child, sleeper);
  record(series, 'bwrap SIGTERM → gone', performance.now() - tKill);
}

async function stormBwrap(bwrap: string, n: number, series: Series): Promise<void> {
  const t0 = performance.now();
  const kids = Array.from({ length: n }, () => spawn(bwrap, BWRAP_ARGS, { stdio: 'ignore' }));
  const sleepers = await Promise.all(kids.map((k) => poll(() => findDescendant(k.pid!, 'sleep'), 10_000)));
  try {
    if (sleepers.some((s) => s === null)) throw new Error('bwrap storm: a sleep never appeared');
    record(series, 'storm bwrap all running', performance.now() - t0);
    await sleep(BOOT_MS);
    // A sandbox's own processes: the bwrap we started and the bwrap it forked as the namespace's PID 1.
    for (const k of kids) recordMemory(series, 'mem bwrap', sum([k.pid!, ...findDescendants(k.pid!, 'bwrap')].map(memory)));
    const tKill = performance.now();
    await Promise.all(kids.map((k, j) => stopBwrap(k, sleepers[j]!)));
    record(series, 'storm bwrap SIGTERM → all gone', performance.now() - tKill);
  } finally {
    for (const k of kids) k.kill('SIGKILL');
    await Promise.all(kids.map(exited));
  }
}

// ---------------------------------------------------------------- 3. backend operations, in process
function svc(name: string, vmm: boolean): ServiceConfig {
  return {
    name, argv: ['/bin/sleep', '1000'], env: {}, uid: 62001, gid: 62001, groups: [], vmm, storage: 'rw', tmp: '16M', shm: '16M',
    landlock: { read: SYSTEM_READ, write: [] }, limits: {}, caps: [], devices: [],
    stop: { signal: 'SIGTERM' }, onExit: 'ignore',
  };
}

function timed(effects: SandboxEffects, series: Series): SandboxEffects {
  const out = {} as Record<string, unknown>;
  for (const [k, fn] of Object.entries(effects) as Array<[string, (i: never, s: AbortSignal) => Promise<unknown>]>) {
    out[k] = async (i: never, s: AbortSignal) => {
      const t = performance.now();
      try {
        return await fn(i, s);
      } finally {
        record(series, `op ${k}`, performance.now() - t);
      }
    };
  }
  return out as unknown as SandboxEffects;
}

async function backendRun(i: number, series: Series): Promise<void> {
  const storage = mkdtempSync(join(tmpdir(), 'vmsandbox-bench-storage-'));
  const config: VmConfig = {
    name: `vmsbench-op-${process.pid % 100000}-${i}`, storage, runtimeDir: `${RUN_PARENT}/op-${i}`,
    timeouts: { setupMs: 10_000, stopMs: 5000, killMs: 5000 },
    cgroup: { parent: CGROUP_PARENT, limits: {}, limitsOptional: true },
    landlock: { minAbi: 1, allowDegraded: false },
    services: [svc('virtiofsd', false), svc('vmm', true)],
  };
  const backend = createLinuxBackend(config);
  const planned = backend.plan();
  if (!planned.ok) throw new Error(`bench config refused on this host: ${JSON.stringify(planned.refusals)}`);
  const actor = createActor(bindEffects(timed(backend.effects, series)), { input: { config, plan: planned.plan } });
  const sub = backend.events$.subscribe((e) => actor.send(e));
  const t0 = performance.now();
  let tRunning = 0;
  const done = new Promise<void>((resolveDone, reject) => {
    actor.subscribe({
      next: (s) => {
        if (!tRunning && s.matches('running')) {
          tRunning = performance.now();
          record(series, 'machine setup → running (2 services)', tRunning - t0);
          actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
        }
        if (s.status === 'done') {
          record(series, 'machine STOP_REQUESTED → stopped', performance.now() - tRunning);
          const out = s.output as { outcome?: string; errors?: string[] } | undefined;
          if (out?.outcome !== 'stopped') reject(new Error(`unexpected outcome ${JSON.stringify(out)}`));
          else resolveDone();
        }
      },
      error: reject,
    });
  });
  actor.start();
  try {
    await done;
  } finally {
    sub.unsubscribe();
    backend.dispose();
    rmSync(storage, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main
function envInt(name: string, dflt: number, arg?: string): number {
  const v = Number(arg ?? process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer (got ${arg ?? process.env[name]})`);
  return v;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/linux needs root');
  if (!existsSync(join(repo, 'dist', 'cli', 'bin.js'))) throw new Error('build first: npm run build');
  const runs = envInt('VMSANDBOX_BENCH_RUNS', 20, process.argv[2]);
  const stormSize = envInt('VMSANDBOX_BENCH_STORM', 30);
  const storms = envInt('VMSANDBOX_BENCH_STORMS', 3);
  const stormStarts = (process.env.VMSANDBOX_BENCH_STORM_START ?? 'bin').split(',') as Start[];
  for (const s of stormStarts) if (!(s in START_LABEL)) throw new Error(`VMSANDBOX_BENCH_STORM_START: a list of ${Object.keys(START_LABEL).join(', ')}`);
  const starts: Start[] = ['bin', ...(haveBundle() ? ['cached' as const, 'bundle' as const] : []), 'dist'];
  const series: Series = new Map();
  const scratch = mkdtempSync(join(tmpdir(), 'vmsandbox-bench-'));
  const bwrap = findBwrap();
  const cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s/gm)?.length ?? '?';
  console.log(`vmsandbox bench:linux — ${runs} runs, ${storms} storms of ${stormSize}; kernel ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, node ${process.version}, ${cores} cores`);
  console.log(`bin/vmsandbox starts run and finish ${haveBundle() ? 'from the bundle and its code cache' : 'from the tsc output (no bundle)'}${NODE_FLAGS.length ? `; node flags for direct starts and idle nodes: ${NODE_FLAGS.join(' ')}` : ''}`);
  try {
    // Warm the page cache for every program once, so the first run is not an outlier.
    await nodeBaseline(new Map());
    for (const s of starts) await oneVm(-1, s, new Map(), scratch);
    for (let i = 0; i < runs; i++) {
      await nodeBaseline(series);
      for (const s of starts) await oneVm(i, s, series, scratch);
      if (bwrap) await bwrapBaseline(bwrap, series);
    }
    for (let r = 0; r < storms; r++) {
      await stormNode(stormSize, series);
      for (const s of stormStarts) await stormVms(r, stormSize, s, series, scratch);
      await idleNodes(stormSize, series);
      if (bwrap) await stormBwrap(bwrap, stormSize, series);
    }
    for (let i = 0; i < runs; i++) await backendRun(i, series);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    for (const dir of [join(findCgroup2Mount() ?? '/nonexistent', CGROUP_PARENT), RUN_PARENT]) {
      try {
        rmdirSync(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') console.error(`bench: could not remove ${dir}: ${(e as Error).message}`);
      }
    }
  }
  const g = (k: string) => series.get(k);
  const noBwrap = 'skipped: bwrap not found in PATH (apt-get install bubblewrap; .ci/run installs it)';
  console.log('\n== one VM (vmm /bin/sleep), round by round ==');
  console.log(row('node -e 0: exec → exit', g('node -e 0'), 'ms'));
  for (const s of starts) console.log(row(`${START_LABEL[s]}: exec → ready`, g(`exec → ready ${s}`), 'ms'));
  for (const s of starts) console.log(`  ${START_LABEL[s]} / node -e 0`.padEnd(54) + ratio(g(`exec → ready ${s}`), g('node -e 0')));
  console.log(row('setup inside the manager (its start → ready; bin)', g('setup bin'), 'ms'));
  if (starts.includes('bin')) {
    console.log('  where its start goes (bin; from the ready record\'s startup: each step reached, and the state entered):');
    stepOrder.forEach((step, i) => console.log(row(`    ${i === 0 ? 'exec' : stepOrder[i - 1]} → ${step}`, g(`step bin ${step}`), 'ms')));
  }
  for (const s of starts) console.log(row(`${START_LABEL[s]}: SIGTERM → gone`, g(`SIGTERM → gone ${s}`), 'ms'));
  for (const s of starts) console.log(row(`finish (after that run) ${START_LABEL[s].replace(/^bin\/vmsandbox run/, 'bin/vmsandbox')}: exec → exit`, g(`finish ${s}`), 'ms'));
  if (bwrap) {
    console.log(row('bwrap --unshare-pid: exec → sleep running', g('bwrap exec → sleep running'), 'ms'));
    console.log(row('bwrap: SIGTERM → sleep gone', g('bwrap SIGTERM → gone'), 'ms'));
  } else console.log(`bwrap: ${noBwrap}`);

  console.log(`\n== boot storm: ${stormSize} at once ==`);
  console.log(row(`${stormSize} × node -e 0: all exited`, g('storm node -e 0'), 'ms'));
  for (const s of stormStarts) {
    console.log(row(`${stormSize} × ${START_LABEL[s]}: all ready`, g(`storm all ready ${s}`), 'ms'));
    console.log(`  all ready / all node -e 0 exited`.padEnd(54) + ratio(g(`storm all ready ${s}`), g('storm node -e 0')));
    console.log(row('  setup inside each manager (its start → ready)', g(`storm setup ${s}`), 'ms'));
    console.log(row(`${stormSize} × ${START_LABEL[s]}: SIGTERM → all gone`, g(`storm SIGTERM → all gone ${s}`), 'ms'));
  }
  console.log(`  left behind (cgroups, runtime dirs)`.padEnd(54) + (stormLeftovers ? `${stormLeftovers} (see above)` : 'nothing'));
  if (bwrap) {
    console.log(row(`${stormSize} × bwrap: all running`, g('storm bwrap all running'), 'ms'));
    console.log(row(`${stormSize} × bwrap: SIGTERM → all gone`, g('storm bwrap SIGTERM → all gone'), 'ms'));
  }

  console.log(`\n== memory per VM, ${stormSize} running (smaps_rollup; USS = private, PSS = private + its share of shared) ==`);
  console.log(`   ${BOOT_MS} ms after ready, and ${STEADY_MS / 1000} s after (V8's memory reducer has shrunk an idle heap by then)`);
  const mem = (label: string, key: string) => {
    for (const when of ['boot', 'steady'] as const) {
      const at = when === 'boot' ? `${BOOT_MS} ms` : `${STEADY_MS / 1000} s`;
      console.log(row(`${label}, ${at}: USS`, g(`mem ${when} ${key} USS`), 'MiB'));
      console.log(row(`${label}, ${at}: PSS`, g(`mem ${when} ${key} PSS`), 'MiB'));
    }
  };
  for (const s of stormStarts) {
    mem(`VM (manager + init), ${s}`, `${s} vm`);
    mem(`  manager, ${s}`, `${s} manager`);
    console.log(row(`  manager, ${s}, ${STEADY_MS / 1000} s: RSS`, g(`mem steady ${s} manager RSS`), 'MiB'));
  }
  mem('  vmsandbox-init', `${stormStarts[0]} init`);
  mem(`idle node${NODE_FLAGS.length ? ` (${NODE_FLAGS.join(' ')})` : ''} (the floor)`, 'idle node');
  if (bwrap) {
    console.log(row(`bwrap sandbox (its two bwrap processes), ${BOOT_MS} ms: USS`, g('mem bwrap USS'), 'MiB'));
    console.log(row(`bwrap sandbox (its two bwrap processes), ${BOOT_MS} ms: PSS`, g('mem bwrap PSS'), 'MiB'));
  } else console.log(`bwrap: ${noBwrap}`);
  if (bwrapSurvivors) console.log(`bwrap: --die-with-parent left the sleep running ${bwrapSurvivors} times (killed by the bench; in the figures)`);

  console.log('\n== backend operations, in process (2 services, through the machine) ==');
  for (const [k, v] of series) if (k.startsWith('op ') || k.startsWith('machine ')) console.log(row(k.replace(/^op /, ''), v, 'ms'));
  if (stormLeftovers) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
