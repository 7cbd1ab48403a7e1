// vmsandbox inspect: the state visualizer. A read-only HTTP server (loopback by default) serving one
// page (web/) that shows every sandbox found under the runtime roots (their status sockets, see
// statusSocket.ts), live over server-sent events; or, with --replay FILE, a recorded run (a manager's
// pino log or `vmsandbox sim --seed N --trace` output) with a time scrubber.
// Every request must carry the secret token of this run (in the URL printed at start, as notebook
// servers do): loopback is reachable by every local user, so the address alone proves nothing.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { printHelp } from '../cli/help.js';
import { createTextLogger } from '../cli/logView.js';
import { pino } from 'pino';
import { machineGraph, type MachineGraph } from './graph.js';
import { toSvg } from './graphSvg.js';
import { parseRecording, readyText, type Note, type Recording } from './replay.js';
import { sandboxMachine } from '../machines/sandbox.js';
import { keepOutput, READY_EVENT, type ConfigSummary, type OutputEntry, type ServiceStatus, type StatusMessage, type StatusRecord } from './protocol.js';
import { DEFAULT_RUNTIME_ROOTS, findStatusSockets, followStatus, type StatusClient } from './statusSocket.js';

export const DEFAULT_LISTEN = '127.0.0.1:7390';
const USAGE =
  'usage: vmsandbox inspect [--listen HOST:PORT] [--runtime-root DIR ...] [--replay FILE]\n' +
  '  The state visualizer: a read-only web page (open the URL it prints, with its ?token=) showing\n' +
  '  every sandbox running under the runtime roots, live (root: it reads their status sockets), or a\n' +
  '  recorded run (docs/visualizer.md).\n' +
  `  --listen HOST:PORT    where to serve (default ${DEFAULT_LISTEN})\n` +
  '  --runtime-root DIR    where runtime dirs live (default /run/vmsandbox; repeatable)\n' +
  '  --replay FILE         a manager\'s log (s6-log\'s current) or a `vmsandbox sim --trace` output\n' +
  '  exit: 1 the port is taken or the file unreadable, 2 usage; otherwise it serves until SIGINT';

/** One sandbox as the page shows it (live from a status socket, or replayed from a file). */
export interface SandboxView {
  id: string;
  vm: string;
  source: 'live' | 'pino' | 'sim';
  socket: string | null;
  connected: boolean;
  pid: number | null;
  startedAt: string | null;
  config: ConfigSummary | null;
  plan: Record<string, unknown> | null;
  graphKey: string;
  history: StatusRecord[];
  notes: Note[];
  /** The latest services (a record's, or a fresher cgroup sample). */
  services: ServiceStatus[];
  /** Each service's recent output (live only; the last OUTPUT_KEPT entries per service). */
  output: Record<string, OutputEntry[]>;
  end: Recording['end'];
}

export interface InspectorOptions {
  listen?: string;
  /** The listen address was given explicitly: a non-loopback one is then allowed (and logged). */
  explicitListen?: boolean;
  roots?: string[];
  replay?: string;
  /** How often the runtime roots are scanned for new sockets (ms). */
  scanMs?: number;
  log?: pino.Logger;
}

export interface Inspector {
  /** The page's address with the token (`http://127.0.0.1:PORT/?token=…`): what is printed at start. */
  url: string;
  /** The server's address without the token (`http://127.0.0.1:PORT/`). */
  base: string;
  /** The secret every request must carry as `?token=`. */
  token: string;
  close(): Promise<void>;
  /** The sandboxes shown, by id. */
  views(): SandboxView[];
}

function findWebDir(): string {
  // tsc does not copy the page: visualizer/inspect.ts (vitest) has it beside it, the built
  // dist/visualizer/inspect.js finds it in the source tree two levels up.
  for (const d of [join(import.meta.dirname, 'web'), join(import.meta.dirname, '..', '..', 'visualizer', 'web')]) {
    if (existsSync(join(d, 'index.html'))) return d;
  }
  throw new Error('visualizer/web/index.html not found next to the vmsandbox sources');
}

