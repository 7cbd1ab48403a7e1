// vmsandbox demo [--sim]: the built-in demo config (examples/demo.json) under a real s6 supervision
// tree: a temporary scan directory with the VM's service directory generated from
// examples/s6/vm-demo, s6-svscan started here, `s6-svc -u`, readiness (s6-svwait -U), a graceful
// `s6-svc -d`, then everything stopped and removed. The service's log is tailed as it is written.
// QEMU is not needed: the demo's vmm is examples/fake-vmm.mjs, a stand-in that speaks QMP.
//
// Without root or without s6 (or with --sim) it runs the same config's lifecycle in the simulator
// (virtual time) and says why.

import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmdirSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { demoConfigPath } from '../config/demo.js';
import { loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { vmmOf } from '../config/types.js';
import { simulate } from '../sim/run.js';
import { demoPlan } from '../sim/demoPlan.js';
import { createLogger, logTransition } from './log.js';

/** Where the demo config expects its stand-in vmm (inside the VM's storage, read-only to the vmm). */
const STAND_IN = 'fake-vmm.mjs';
/** How long the demo lets the VM run once ready, before `s6-svc -d`. */
const RUN_MS = 1500;

export async function demoMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { sim: { type: 'boolean', default: false } } });
  const config = loadConfig(demoConfigPath);
  const why = values.sim ? '--sim was given' : await realDemoUnavailable(config);
  if (why) return simDemo(config, why);
  return realDemo(config);
}

async function realDemoUnavailable(config: VmConfig): Promise<string | null> {
  const { s6Unavailable } = await import('./s6.js');
  const s6 = s6Unavailable();
  if (s6) return s6;
  const { nativeBuildDir } = await import('../effects/linux/native.js');
  if (!existsSync(join(nativeBuildDir(), 'vmsandbox-init'))) return 'native/ is not built (npm ci or make -C native)';
  const { findCgroup2Mount } = await import('../effects/linux/cgroup.js');
  if (!findCgroup2Mount()) return 'no cgroup2 mount';
  for (const s of config.services) {
    if (!existsSync(s.argv[0]!)) return `${s.name}'s program ${s.argv[0]} is not installed`;
  }
  return null;
}

async function simDemo(config: VmConfig, why: string): Promise<number> {
  const log = createLogger(config.name);
  log.info({ config: demoConfigPath, backend: 'simulator', why }, `demo: ${config.name} with ${config.services.length} services, in the simulator (virtual time) because ${why}; s6 stops it at t=3000 ms`);
  let errors = 0;
  const r = await simulate(0, {
    config,
    plan: demoPlan,
    onRecord: (rec, at) => {
      logTransition(log, rec, errors, { vt: at });
      errors = rec.errors;
    },
  });
  const out = r.output;
  log.info({ outcome: out?.outcome, exitCode: out?.exitCode, invariants: r.ok ? 'hold' : r.violations }, `demo finished: ${r.finalState}, outcome ${out?.outcome}, exit ${out?.exitCode}; invariants ${r.ok ? 'hold' : 'VIOLATED'}`);
  return r.ok ? 0 : 1;
}

// ---- the real thing ----

const t0 = Date.now();
const say = (msg: string) => process.stdout.write(`${`+${((Date.now() - t0) / 1000).toFixed(3)}s`.padStart(9)}  ${msg}\n`);

/** Render one line of the service's log (pino JSON from vmsandbox, plain text from its services). */
function renderLogLine(line: string): string {
  try {
    const r = JSON.parse(line) as Record<string, unknown>;
    const time = typeof r.time === 'string' ? r.time.slice(11, 23) : '';
    const mark = r.level === 'error' ? '!' : r.level === 'warn' ? '~' : '|';
    return `log ${mark} ${time}  ${String(r.msg)}`;
  } catch {
    return `log | ${' '.repeat(12)}  ${line}`;
  }
}

/** Follow a growing file (s6-log's `current`), line by line. */
class Tail {
  private offset = 0;
  private partial = '';
  private timer: NodeJS.Timeout;
  readonly lines: string[] = [];

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
  ) {
    this.timer = setInterval(() => this.poll(), 25);
  }

  poll(): void {
    if (!existsSync(this.file)) return;
    const size = statSync(this.file).size;
    if (size <= this.offset) return;
    const fd = openSync(this.file, 'r');
    try {
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      this.partial += buf.subarray(0, n).toString('utf8');
    } finally {
      closeSync(fd);
    }
    let nl: number;
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      const line = this.partial.slice(0, nl);
      this.partial = this.partial.slice(nl + 1);
      this.lines.push(line);
      this.onLine(line);
    }
  }

  /** Poll until a line matches (or the timeout passes). */
  async waitFor(match: (line: string) => boolean, timeoutMs: number): Promise<boolean> {
    for (const start = Date.now(); Date.now() - start < timeoutMs; await new Promise((r) => setTimeout(r, 25))) {
      this.poll();
      if (this.lines.some(match)) return true;
    }
    return false;
  }

  stop(): void {
    this.poll();
    clearInterval(this.timer);
  }
}

/** One real demo at a time on a host (they share the VM name): a pid file taken with O_EXCL. */
const LOCK = '/run/vmsandbox-demo.lock';

async function takeLock(timeoutMs: number): Promise<boolean> {
  for (let said = false, start = Date.now(); Date.now() - start < timeoutMs; await new Promise((r) => setTimeout(r, 100))) {
    try {
      const fd = openSync(LOCK, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return true;
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(LOCK, 'utf8').trim());
        process.kill(holder, 0);
      } catch {
        rmSync(LOCK, { force: true }); // its demo died: take over
        continue;
      }
      if (!said) say(`another demo (pid ${holder}) is running: waiting for it`);
      said = true;
    }
  }
  return false;
}

