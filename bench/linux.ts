// Real-kernel benchmark of the Linux backend (root). Run: `npm run build && npm run bench:linux`
// (or `node dist/bench/linux.js [runs]`; runs also from VMSANDBOX_BENCH_RUNS, default 20).
//
// 1. The real CLI, as s6 runs it: `bin/vmsandbox run CONFIG` spawned as a child process, for a VM
//    whose only service (the vmm) is /bin/sleep. Measured per run: exec → ready (spawn until the
//    stdout log says state "running"), the steady RSS (VmRSS, 300 ms after ready) of the manager
//    and of vmsandbox-init, and SIGTERM → exit (kill until the manager exited: by then the sandbox
//    is gone).
// 2. Baselines in the same run: `node -e 0` (exec → exit; max RSS through /usr/bin/time if present)
//    and bubblewrap with a PID namespace (exec → the sleep exec'd, SIGTERM → bwrap exit, → sleep
//    gone; runs where --die-with-parent left the sleep alive are counted and cleaned up). A missing
//    bwrap skips its baseline.
// 3. The backend's operations one by one, in process (two services), through the real machine.
// Every figure is a median and p90 over the runs.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createActor } from 'xstate';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { createLinuxBackend } from '../effects/linux/backend.js';
import { findCgroup2Mount } from '../effects/linux/cgroup.js';
import type { SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = [resolve(here, '..'), resolve(here, '../..')].find((d) => existsSync(join(d, 'bin', 'vmsandbox')))!;
const CLI = join(repo, 'bin', 'vmsandbox');
const CGROUP_PARENT = 'vmsandbox-bench';
const RUN_PARENT = '/run/vmsandbox-bench';
const SYSTEM_READ = ['/usr', '/bin', '/lib', '/lib64', '/etc'];
const STEADY_MS = 300;

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
  if (!xs || xs.length === 0) return `${label.padEnd(44)} (not measured)`;
  const f = (v: number) => (unit === 'ms' ? v.toFixed(1) : v.toFixed(1));
  return `${label.padEnd(44)} median ${f(median(xs)).padStart(7)} ${unit}   p90 ${f(quantile(xs, 0.9)).padStart(7)} ${unit}   (n=${xs.length})`;
}

// ---------------------------------------------------------------- /proc helpers
function rssMiB(pid: number): number | null {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) / 1024 : null;
  } catch {
    return null;
  }
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

/** A descendant of `pid` whose comm is `name`, or null. */
function findDescendant(pid: number, name: string): number | null {
  const queue = children(pid);
  while (queue.length) {
    const p = queue.shift()!;
    if (comm(p) === name) return p;
    queue.push(...children(p));
  }
  return null;
}

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

// ---------------------------------------------------------------- 1. the real CLI
async function cliRun(i: number, series: Series, scratch: string): Promise<void> {
  const name = `vmsbench-${process.pid % 100000}-${i}`;
  const storage = mkdtempSync(join(tmpdir(), 'vmsandbox-bench-storage-'));
  const file = join(scratch, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      storage,
      runtimeDir: `${RUN_PARENT}/${name}`,
      timeouts: { setupMs: 10_000, stopMs: 5000, killMs: 5000 },
      cgroup: { parent: CGROUP_PARENT },
      landlock: { minAbi: 1 },
      services: [{ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: 62002, gid: 62002, landlock: { read: SYSTEM_READ, write: [] } }],
    }),
  );
  const t0 = performance.now();
  const child = spawn(CLI, ['run', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<number>((resolveReady, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      log += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          if ((JSON.parse(line) as { state?: string }).state === 'running') resolveReady(performance.now());
        } catch {
          /* not a log line */
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`vmsandbox run exited ${code} before running:\n${log}${stderr}`)));
    setTimeout(() => reject(new Error(`vmsandbox run not running after 15 s:\n${log}${stderr}`)), 15_000).unref();
  });
  try {
    const tReady = await ready;
    record(series, 'cli exec → running', tReady - t0);
    await sleep(STEADY_MS);
    const manager = rssMiB(child.pid!);
    const init = findDescendant(child.pid!, 'vmsandbox-init');
    if (manager !== null) record(series, 'cli manager RSS', manager);
    const initRss = init === null ? null : rssMiB(init);
    if (initRss !== null) record(series, 'cli init RSS', initRss);
    const tKill = performance.now();
    child.kill('SIGTERM');
    const code = await exited(child);
    record(series, 'cli SIGTERM → exit', performance.now() - tKill);
    if (code !== 0) throw new Error(`vmsandbox run exited ${code} after SIGTERM:\n${log}${stderr}`);
  } catch (e) {
    child.kill('SIGKILL');
    await exited(child);
    // The manager's own teardown did not run: do what `vmsandbox finish` would.
    const dir = join(findCgroup2Mount()!, CGROUP_PARENT, name);
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      /* absent */
    }
    throw e;
  } finally {
    rmSync(storage, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- 2. baselines
async function nodeBaseline(series: Series): Promise<void> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await exited(child);
  record(series, 'node -e 0 exec → exit', performance.now() - t0);
}

function nodeMaxRss(series: Series): boolean {
  if (!existsSync('/usr/bin/time')) return false;
  const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, '-e', '0'], { encoding: 'utf8' });
  const kb = Number(r.stderr.trim().split('\n').at(-1));
  if (Number.isFinite(kb) && kb > 0) record(series, 'node -e 0 max RSS', kb / 1024);
  return true;
}

