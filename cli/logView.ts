// `vmsandbox log [FILE|-] [--follow]`: the manager's records for a person. `run` writes pino JSON
// lines (s6-log keeps them in log/main/current); this renders them with pino-pretty, the pino
// ecosystem's own prettifier: time, level, the VM, the message, and the fields that matter at
// 3 a.m. (state, service, exit code, reason, fix). s6-log's timestamp prefixes (TAI64N "@4000…"
// from its `t` directive, ISO 8601 from `T`) are read and dropped; a line that is not a record is
// shown as it is.

import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Logger } from './log.js';
import { processIo, type CliIo } from './io.js';

const USAGE =
  'usage: vmsandbox log [FILE|-] [--follow] [--color | --no-color]\n' +
  '  Render the manager\'s JSON log records (vmsandbox run\'s stdout, an s6-log file such as\n' +
  '  SERVICEDIR/log/main/current) as text. FILE defaults to stdin ("-").\n' +
  '  --follow, -f  keep reading FILE as it grows, across s6-log\'s rotations (like tail -F)\n' +
  '  --color       colors even when stdout is not a terminal (--no-color: none)\n';

/** pino's numeric levels, for records written with labels (run's formatter writes "info", …). */
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** TAI64N label: 2^62 + seconds since 1970 (TAI, which is UTC + 10 s at the epoch + leap seconds). */
function tai64n(label: string): string | null {
  const m = /^@([0-9a-f]{16})([0-9a-f]{8})$/.exec(label);
  if (!m) return null;
  const secs = Number(BigInt(`0x${m[1]}`) - (1n << 62n)) - 37; // 37: TAI − UTC since 2017
  return new Date(secs * 1000 + Math.floor(parseInt(m[2]!, 16) / 1e6)).toISOString();
}

/** A line of s6-log or of `run`'s stdout: its prefix time (if any) and the rest. */
export function splitPrefix(line: string): { time: string | null; rest: string } {
  const t = /^(@[0-9a-f]{24}) (.*)$/s.exec(line);
  if (t) return { time: tai64n(t[1]!), rest: t[2]! };
  const iso = /^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?) {1,2}(.*)$/s.exec(line);
  if (iso) return { time: new Date(`${iso[1]!.replace(' ', 'T').slice(0, 23)}Z`).toISOString(), rest: iso[2]! };
  return { time: null, rest: line };
}

export function renderer(colorize: boolean): (line: string) => string {
  const pretty = prettyFactory({
    colorize,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname,vm,cmd,services',
    // The VM first, unless the message already names it ("demo: …").
    messageFormat: (log: Record<string, unknown>) => {
      const vm = typeof log.vm === 'string' ? log.vm : '';
      const msg = String(log.msg);
      return vm && !msg.startsWith(`${vm}:`) ? `${vm}: ${msg}` : msg;
    },
    singleLine: true,
  });
  return (line) => {
    const { time, rest } = splitPrefix(line);
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(rest) as Record<string, unknown>;
    } catch {
      return `${rest}\n`;
    }
    if (typeof r !== 'object' || r === null || !('msg' in r)) return `${rest}\n`;
    const level = typeof r.level === 'string' ? (LEVELS[r.level] ?? 30) : r.level;
    return pretty({ ...r, level, time: r.time ?? time ?? undefined }) as string;
  };
}

/**
 * A logger like createLogger's (cli/log.ts: the same records), written as text for a person at a
 * terminal (the demo). `run` keeps JSON: s6-log stores it and `vmsandbox log` renders it.
 */
export function createTextLogger(vm: string | Record<string, unknown>, write: (text: string) => void = (t) => void process.stdout.write(t)): Logger {
  const render = renderer(Boolean(process.stdout.isTTY));
  return pino(
    { base: typeof vm === 'string' ? { vm } : vm, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    { write: (line: string) => write(render(line.trimEnd())) },
  );
}

/** Read a file (or stdin) from `offset`: what is there now, and where it ends. */
function readFrom(fd: number, offset: number | null): { text: string; end: number } {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(1 << 16);
  let pos = offset;
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, pos);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      if ((e as NodeJS.ErrnoException).code === 'EOF') break;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
    if (pos !== null) pos += n;
  }
  return { text: Buffer.concat(chunks).toString('utf8'), end: pos ?? 0 };
}

export async function logMain(argv: string[], io: CliIo = processIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { follow: { type: 'boolean', short: 'f' }, color: { type: 'boolean' }, 'no-color': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    io.err(USAGE);
    return 2;
  }
  const file = positionals[0] ?? '-';
  if (file === '-' && values.follow) {
    io.err('vmsandbox log: --follow needs a FILE (stdin is followed anyway)\n');
    return 2;
  }
  // A reader that goes away (| head) ends the rendering, not in a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const color = values['no-color'] ? false : (values.color ?? Boolean(process.stdout.isTTY));
  const render = renderer(color);
  let partial = '';
  const emit = (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop()!;
    for (const l of lines) if (l.trim()) io.out(render(l));
  };
  if (file === '-') {
    for await (const chunk of process.stdin) emit(String(chunk));
    if (partial.trim()) io.out(render(partial));
    return 0;
  }
  if (!existsSync(file)) {
    io.err(`vmsandbox log: ${file} does not exist\n`);
    return 1;
  }
  let ino = statSync(file).ino;
  let fd = openSync(file, 'r');
  let { text, end } = readFrom(fd, 0);
  emit(text);
  if (!values.follow) {
    closeSync(fd);
    if (partial.trim()) io.out(render(partial));
    return 0;
  }
  // Follow: s6-log renames current away when it rotates and starts a new one; read the old one to
  // its end, then the new one from its start.
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    ({ text, end } = readFrom(fd, end));
    emit(text);
    const st = existsSync(file) ? statSync(file) : null;
    if (st && st.ino !== ino) {
      closeSync(fd);
      fd = openSync(file, 'r');
      ino = st.ino;
      end = 0;
    }
  }
}
