// Each service's stdout/stderr is a pipe the init reads, never the manager's own log (issue 12,
// item 8 of what was found): a service can neither forge a manager record (its text is only ever a
// field of a record tagged with its name) nor truncate the log (it does not hold the log's fd);
// lines are cut at the plan's limit, and a flood is dropped and counted, never waited on by PID 1;
// the init forwards at most the spawn's outrate= lines a second, so the manager never parses more.

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

/** An init on a socketpair (no cgroup), read at the protocol level as the manager reads it. */
interface RawInit {
  /** Send a request; resolves with the reply's round trip (ms) and its tokens. */
  ask(id: string, line: string, ms?: number): Promise<{ rtt: number; reply: string[] }>;
  /** Arrival times (ms) of `out flood stdout whole y` lines. */
  outTimes: number[];
  /** Sums of the `outdrop` (socket) and `outlimit` (rate) counts, and how many outlimit messages came. */
  counts: { socket: number; rate: number; rateMessages: number };
  /** Every other message (hello, exit, anything unexpected), decoded. */
  other: string[];
  sock: Socket;
  pidfd: number;
  close(): void;
}

function rawInit(): RawInit {
  const [mine, theirs] = socketpair();
  const { pidfd } = cloneInit(join(nativeBuildDir(), 'vmsandbox-init'), theirs, -1, -1, { clone: ['ipc', 'net'], loopback: true });
  closeFd(theirs);
  const sock = new Socket({ fd: mine, readable: true, writable: true });
  sock.setEncoding('latin1');
  const replies = new Map<string, { at: number; reply: string[] }>();
  const outTimes: number[] = [];
  const counts = { socket: 0, rate: 0, rateMessages: 0 };
  const other: string[] = [];
  let buf = '';
  sock.on('data', (d: string) => {
    buf += d;
    const now = Date.now();
    let start = 0;
    for (let nl = buf.indexOf('\n', start); nl >= 0; nl = buf.indexOf('\n', start)) {
      const raw = buf.slice(start, nl);
      start = nl + 1;
      if (raw === 'out flood stdout whole y') {
        outTimes.push(now);
        continue;
      }
      const t = raw.split(' ').map(decodeToken);
      if (t[0] === 'outdrop') counts.socket += Number(t[3]);
      else if (t[0] === 'outlimit' && t[1] === 'flood') {
        counts.rate += Number(t[2]);
        counts.rateMessages++;
      } else if (t[0] === 'ok' || t[0] === 'err') replies.set(t[1]!, { at: now, reply: t });
      else other.push(t.join(' '));
    }
    buf = buf.slice(start);
  });
  return {
    async ask(id, line, ms = 2000) {
      const t0 = Date.now();
      sock.write(`${line}\n`);
      expect(await until(() => replies.has(id), ms), `no reply to ${line} within ${ms} ms`).toBe(true);
      const r = replies.get(id)!;
      return { rtt: r.at - t0, reply: r.reply };
    },
    outTimes,
    counts,
    other,
    sock,
    pidfd,
    close() {
      sock.destroy();
      try {
        pidfdSendSignal(pidfd, signalNumber('SIGKILL'));
      } catch {
        /* gone */
      }
      for (let i = 0; i < 200 && !waitPidfd(pidfd); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      closeFd(pidfd);
    },
  };
}

/** Ping every 25 ms for `ms`; the round trips. */
async function pingFor(init: RawInit, ms: number): Promise<number[]> {
  const rtts: number[] = [];
  const end = Date.now() + ms;
  for (let i = 0; Date.now() < end; i++) {
    rtts.push((await init.ask(`p${i}`, `ping p${i}`)).rtt);
    await new Promise((r) => setTimeout(r, 25));
  }
  return rtts;
}

/** The most arrivals in any `span` ms (times sorted). */
function densest(times: number[], span: number): number {
  let best = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while (times[j]! - times[i]! >= span) i++;
    best = Math.max(best, j - i + 1);
  }
  return best;
}

const cpuMs = (u: NodeJS.CpuUsage) => Math.round((u.user + u.system) / 1000);