function findBwrap(): string | null {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) if (existsSync(join(d, 'bwrap'))) return join(d, 'bwrap');
  return null;
}

async function bwrapBaseline(bwrap: string, series: Series): Promise<void> {
  const args = ['--unshare-pid', '--die-with-parent', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '/bin/sleep', '1000'];
  const t0 = performance.now();
  const child = spawn(bwrap, args, { stdio: 'ignore' });
  const sleeper = await poll(() => findDescendant(child.pid!, 'sleep'), 5000);
  if (sleeper === null) {
    child.kill('SIGKILL');
    throw new Error('bwrap: the sleep never appeared');
  }
  record(series, 'bwrap exec → sleep running', performance.now() - t0);
  const tKill = performance.now();
  child.kill('SIGTERM');
  await exited(child);
  record(series, 'bwrap SIGTERM → exit', performance.now() - tKill);
  if ((await poll(() => (gone(sleeper) ? true : null), 2000)) !== null) {
    record(series, 'bwrap SIGTERM → sleep gone', performance.now() - tKill);
    return;
  }
  // --die-with-parent did not take the sandbox down (seen here now and then): count it and kill
  // the sandbox's PID 1 (the sleep's parent), which ends its PID namespace.
  bwrapSurvivors += 1;
  const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${sleeper}/status`, 'utf8'))?.[1] ?? 0);
  for (const pid of [ppid, sleeper]) {
    try {
      if (pid > 1) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await poll(() => (gone(sleeper) ? true : null), 2000);
}

let bwrapSurvivors = 0;

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
function ratio(a: number[] | undefined, b: number[] | undefined): string {
  return a?.length && b?.length ? `${(median(a) / median(b)).toFixed(1)}×` : 'n/a';
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/linux needs root');
  if (!existsSync(join(repo, 'dist', 'cli', 'main.js'))) throw new Error('build first: npm run build');
  const runs = Number(process.argv[2] ?? process.env.VMSANDBOX_BENCH_RUNS ?? 20);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`runs must be a positive integer (got ${process.argv[2] ?? process.env.VMSANDBOX_BENCH_RUNS})`);
  const series: Series = new Map();
  const scratch = mkdtempSync(join(tmpdir(), 'vmsandbox-bench-'));
  const bwrap = findBwrap();
  let haveTime = true;
  console.log(`vmsandbox bench:linux — ${runs} runs each; kernel ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, node ${process.version}`);
  try {
    // Warm the page cache for every program once, so the first run is not an outlier.
    await nodeBaseline(new Map());
    for (let i = 0; i < runs; i++) {
      await cliRun(i, series, scratch);
      await nodeBaseline(series);
      haveTime = nodeMaxRss(series) && haveTime;
      if (bwrap) await bwrapBaseline(bwrap, series);
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
  console.log('\n== vmsandbox run CONFIG (the compiled CLI; vmm /bin/sleep) ==');
  console.log(row('exec → running', g('cli exec → running'), 'ms'));
  console.log(row('SIGTERM → exit (sandbox gone)', g('cli SIGTERM → exit'), 'ms'));
  console.log(row(`manager RSS (${STEADY_MS} ms after running)`, g('cli manager RSS'), 'MiB'));
  console.log(row('vmsandbox-init RSS', g('cli init RSS'), 'MiB'));
  console.log('\n== baselines ==');
  console.log(row('node -e 0: exec → exit', g('node -e 0 exec → exit'), 'ms'));
  if (haveTime) console.log(row('node -e 0: max RSS (/usr/bin/time)', g('node -e 0 max RSS'), 'MiB'));
  else console.log('node -e 0: max RSS                           skipped: /usr/bin/time not installed');
  if (bwrap) {
    console.log(row('bwrap --unshare-pid: exec → sleep running', g('bwrap exec → sleep running'), 'ms'));
    console.log(row('bwrap: SIGTERM → bwrap exit', g('bwrap SIGTERM → exit'), 'ms'));
    console.log(row('bwrap: SIGTERM → sleep gone', g('bwrap SIGTERM → sleep gone'), 'ms'));
    if (bwrapSurvivors) console.log(`bwrap: --die-with-parent left the sleep running in ${bwrapSurvivors} of ${runs} runs (killed by the bench; not in the figures)`);
  } else console.log('bwrap baseline skipped: bwrap not found in PATH (apt-get install bubblewrap)');
  console.log('\n== ratios (medians) ==');
  console.log(`exec → running / node -e 0 exec → exit        ${ratio(g('cli exec → running'), g('node -e 0 exec → exit'))}`);
  console.log(`exec → running / bwrap exec → sleep running   ${bwrap ? ratio(g('cli exec → running'), g('bwrap exec → sleep running')) : 'n/a (no bwrap)'}`);
  console.log(`SIGTERM → exit / bwrap SIGTERM → sleep gone   ${bwrap ? ratio(g('cli SIGTERM → exit'), g('bwrap SIGTERM → sleep gone')) : 'n/a (no bwrap)'}`);
  console.log(`manager RSS / node -e 0 max RSS               ${ratio(g('cli manager RSS'), g('node -e 0 max RSS'))}`);
  console.log('\n== backend operations, in process (2 services, through the machine) ==');
  for (const [k, v] of series) if (k.startsWith('op ') || k.startsWith('machine ')) console.log(row(k.replace(/^op /, ''), v, 'ms'));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
