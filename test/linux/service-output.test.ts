// Each service's stdout/stderr is a pipe the init reads, never the manager's own log (issue 12,
// item 8 of what was found): a service can neither forge a manager record (its text is only ever a
// field of a record tagged with its name) nor truncate the log (it does not hold the log's fd);
// lines are cut at the plan's limit, and a flood is dropped and counted, never waited on by PID 1.

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeFd, cloneInit, nativeBuildDir, pidfdSendSignal, signalNumber, socketpair, waitPidfd } from '../../effects/linux/native.js';
import { decodeToken } from '../../effects/linux/protocol.js';
import { SERVICE_OUTPUT } from '../../plan/output.js';
import { start } from './helpers/inprocess.js';
import { forceCleanup, removeTestParents } from './helpers/leftovers.js';
import { writeRunConfig } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { until } from './helpers/until.js';
import { newTestVm, service, SLEEPER, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/service-output skipped: ${skip}`);

/** What a compromised service tries against its stdout: forge a record, write, truncate. */
const attack = (forged: string) =>
  [
    `echo '${forged}'`,
    'echo "fd1=$(readlink /proc/$$/fd/1)"',
    'echo oops >&2',
    'truncate -s 0 /proc/self/fd/1; echo "truncate=$?"',
    'echo done',
  ].join('; ');

function records(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { raw: l };
      }
    });
}

describe.skipIf(skip)('service output through the init', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('vmsandbox run: a forged record and writes land only inside records tagged with the service; the log file cannot be truncated', async () => {
    vm = newTestVm();
    const forged = `{"level":30,"time":"2020-01-01T00:00:00.000Z","vm":"${vm.name}","state":"running","msg":"ready"}`;
    const script = attack(forged);
    // Positive control: the same attack, run by a process that holds a log file's fd, empties it
    // (and its later writes leave NULs where the records were).
    const control = join(vm.scratch, 'control.log');
    writeFileSync(control, '{"level":"info","msg":"a manager record"}\n'.repeat(20));
    const cfd = openSync(control, 'r+');
    spawnSync('/bin/sh', ['-c', script], { stdio: ['ignore', cfd, 'ignore'] });
    closeSync(cfd);
    expect(readFileSync(control, 'utf8')).not.toContain('a manager record');
    expect(readFileSync(control, 'utf8')).toContain('truncate=0');

    // The manager's stdout is a file, as when its log is one.
    const { file } = writeRunConfig(vm, ['/bin/sh', '-c', `${script}; exec sleep 1000`]);
    const logFile = join(vm.scratch, 'manager.log');
    const fd = openSync(logFile, 'w');
    const child = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', file], { stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const log = () => `${readFileSync(logFile, 'utf8')}\n--- stderr ---\n${stderr}`;
    expect(await until(() => records(logFile).some((r) => r.msg === 'done'), 15_000), log()).toBe(true);
    // The manager holds the file; the service's fd 1 is a pipe (readlink from inside its namespace).
    expect(readlinkSync(`/proc/${child.pid}/fd/1`)).toBe(logFile);
    child.kill('SIGTERM');
    expect(await exited, log()).toBe(0);

    const recs = records(logFile);
    expect(recs.filter((r) => 'raw' in r), `every line is a record: ${log()}`).toEqual([]);
    expect(readFileSync(logFile, 'utf8')).not.toContain('\0');
    // The log still starts with the manager's records and ends with its exit record.
    expect(recs[0]!.service, log()).toBeUndefined();
    expect(recs.at(-1)).toMatchObject({ level: 'info', exitCode: 0 });
    const from = (msg: string) => recs.filter((r) => r.msg === msg);
    // The forged record is a string in the msg of one info record of service vmm, nothing more.
    expect(from(forged)).toEqual([expect.objectContaining({ level: 'info', vm: vm.name, service: 'vmm', stream: 'stdout' })]);
    expect(recs.filter((r) => r.level === 30), 'no record with a numeric level (pino labels the manager\'s)').toEqual([]);
    expect(recs.filter((r) => r.state === 'running').every((r) => r.service === undefined)).toBe(true);
    expect(from('oops')).toEqual([expect.objectContaining({ level: 'warn', service: 'vmm', stream: 'stderr' })]);
    expect(recs.find((r) => String(r.msg).startsWith('fd1='))?.msg).toMatch(/^fd1=pipe:\[\d+\]$/);
    expect(recs.find((r) => String(r.msg).startsWith('truncate='))?.msg).not.toBe('truncate=0');
    expect(statSync(logFile).size).toBeGreaterThan(0);
  }, 40_000);

  it('cuts a line at the plan\'s limit and marks it; the last line without newline and all of it before the exit', async () => {
    vm = newTestVm();
    const n = SERVICE_OUTPUT.lineBytes;
    const talker = service({
      name: 'talker',
      argv: ['/bin/sh', '-c', `printf "%${n + 900}s\\n" "" | tr " " x; printf "%${n}s\\n" "" | tr " " y; echo after; printf tail`],
    });
    const r = start(vmConfig(vm, [talker, SLEEPER]), vm);
    let atExit: string[] | null = null;
    const sub = r.backend.events$.subscribe((e) => {
      if (e.type === 'SERVICE_EXITED' && e.service === 'talker') atExit = r.output.map((o) => (o.type === 'line' ? o.line : ''));
    });
    await r.waitFor('running');
    expect(await until(() => atExit !== null, 10_000)).toBe(true);
    sub.unsubscribe();
    r.run.requestStop('SIGTERM');
    await r.done;
    const lines = r.output.filter((o) => o.type === 'line' && o.service === 'talker');
    expect(lines).toEqual([
      { type: 'line', service: 'talker', stream: 'stdout', line: 'x'.repeat(n), cut: true },
      { type: 'line', service: 'talker', stream: 'stdout', line: 'y'.repeat(n), cut: false },
      { type: 'line', service: 'talker', stream: 'stdout', line: 'after', cut: false },
      { type: 'line', service: 'talker', stream: 'stdout', line: 'tail', cut: false },
    ]);
    expect(atExit).toEqual(['x'.repeat(n), 'y'.repeat(n), 'after', 'tail']);
  }, 30_000);
});

describe.skipIf(skip)('a flood of output and the init', () => {
  let cleanup: (() => void) | null = null;
  beforeAll(() => ensureNative());
  afterEach(() => {
    cleanup?.();
    cleanup = null;
  });

  it('keeps answering ping during a flood, and drops (counted) rather than waits when the manager does not read', async () => {
    const [mine, theirs] = socketpair();
    const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1, { clone: ['ipc', 'net'], loopback: true });
    closeFd(theirs);
    const sock = new Socket({ fd: mine, readable: true, writable: true });
    cleanup = () => {
      sock.destroy();
      try {
        pidfdSendSignal(pidfd, signalNumber('SIGKILL'));
      } catch {
        /* gone */
      }
      for (let i = 0; i < 200 && !waitPidfd(pidfd); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      closeFd(pidfd);
    };
    sock.setEncoding('latin1');
    const replies = new Map<string, number>();
    const other: string[] = [];
    let outLines = 0;
    let dropped = 0;
    let buf = '';
    sock.on('data', (d: string) => {
      buf += d;
      let start = 0;
      for (let nl = buf.indexOf('\n', start); nl >= 0; nl = buf.indexOf('\n', start)) {
        const raw = buf.slice(start, nl);
        start = nl + 1;
        if (raw === 'out flood stdout whole y') {
          outLines++;
          continue;
        }
        const t = raw.split(' ').map(decodeToken);
        if (t[0] === 'outdrop') dropped += Number(t[3]);
        else if (t[0] === 'ok' || t[0] === 'err') replies.set(t[1]!, Date.now());
        else other.push(t.join(' '));
      }
      buf = buf.slice(start);
    });
    const ask = async (id: string, line: string, ms = 2000): Promise<number> => {
      const t0 = Date.now();
      sock.write(`${line}\n`);
      expect(await until(() => replies.has(id), ms), `no reply to ${line} within ${ms} ms`).toBe(true);
      return replies.get(id)! - t0;
    };
    expect(await until(() => other.includes('hello 1 1'), 5000)).toBe(true);
    await ask('1', 'spawn 1 name=flood arg=/usr/bin/yes outline=64');

    // Read as the manager does: pings stay answered while `yes` floods.
    const rtts: number[] = [];
    for (let i = 0; i < 20; i++) {
      rtts.push(await ask(`p${i}`, `ping p${i}`));
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(outLines, 'control: the flood reached the manager').toBeGreaterThan(10_000);
    expect(Math.max(...rtts), `ping round trips ${rtts.join(',')} ms`).toBeLessThan(500);

    // A manager that does not read: the socket's buffer fills; the init drops and counts instead of
    // blocking in send (a blocked init would deliver every line and never report a drop).
    sock.pause();
    await new Promise((r) => setTimeout(r, 300));
    expect(waitPidfd(pidfd), 'PID 1 is still running').toBeNull();
    sock.resume();
    expect(await until(() => dropped > 0, 3000), 'an outdrop count arrived').toBe(true);
    await ask('k', 'kill k flood 9');
    expect(await until(() => other.some((l) => /^exit flood \d+ killed 9$/.test(l)), 3000)).toBe(true);
    expect(other.filter((l) => !/^(hello|exit) /.test(l)), 'every out line was whole and uncorrupted').toEqual([]);
    console.log(`flood: ${outLines} lines delivered, ${dropped} dropped, ping rtt max ${Math.max(...rtts)} ms`);
  }, 30_000);
});