describe.skipIf(skip)('a flood of output and the init', () => {
  let init: RawInit | null = null;
  beforeAll(() => ensureNative());
  afterEach(() => {
    init?.close();
    init = null;
  });

  it('bounds a service\'s lines per second at the source (outrate=): the manager receives at most the rate, the rest is counted, PID 1 answers ping', async () => {
    const rate = 200;
    init = rawInit();
    expect(await until(() => init!.other.includes('hello 1 1'), 5000)).toBe(true);
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    expect((await init.ask('1', `spawn 1 name=flood arg=/usr/bin/yes outline=64 outrate=${rate}`)).reply[0]).toBe('ok');
    const rtts = await pingFor(init, 2500);
    const beforeKill = Date.now() - t0;
    await init.ask('k', 'kill k flood 9');
    expect(await until(() => init!.other.some((l) => /^exit flood \d+ killed 9$/.test(l)), 3000)).toBe(true);
    const elapsed = Date.now() - t0;
    const cpu = cpuMs(process.cpuUsage(cpu0));
    // A window holds at most `rate` lines, and the next begins at least a second after it began
    // (at most this many began); under a flood one begins as soon as the last ended (at least this
    // many had begun, and ended or were cut short by the kill, each with lines to count).
    const atMost = Math.floor(elapsed / 1000) + 1;
    const atLeast = Math.floor(beforeKill / 1000);
    // The last window's count comes at the streams' EOF, after the exit.
    expect(await until(() => init!.counts.rateMessages >= atLeast, 2000)).toBe(true);
    const lines = init.outTimes.length;
    expect(lines, `${lines} lines in ${elapsed} ms`).toBeLessThanOrEqual(rate * atMost);
    expect(lines, 'the rate\'s worth did come through, window after window').toBeGreaterThanOrEqual(rate * atLeast);
    expect(densest(init.outTimes, 1000), 'any second of arrivals holds at most two windows\' worth').toBeLessThanOrEqual(2 * rate);
    // The rest was counted in the init, reported about once a window, and never queued for the socket.
    expect(init.counts.rate, 'lines dropped over the rate, as the init counted them').toBeGreaterThan(10_000);
    expect(init.counts.rateMessages).toBeLessThanOrEqual(atMost);
    expect(init.counts.socket, 'no line waited for the socket: the manager reads only the rate').toBe(0);
    expect(Math.max(...rtts), `ping round trips ${rtts.join(',')} ms`).toBeLessThan(500);
    expect(init.other.filter((l) => !/^(hello|exit) /.test(l)), 'nothing else came').toEqual([]);
    console.log(`flood at outrate=${rate}: ${lines} lines delivered in ${elapsed} ms (densest second ${densest(init.outTimes, 1000)}), ${init.counts.rate} dropped by the init in ${init.counts.rateMessages} outlimit reports, reader CPU ${cpu} ms, ping rtt max ${Math.max(...rtts)} ms`);
  }, 30_000);

  it('control, with the rate set high: the flood reaches the manager; pings stay answered, and a reader that stops gets drops (counted), never a blocked init', async () => {
    init = rawInit();
    expect(await until(() => init!.other.includes('hello 1 1'), 5000)).toBe(true);
    const cpu0 = process.cpuUsage();
    await init.ask('1', 'spawn 1 name=flood arg=/usr/bin/yes outline=64 outrate=1000000');

    // Read as the manager does: pings stay answered while `yes` floods.
    const rtts = await pingFor(init, 650);
    const cpu = cpuMs(process.cpuUsage(cpu0));
    const delivered = init.outTimes.length;
    expect(delivered, 'control: the flood reached the manager').toBeGreaterThan(10_000);
    expect(Math.max(...rtts), `ping round trips ${rtts.join(',')} ms`).toBeLessThan(500);

    // A manager that does not read: the socket's buffer fills; the init drops and counts instead of
    // blocking in send (a blocked init would deliver every line and never report a drop).
    init.sock.pause();
    await new Promise((r) => setTimeout(r, 300));
    expect(waitPidfd(init.pidfd), 'PID 1 is still running').toBeNull();
    init.sock.resume();
    expect(await until(() => init!.counts.socket > 0, 3000), 'an outdrop count arrived').toBe(true);
    await init.ask('k', 'kill k flood 9');
    expect(await until(() => init!.other.some((l) => /^exit flood \d+ killed 9$/.test(l)), 3000)).toBe(true);
    expect(init.other.filter((l) => !/^(hello|exit) /.test(l)), 'every out line was whole and uncorrupted').toEqual([]);
    console.log(`flood at outrate=1000000: ${delivered} lines delivered in 650 ms (reader CPU ${cpu} ms), then ${init.counts.socket} dropped for the socket, ${init.counts.rate} over the rate; ping rtt max ${Math.max(...rtts)} ms`);
  }, 30_000);

  it('refuses a malformed or repeated outrate= with its name, and lives on', async () => {
    init = rawInit();
    expect(await until(() => init!.other.includes('hello 1 1'), 5000)).toBe(true);
    for (const [i, bad] of ['outrate=0', 'outrate=-1', 'outrate=x', 'outrate=', 'outrate=1000001', 'outrate=5 outrate=5'].entries()) {
      expect((await init.ask(`b${i}`, `spawn b${i} name=s${i} arg=/bin/true ${bad}`)).reply, bad).toEqual(['err', `b${i}`, '22', 'outrate']);
    }
    expect((await init.ask('ok', 'spawn ok name=fine arg=/bin/true outrate=1000000')).reply[0]).toBe('ok');
    expect((await init.ask('ping', 'ping ping')).reply).toEqual(['ok', 'ping']);
  }, 30_000);
});