const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
};
/** 256 random bits, URL-safe: the secret of one `inspect` run. */
export const TOKEN_BYTES = 32;

/** Constant-time: compares digests of equal length, so neither the length nor a prefix leaks. */
function tokenMatches(given: string | null, token: string): boolean {
  if (given === null) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

const FORBIDDEN_NO_TOKEN =
  'vmsandbox inspect: this server needs its token. Open the URL with ?token=… that `vmsandbox inspect` printed ' +
  'in its first log line (on its standard output) when it started.\n';

const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || port > 65535) throw new Error(`--listen: expected HOST:PORT (e.g. 127.0.0.1:7390 or [::1]:7390), got "${s}"`);
  return { host, port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

function noteForEvent(m: Extract<StatusMessage, { type: 'event' }>, after: number): Note {
  const e = m.event;
  // Readiness reads as the manager's log says it (and a replay of that log shows it).
  if (e.type === READY_EVENT) return { at: m.at, after, kind: 'ready', text: readyText(e.condition, e.ms) };
  const detail = Object.entries(e)
    .filter(([k]) => k !== 'type')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return { at: m.at, after, kind: 'event', text: `${e.type}${detail ? ' ' + detail : ''}` };
}

export async function startInspector(opts: InspectorOptions = {}): Promise<Inspector> {
  // A person runs inspect at a terminal: text (pino-pretty), not JSON.
  const log = opts.log ?? createTextLogger({ cmd: 'inspect' });
  const { host, port } = parseListen(opts.listen ?? DEFAULT_LISTEN);
  if (!isLoopback(host)) {
    if (!opts.explicitListen) throw new Error(`refusing to listen on ${host}: not a loopback address (give --listen explicitly to expose every sandbox's status)`);
    log.warn({ listen: opts.listen }, `listening on non-loopback address ${host}: anyone who can reach it can read every sandbox's status`);
  }
  const webDir = findWebDir();
  const token = randomBytes(TOKEN_BYTES).toString('base64url');
  const tokenQuery = `?token=${token}`;
  // The page's own references carry the token, so the browser sends it with every request without a
  // cookie (cookies are shared by every port of a host: another local user's server on 127.0.0.1
  // would receive it). app.js takes it from its own URL (import.meta.url) for the API calls.
  const indexHtml = readFileSync(join(webDir, 'index.html'), 'utf8');
  for (const ref of ['href="/style.css"', 'src="/app.js"']) {
    if (!indexHtml.includes(ref)) throw new Error(`visualizer/web/index.html: ${ref} not found, cannot add the token to it`);
  }
  const roots = opts.roots?.length ? opts.roots : DEFAULT_RUNTIME_ROOTS;

  const svgs = new Map<string, string>();
  const graphKey = async (g: MachineGraph): Promise<string> => {
    const key = createHash('sha256').update(JSON.stringify(g)).digest('hex').slice(0, 16);
    if (!svgs.has(key)) {
      svgs.set(key, await toSvg(g));
      push('svg', { key, svg: svgs.get(key) });
    }
    return key;
  };

  const views = new Map<string, SandboxView>();
  const streams = new Set<ServerResponse>();
  function push(event: string, data: unknown): void {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const s of streams) s.write(frame);
  }
  // A view without its output: that goes line by line as `output` events (a `sandbox` event per
  // line would resend the whole view); a page that (re)connects gets the whole view first.
  const changed = (v: SandboxView) => push('sandbox', { ...v, output: undefined });

  let mode: 'live' | 'replay' = 'live';
  const followers = new Map<string, { client: StatusClient; ino: number }>();
  const dead = new Map<string, number>(); // socket path → inode that refused us (a stale socket)
  let scanTimer: NodeJS.Timeout | null = null;
  let stopped = false;

  if (opts.replay) {
    mode = 'replay';
    const text = await readFile(opts.replay, 'utf8');
    const recs = parseRecording(text);
    const key = await graphKey(machineGraph(sandboxMachine));
    recs.forEach((r, i) => {
      const last = r.records[r.records.length - 1];
      views.set(`replay-${i}`, {
        id: `replay-${i}`,
        vm: r.vm,
        source: r.format,
        socket: null,
        connected: false,
        pid: null,
        // A sim trace's times are virtual (from 0), a log line without a time has none: no start time to show.
        startedAt: r.format === 'sim' || !r.records[0] || Date.parse(r.records[0].time) === 0 ? null : r.records[0].time,
        config: null,
        plan: r.plan,
        graphKey: key,
        history: r.records,
        notes: r.notes,
        services: last?.services ?? [],
        output: {},
        end: r.end,
      });
    });
  } else {
    const follow = (path: string, ino: number) => {
      let view: SandboxView | null = null;
      const client = followStatus(
        path,
        (m) => {
          if (m.type === 'hello') {
            void graphKey(m.graph).then((key) => {
              if (stopped) return;
              const notes: Note[] = [];
              for (const e of m.events) notes.push(noteForEvent(e, m.history.filter((r) => r.at <= e.at).length - 1));
              view = {
                id: `${path}#${m.pid}@${m.startedAt}`,
                vm: m.vm,
                source: 'live',
                socket: path,
                connected: true,
                pid: m.pid,
                startedAt: m.startedAt,
                config: m.config,
                plan: null,
                graphKey: key,
                history: [...m.history],
                notes,
                services: m.history[m.history.length - 1]?.services ?? [],
                // A manager older than the output entries sends none.
                output: m.output ?? {},
                end: null,
              };
              views.set(view.id, view);
              for (const q of queued.splice(0)) apply(q);
              changed(view);
            });
            return;
          }
          if (!view) queued.push(m);
          else apply(m);
        },
        (e) => {
          if ((e as NodeJS.ErrnoException).code === 'ECONNREFUSED') dead.set(path, ino);
          else log.warn({ socket: path, reason: e.message }, `status socket ${path}: ${e.message}`);
        },
      );
      const queued: StatusMessage[] = [];
      const apply = (m: StatusMessage) => {
        const v = view!;
        if (m.type === 'record') {
          const { type: _t, ...rec } = m;
          v.history.push(rec);
          v.services = rec.services;
        } else if (m.type === 'event') {
          v.notes.push(noteForEvent(m, v.history.length - 1));
        } else if (m.type === 'services') {
          v.services = m.services;
        } else if (m.type === 'output') {
          const { type: _t, service, ...entry } = m;
          // Own properties only: a service may be called "constructor".
          const list = Object.hasOwn(v.output, service) ? v.output[service]! : (v.output[service] = []);
          keepOutput(list, entry as OutputEntry);
          push('output', { id: v.id, service, entry });
          return;
        } else if (m.type === 'bye') {
          v.notes.push({ at: v.history[v.history.length - 1]?.at ?? 0, after: v.history.length - 1, kind: 'log', text: 'the manager closed its status socket' });
        }
        changed(v);
      };
      followers.set(path, { client, ino });
      void client.closed.then(() => {
        followers.delete(path);
        if (view) {
          view.connected = false;
          changed(view);
        }
      });
    };
    const scan = async () => {
      for (const path of await findStatusSockets(roots)) {
        if (followers.has(path)) continue;
        let ino: number;
        try {
          ino = statSync(path).ino;
        } catch {
          continue;
        }
        if (dead.get(path) === ino) continue;
        follow(path, ino);
      }
    };
    const loop = async () => {
      if (stopped) return;
      try {
        await scan();
      } catch (e) {
        log.warn({ reason: (e as Error).message }, 'scan failed');
      }
      if (!stopped) scanTimer = setTimeout(loop, opts.scanMs ?? 500);
    };
    await loop();
  }

  const hostAllowed = (req: IncomingMessage, actualPort: number) => {
    if (!isLoopback(host)) return true;
    const h = (req.headers.host ?? '').toLowerCase();
    // DNS rebinding: a page from elsewhere must not be able to read this one through a name of its own.
    return [`127.0.0.1:${actualPort}`, `localhost:${actualPort}`, `[::1]:${actualPort}`, `${host}:${actualPort}`].includes(h);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (!hostAllowed(req, actualPort)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden host\n');
      return;
    }
    if (!tokenMatches(url.searchParams.get('token'), token)) {
      res.writeHead(403, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8' }).end(FORBIDDEN_NO_TOKEN);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('read-only\n');
      return;
    }
    if (url.pathname === '/api/state') {
      const body = JSON.stringify({
        mode,
        file: opts.replay ? basename(opts.replay) : null,
        roots: mode === 'live' ? roots : [],
        svgs: Object.fromEntries(svgs),
        sandboxes: [...views.values()],
      });
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'application/json' }).end(body);
      return;
    }
    if (url.pathname === '/api/events') {
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream', connection: 'keep-alive' });
      res.write(': vmsandbox inspect\n\n');
      // Everything known so far, so a page that (re)connects misses nothing since its snapshot.
      for (const [key, svg] of svgs) res.write(`event: svg\ndata: ${JSON.stringify({ key, svg })}\n\n`);
      for (const v of views.values()) res.write(`event: sandbox\ndata: ${JSON.stringify(v)}\n\n`);
      streams.add(res);
      const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
      req.on('close', () => {
        clearInterval(ping);
        streams.delete(res);
      });
      return;
    }
    const file = STATIC[url.pathname];
    if (!file) {
      res.writeHead(404, { ...SECURITY_HEADERS, 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const body =
      file === 'index.html'
        ? indexHtml.replace('href="/style.css"', `href="/style.css${tokenQuery}"`).replace('src="/app.js"', `src="/app.js${tokenQuery}"`)
        : readFileSync(join(webDir, file));
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': TYPES[file.split('.').pop()!]! }).end(req.method === 'HEAD' ? undefined : body);
  });
  const stopFollowing = () => {
    stopped = true;
    if (scanTimer) clearTimeout(scanTimer);
    for (const f of followers.values()) f.client.close();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (e) {
    // The scan loop and the status sockets it follows would keep the process alive: a command that
    // cannot listen would hang instead of exiting with the reason.
    stopFollowing();
    const err = e as NodeJS.ErrnoException;
    const where = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    if (err.code === 'EADDRINUSE') throw new Error(`cannot listen on ${where}: the address is in use (another vmsandbox inspect?); pick another port with --listen HOST:PORT (port 0 for any free one)`);
    throw new Error(`cannot listen on ${where}: ${err.message}`);
  }
  const addr = server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  const base = `http://${isIP(host) === 6 ? `[${host}]` : host}:${actualPort}/`;
  const url = `${base}${tokenQuery}`;
  log.info({ url, mode, roots: mode === 'live' ? roots : undefined, replay: opts.replay }, `vmsandbox inspect: ${url}`);

  return {
    url,
    base,
    token,
    views: () => [...views.values()],
    async close() {
      stopFollowing();
      for (const s of streams) s.end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export async function inspectMain(argv: string[]): Promise<number> {
  if (printHelp(argv, USAGE)) return 0;
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      'runtime-root': { type: 'string', multiple: true },
      replay: { type: 'string' },
    },
  });
  if (values.replay && values['runtime-root']?.length) {
    process.stderr.write(`--replay shows a file, --runtime-root live sandboxes: give one of them\n${USAGE}\n`);
    return 2;
  }
  try {
    if (values.listen) parseListen(values.listen);
    if (values.replay) statSync(values.replay);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  let insp: Inspector;
  try {
    insp = await startInspector({ listen: values.listen, explicitListen: values.listen !== undefined, roots: values['runtime-root'], replay: values.replay });
  } catch (e) {
    process.stderr.write(`vmsandbox inspect: ${(e as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await insp.close();
  return 0;
}
