// The manager's status socket: <runtimeDir>/status.sock, mode 0600, owned by the manager (root).
// Services run under their own non-root uids without CAP_DAC_OVERRIDE, so they cannot connect
// (connect(2) on a unix socket needs write permission on it), though Landlock lets them read the
// runtime dir. Protocol: protocol.ts. Also the reading side: finding every sandbox's socket
// under the runtime roots and following it (vmsandbox inspect).

import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { VmConfig } from '../config/types.js';
import type { KernelEvent } from '../effects/port.js';
import type { ServiceOutput } from '../effects/linux/output.js';
import { findCgroup2Mount } from '../effects/linux/cgroup.js';
import { machineGraph, type MachineGraph } from './graph.js';
import type { TransitionRecord } from '../machines/observe.js';
import { sandboxMachine } from '../machines/sandbox.js';
import {
  configSummary,
  encodeMessage,
  keepOutput,
  lineDecoder,
  OUTPUT_TEXT_MAX,
  serviceStatuses,
  STATUS_PROTOCOL,
  STATUS_SOCKET,
  statusRecord,
  READY_EVENT,
  type EventMessage,
  type HelloMessage,
  type OutputEntry,
  type ServiceStatus,
  type StatusMessage,
  type StatusRecord,
} from './protocol.js';

/** Where production runtime dirs live (the examples' and demo's); tests' VMs are elsewhere, shown with --runtime-root. */
export const DEFAULT_RUNTIME_ROOTS = ['/run/vmsandbox'];

export interface PublishOptions {
  config: VmConfig;
  /** Default: <config.runtimeDir>/status.sock. */
  path?: string;
  graph?: MachineGraph;
  /** The cgroup2 mount to read counters under; default: found in /proc/self/mountinfo; null: none. */
  cgroupRoot?: string | null;
  /** How often connected clients get fresh cgroup counters (ms); 0 turns sampling off. */
  sampleMs?: number;
  /** Where problems go (the socket is a convenience: a failure never stops the manager). */
  log?: (msg: string) => void;
  now?: () => Date;
}

export interface StatusPublisher {
  /** The socket's path, or null while it is not listening (not yet, or it could not be created). */
  readonly path: string | null;
  /** Publish one transition; `at` is ms since the start (default: wall time since publishStatus). */
  record(r: TransitionRecord, at?: number): void;
  /** Publish a kernel event the manager received. */
  event(ev: KernelEvent, at?: number): void;
  /** Publish a line a service wrote (or a count of dropped ones): kept, the last OUTPUT_KEPT per service, for hello. */
  output(o: ServiceOutput, at?: number): void;
  /** Publish that the VM is ready (the vmm's ready condition held; s6 was told): an event READY. */
  ready(condition: string, ms: number, at?: number): void;
  /** Say bye, disconnect every client, remove the socket. */
  close(): Promise<void>;
  readonly clients: number;
}

/** Bound on what one slow client may have queued before it is dropped. */
const MAX_QUEUED = 4 << 20;
const MAX_HISTORY = 10_000;
/** Services whose output is kept (the init runs at most 64). */
const MAX_OUTPUT_SERVICES = 256;