async function realDemo(config: VmConfig): Promise<number> {
  if (!(await takeLock(60_000))) {
    say(`${LOCK} is held by a demo that did not finish within 60 s`);
    return 1;
  }
  try {
    return await realDemoLocked(config);
  } finally {
    rmSync(LOCK, { force: true });
  }
}

async function realDemoLocked(config: VmConfig): Promise<number> {
  const { Scan, writeServiceDir, examplesDir, exampleServiceDir } = await import('./s6.js');
  const { stopBoundMs } = await import('./run.js');
  const { cgroupRoot, vmCgroupDir } = await import('../effects/linux/cgroup.js');
  const vmm = vmmOf(config);
  const standIn = join(config.storage, STAND_IN);
  const usesStandIn = vmm.argv.includes(standIn);

  say(`vmsandbox demo: VM "${config.name}" from ${demoConfigPath}, under a real s6 supervision tree`);
  say(usesStandIn
    ? `vmm: the QEMU stand-in examples/${STAND_IN} (QMP on ${'qmp' in vmm.stop ? vmm.stop.qmp : '?'}; QEMU itself is not used), ` +
        `"${config.services.filter((s) => !s.vmm).map((s) => s.name).join(', ')}": ${config.services.filter((s) => !s.vmm).map((s) => s.argv.join(' ')).join(', ')} (a sleeper standing in)`
    : `vmm: ${vmm.argv[0]}`);

  const vmDir = vmCgroupDir(config, cgroupRoot());
  // Parents the run creates (cgroup.parent, the runtime dir's parent): removed again if this demo
  // made them and they are empty.
  const parents = [join(vmDir, '..'), join(config.runtimeDir, '..')].filter((d) => !existsSync(d));
  if (existsSync(vmDir) || existsSync(config.runtimeDir)) {
    say(`${vmDir} or ${config.runtimeDir} exists: another demo is running, or a killed one left it (vmsandbox finish ${demoConfigPath} removes it)`);
    return 1;
  }

  // The stand-in lives in the VM's storage, where the config's argv and Landlock rules expect it.
  const created: string[] = [];
  for (const d of [join(config.storage, '..'), config.storage]) {
    if (!existsSync(d)) {
      mkdirSync(d, { mode: 0o755 });
      created.unshift(d);
    }
  }
  const installedStandIn = usesStandIn && !existsSync(standIn);
  if (usesStandIn) {
    copyFileSync(join(examplesDir, STAND_IN), standIn);
    chmodSync(standIn, 0o644);
  }

  const tmp = mkdtempSync('/tmp/vmsandbox-demo-');
  const name = `vm-${config.name}`;
  const scan = new Scan(join(tmp, 'scan'));
  const svcDir = scan.service(name);
  writeServiceDir(svcDir, demoConfigPath, config, { down: true });
  scan.start();
  say(`service directory ${svcDir} (from examples/s6/vm-demo: run, finish, notification-fd=3, timeout-kill=${stopBoundMs(config) + 2000} ms, log/run)`);
  say(`s6-svscan ${scan.dir} (pid ${scan.pid})`);
  const tail = new Tail(join(svcDir, 'log', 'main', 'current'), (line) => say(renderLogLine(line)));

  let ok = true;
  const check = (cond: boolean, what: string) => {
    if (!cond) {
      ok = false;
      say(`FAILED: ${what}`);
    }
  };
  try {
    await scan.supervised(name);
    await scan.supervised(join(name, 'log'));
    const upAt = Date.now();
    say(`$ s6-svc -u ${name}      (start; the manager reports readiness on fd 3)`);
    await scan.svc(name, '-u');
    const ready = await scan.svwait(name, '-U', 15_000);
    const readyMs = Date.now() - upAt;
    tail.poll();
    check(ready, 's6-svwait -U: the service did not become ready within 15 s');
    if (ready) {
      const st = await scan.svstat(name);
      say(`s6-svwait -U returned after ${readyMs} ms: s6-svstat says up=${st.up} ready=${st.ready} pid=${st.pid} (the manager)`);
      say(`the VM runs; stopping it in ${RUN_MS} ms`);
      await new Promise((r) => setTimeout(r, RUN_MS));
    }
    const downAt = Date.now();
    say(`$ s6-svc -d ${name}      (SIGTERM + SIGCONT: the graceful stop, QMP system_powerdown)`);
    await scan.svc(name, '-d');
    const down = await scan.svwait(name, '-D', stopBoundMs(config) + 5000);
    const downMs = Date.now() - downAt;
    await tail.waitFor((l) => l.includes('"event":"finish"'), 3000);
    const st = await scan.svstat(name);
    check(down, 's6-svwait -D: the service did not go down');
    say(`s6-svwait -D returned after ${downMs} ms (run and finish done): s6-svstat says up=${st.up} exitcode=${st.exitcode} wantedup=${st.wantedup}`);
    check(st.exitcode === 0, `the manager exited ${st.exitcode}, not 0 (a clean graceful stop)`);
  } finally {
    await scan.stop();
    tail.stop();
    rmSync(tmp, { recursive: true, force: true });
    if (installedStandIn) rmSync(standIn, { force: true });
    for (const d of [...created, ...parents]) {
      try {
        rmdirSync(d);
      } catch {
        /* not empty: not ours to remove */
      }
    }
  }
  const left = [vmDir, config.runtimeDir].filter((p) => existsSync(p));
  check(left.length === 0, `left behind: ${left.join(', ')}`);
  say(ok
    ? `s6-svscan stopped, ${tmp} removed; nothing of the VM is left (no cgroup, no runtime dir). Demo done.`
    : 'demo failed: see above');
  return ok ? 0 : 1;
}
