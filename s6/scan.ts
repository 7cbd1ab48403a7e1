// s6 plumbing shared by `vmsandbox demo` and test/s6: finding the s6 tools, generating a VM's
// service directory from examples/s6/vm-demo, and running a private s6-svscan on a scan directory.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { demoConfigPath } from '../config/demo.js';
import type { VmConfig } from '../config/types.js';
import { stopBoundMs } from './run.js';

const run = promisify(execFile);

export const examplesDir = dirname(demoConfigPath);
export const exampleServiceDir = join(examplesDir, 's6', 'vm-demo');
/** bin/ of this package: put on s6-svscan's PATH so run/finish find `vmsandbox`. */
export const packageBinDir = resolve(examplesDir, '..', 'bin');

export const S6_TOOLS = ['s6-svscan', 's6-supervise', 's6-svscanctl', 's6-svc', 's6-svwait', 's6-svstat', 's6-log', 'execlineb'] as const;

function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

/** Why a real s6 tree cannot run here, or null. */
export function s6Unavailable(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root (the sandbox needs namespaces, mounts, cgroups and uid changes)';
  const missing = S6_TOOLS.filter((t) => !onPath(t));
  if (missing.length) return `s6/execline not installed (missing ${missing.join(', ')}; apt-get install s6 execline)`;
  return null;
}

/** Extra time s6 gives the manager beyond its own stop bound before SIGKILL (node start, finish). */
export const TIMEOUT_KILL_SLACK_MS = 2000;

/**
 * Write a VM's service directory at `dir` from examples/s6/vm-demo: run, finish, notification-fd,
 * log/run as shipped; config.json a symlink to `configPath`; timeout-kill computed from the config.
 * Pass `down: true` to add a `down` file (s6 does not start it until s6-svc -u), and `program` for
 * the vmsandbox that run and finish exec (vmsandbox s6-service: this installation's, by path).
 */
export function writeServiceDir(dir: string, configPath: string, config: VmConfig | null, opts: { down?: boolean; program?: string } = {}): void {
  mkdirSync(join(dir, 'log'), { recursive: true });
  for (const f of ['notification-fd', join('log', 'run')]) copyFileSync(join(exampleServiceDir, f), join(dir, f));
  // run and finish exec `vmsandbox` by name (found on s6-svscan's PATH), or `program`.
  for (const f of ['run', 'finish']) {
    const text = readFileSync(join(exampleServiceDir, f), 'utf8');
    writeFileSync(join(dir, f), opts.program ? text.replace(/^(exec |)vmsandbox (run|finish) /m, `$1${opts.program} $2 `) : text, { mode: 0o755 });
  }
  const bound = config ? stopBoundMs(config) + TIMEOUT_KILL_SLACK_MS : 16000;
  writeFileSync(join(dir, 'timeout-kill'), `${bound}\n`);
  rmSync(join(dir, 'config.json'), { force: true });
  symlinkSync(resolve(configPath), join(dir, 'config.json'));
  if (opts.down) writeFileSync(join(dir, 'down'), '');
}

export interface SvStat {
  up: boolean;
  ready: boolean;
  pid: number | null;
  exitcode: number | null;
  signal: string | null;
  wantedup: boolean;
  normallyup: boolean;
  /** Seconds since the last up/down change. */
  updownfor: number;
}

/**
 * A private s6-svscan on a scan directory, with this package's bin/ on its PATH. Write the service
 * directories first, then start(): s6-svscan then finds them complete on its first scan.
 */
export class Scan {
  private child: ChildProcess | null = null;
  private stderr = '';
  private exitedP: Promise<number | null> = Promise.resolve(null);

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  start(): this {
    this.child = spawn('s6-svscan', [this.dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PATH: `${packageBinDir}${delimiter}${process.env.PATH ?? '/usr/bin:/bin'}` },
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const child = this.child;
    this.exitedP = new Promise((r) => child.on('exit', (code) => r(code)));
    return this;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get exited(): Promise<number | null> {
    return this.exitedP;
  }

  private get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  get errors(): string {
    return this.stderr;
  }

  service(name: string): string {
    return join(this.dir, name);
  }

  /** Tell s6-svscan to pick up new service directories now. */
  async rescan(): Promise<void> {
    await run('s6-svscanctl', ['-a', this.dir]);
  }

  async svc(name: string, ...flags: string[]): Promise<void> {
    await run('s6-svc', [...flags, this.service(name)]);
  }

  /** s6-svwait with a timeout; resolves true if the wait succeeded. */
  async svwait(name: string, flag: '-u' | '-U' | '-d' | '-D', timeoutMs: number): Promise<boolean> {
    try {
      await run('s6-svwait', [flag, '-t', String(timeoutMs), this.service(name)]);
      return true;
    } catch {
      return false;
    }
  }

  /** Wait until s6-supervise is running for `name` (its control fifo answers). */
  async supervised(name: string, timeoutMs = 10_000): Promise<void> {
    for (const start = Date.now(); ; await new Promise((r) => setTimeout(r, 20))) {
      try {
        await run('s6-svok', [this.service(name)]);
        return;
      } catch {
        // A service directory written after s6-svscan's scan is picked up by the next scan.
        await run('s6-svscanctl', ['-a', this.dir]).catch(() => undefined);
        if (Date.now() - start > timeoutMs) throw new Error(`s6-supervise for ${name} did not start within ${timeoutMs} ms: ${this.stderr}`);
      }
    }
  }

  async svstat(name: string): Promise<SvStat> {
    const { stdout } = await run('s6-svstat', ['-o', 'up,ready,pid,exitcode,signal,wantedup,normallyup,updownfor', this.service(name)]);
    const [up, ready, pid, exitcode, signal, wantedup, normallyup, updownfor] = stdout.trim().split(/\s+/);
    return {
      up: up === 'true',
      ready: ready === 'true',
      pid: pid === '-1' || pid === undefined ? null : Number(pid),
      exitcode: exitcode === '-1' || exitcode === undefined ? null : Number(exitcode),
      signal: signal === 'NA' || signal === undefined ? null : signal,
      wantedup: wantedup === 'true',
      normallyup: normallyup === 'true',
      updownfor: Number(updownfor),
    };
  }

  /**
   * Stop everything: s6-svscanctl -t (s6-svscan brings the supervisors down and exits), then,
   * after `graceMs`, SIGKILL whatever still runs from the scan directory (supervisors, loggers,
   * run and finish scripts: their cwd is in it).
   */
  async stop(graceMs = 3000): Promise<void> {
    if (this.running) {
      await run('s6-svscanctl', ['-t', this.dir]).catch(() => this.child?.kill('SIGTERM'));
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, graceMs))]);
      if (this.running) this.child?.kill('SIGKILL');
    }
    const deadline = Date.now() + graceMs;
    while (processesIn(this.dir).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const pid of processesIn(this.dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

/** Pids whose working directory is `dir` or below it. */
export function processesIn(dir: string): number[] {
  const out: number[] = [];
  const prefix = resolve(dir);
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cwd = readlinkSync(`/proc/${d}/cwd`);
      if (cwd === prefix || cwd.startsWith(`${prefix}/`)) out.push(Number(d));
    } catch {
      /* gone or not ours to read */
    }
  }
  return out;
}