/** A cgroup counter file (memory.current, pids.current), or undefined where the kernel has none. */
export function readCounter(path: string): number | undefined {
  try {
    const v = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function detectCgroupRoot(): string | null {
  try {
    return findCgroup2Mount();
  } catch {
    return null;
  }
}

/** Publish, and resolve once the socket listens (or could not be created: path null). */
export async function publishStatus(opts: PublishOptions): Promise<StatusPublisher> {
  const status = startStatus(opts);
  await status.listen();
  return status;
}

/**
 * The publisher, keeping what it is given, with no socket until listen(): `vmsandbox run` listens
 * once its services are launched, so that the socket (2–3 ms: `net` loads `cluster` for a server)
 * is off its way to ready. Everything published before a client connects is in that client's hello.
 */
export function startStatus(opts: PublishOptions): StatusPublisher & { listen(): Promise<void> } {
  const { config } = opts;
  const log = opts.log ?? (() => undefined);
  const now = opts.now ?? (() => new Date());
  // Drawn for the first client, not at every manager's start.
  let graph = opts.graph;
  const cgroupRoot = opts.cgroupRoot === undefined ? detectCgroupRoot() : opts.cgroupRoot;
  const started = now();
  const history: StatusRecord[] = [];
  const events: EventMessage[] = [];
  const output = new Map<string, OutputEntry[]>();
  const clients = new Set<Socket>();
  let pids: Record<string, number> = {};
  let lastSample = '';
  let closed = false;

  const services = (): ServiceStatus[] =>
    serviceStatuses(config, pids).map((s) => {
      if (!cgroupRoot || !s.cgroup) return s;
      const leaf = join(cgroupRoot, s.cgroup);
      const memoryCurrent = readCounter(join(leaf, 'memory.current'));
      const pidsCurrent = readCounter(join(leaf, 'pids.current'));
      return { ...s, ...(memoryCurrent !== undefined && { memoryCurrent }), ...(pidsCurrent !== undefined && { pidsCurrent }) };
    });
  const send = (sock: Socket, m: StatusMessage) => {
    if (sock.destroyed) return;
    if (sock.writableLength > MAX_QUEUED) {
      log(`status: dropping a client that does not read (${sock.writableLength} bytes queued)`);
      sock.destroy();
      return;
    }
    sock.write(encodeMessage(m));
  };
  const broadcast = (m: StatusMessage) => {
    for (const c of clients) send(c, m);
  };
  const since = () => now().getTime() - started.getTime();
  /** Keep an event for hello (the last MAX_HISTORY) and send it to every client. */
  const pushEvent = (event: EventMessage['event'], at?: number) => {
    if (closed) return;
    const m: EventMessage = { type: 'event', time: now().toISOString(), at: at ?? since(), event };
    if (events.length >= MAX_HISTORY) events.shift();
    events.push(m);
    broadcast(m);
  };

  const server: Server = createServer((sock) => {
    if (closed) {
      sock.destroy();
      return;
    }
    clients.add(sock);
    sock.on('error', () => undefined);
    sock.on('close', () => clients.delete(sock));
    sock.resume(); // read-only: whatever a client sends is discarded
    const hello: HelloMessage = {
      type: 'hello',
      protocol: STATUS_PROTOCOL,
      vm: config.name,
      pid: process.pid,
      startedAt: started.toISOString(),
      config: configSummary(config),
      graph: (graph ??= machineGraph(sandboxMachine)),
      history,
      events,
      output: Object.fromEntries(output),
    };
    send(sock, hello);
  });
  server.on('error', (e) => log(`status: ${e.message}`));

  const path = opts.path ?? join(config.runtimeDir, STATUS_SOCKET);
  let ino: number | null = null;
  let timer: NodeJS.Timeout | null = null;
  // The directory's few calls are synchronous (local, microseconds): each async one would cost a
  // thread-pool round trip.
  let listening: Promise<void> | null = null;
  const listen = async () => {
    if (closed) return;
    try {
      mkdirSync(join(path, '..'), { recursive: true, mode: 0o755 });
      // Bind in a private (0700) directory, make the socket 0600, then move it into place: there
      // is no moment at which the socket exists at its public path with a wider mode.
      const tmp = mkdtempSync(join(path, '..', '.status-'));
      const tmpPath = join(tmp, 's');
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(tmpPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      chmodSync(tmpPath, 0o600);
      renameSync(tmpPath, path); // replaces a stale socket of a manager that was SIGKILLed
      rmdirSync(tmp);
      ino = statSync(path).ino;
    } catch (e) {
      log(`status: cannot publish on ${path}: ${(e as Error).message}`);
      server.close();
      return;
    }
    if (closed || (opts.sampleMs ?? 2000) <= 0 || !cgroupRoot) return;
    timer = setInterval(() => {
      if (!clients.size || !Object.keys(pids).length) return;
      const s = services();
      const key = JSON.stringify(s);
      if (key === lastSample) return;
      lastSample = key;
      broadcast({ type: 'services', time: now().toISOString(), services: s });
    }, opts.sampleMs ?? 2000);
    timer.unref();
  };

  return {
    listen: () => (listening ??= listen()),
    get path() {
      return ino === null ? null : path;
    },
    get clients() {
      return clients.size;
    },
    record(r, at) {
      if (closed) return;
      pids = r.services;
      const prev = history[history.length - 1];
      const s = services();
      lastSample = JSON.stringify(s);
      const rec = statusRecord(r, { seq: history.length, time: now(), at: at ?? since(), prevErrors: prev?.errors ?? 0, services: s });
      if (history.length >= MAX_HISTORY) history.splice(1, 1); // keep the first (start) record
      history.push(rec);
      broadcast({ type: 'record', ...rec });
    },
    event(ev, at) {
      pushEvent({ ...ev }, at);
    },
    ready(condition, ms, at) {
      pushEvent({ type: READY_EVENT, condition, ms }, at);
    },
    output(o, at) {
      if (closed) return;
      let list = output.get(o.service);
      if (!list) {
        if (output.size >= MAX_OUTPUT_SERVICES) return;
        output.set(o.service, (list = []));
      }
      const base = { time: now().toISOString(), at: at ?? since() };
      const entry: OutputEntry =
        o.type === 'line'
          ? { ...base, stream: o.stream, line: o.line.length > OUTPUT_TEXT_MAX ? o.line.slice(0, OUTPUT_TEXT_MAX) : o.line, ...(o.cut ? { cut: true as const } : {}) }
          : { ...base, ...(o.stream ? { stream: o.stream } : {}), dropped: o.count, reason: o.reason };
      keepOutput(list, entry);
      if (clients.size) broadcast({ type: 'output', service: o.service, ...entry });
    },
    async close() {
      if (closed) return;
      closed = true;
      await listening;
      if (timer) clearInterval(timer);
      broadcast({ type: 'bye', time: now().toISOString() });
      const ended = [...clients].map((c) => new Promise<void>((resolve) => {
        c.once('close', () => resolve());
        c.end();
        setTimeout(() => c.destroy(), 500).unref();
      }));
      await Promise.all(ended);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (ino !== null) {
        // Only our own socket: a newer manager may have replaced it.
        try {
          if (statSync(path).ino === ino) unlinkSync(path);
        } catch {
          /* already gone (cleanup removes the runtime dir) */
        }
      }
    },
  };
}

// ---- the reading side ----

/** Every <root>/<vm>/status.sock that exists and is a socket. */
export async function findStatusSockets(roots: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const root of roots) {
    let entries: string[];
    try {
      entries = readdirSync(root);
    } catch {
      continue;
    }
    for (const e of entries.sort()) {
      const p = join(root, e, STATUS_SOCKET);
      try {
        if (statSync(p).isSocket()) found.push(p);
      } catch {
        /* not a sandbox's runtime dir */
      }
    }
  }
  return found;
}

export interface StatusClient {
  close(): void;
  readonly closed: Promise<void>;
}

/** Follow one status socket: every message to onMessage; closed resolves when the connection ends. */
export function followStatus(path: string, onMessage: (m: StatusMessage) => void, onError: (e: Error) => void = () => undefined): StatusClient {
  const sock = connect(path);
  const decode = lineDecoder(onMessage, (line, e) => onError(new Error(`${path}: bad line (${e.message}): ${line.slice(0, 80)}`)));
  sock.on('data', decode);
  sock.on('error', onError);
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  return { close: () => sock.destroy(), closed };
}
