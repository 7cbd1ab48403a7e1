// The status protocol: what a manager publishes on <runtimeDir>/status.sock and what
// `vmsandbox inspect` reads. Pure data and (de)serialisation; the socket server and the discovery
// are in statusSocket.ts.
//
// Newline-delimited JSON, one message per line, server to client only:
//   {"type":"hello", protocol, vm, pid, startedAt, config, graph, history: StatusRecord[]}
//   {"type":"record", ...StatusRecord}        one per state change (TransitionRecord + time)
//   {"type":"event", time, event}             a kernel event the manager received (STOP_REQUESTED…)
//   {"type":"services", time, services}       a fresh sample of the services' cgroup counters
//   {"type":"output", service, ...OutputEntry} a line a service wrote, or a count of dropped ones
//   {"type":"bye", time}                      the manager is closing the socket

import { serviceCgroupPath } from '../plan/cgroup.js';
import type { VmConfig } from '../config/types.js';
import type { MachineGraph } from './graph.js';
import { eventLabel } from './graph.js';
import type { TransitionRecord } from '../machines/observe.js';

export const STATUS_PROTOCOL = 1;
/**
 * The event a manager publishes once its VM is ready (s6 told): `{type: "READY", condition, ms}`,
 * ms since the manager started. Not a kernel event, but a moment of the run the same way.
 */
export const READY_EVENT = 'READY';
export const STATUS_SOCKET = 'status.sock';
/** The recent output kept per service (hello's `output`, the page): the last this many entries. */
export const OUTPUT_KEPT = 200;
/** No entry's text is longer (the init already cuts lines at the plan's lineBytes, 4096). */
export const OUTPUT_TEXT_MAX = 16384;

export interface ServiceStatus {
  name: string;
  pid: number;
  uid: number | null;
  gid: number | null;
  vmm: boolean;
  /** The service's cgroup leaf, relative to the cgroup2 mount (e.g. "vmsandbox/demo/svc-vmm"). */
  cgroup: string | null;
  /** Bytes, from the leaf's memory.current, when the kernel has it. */
  memoryCurrent?: number;
  /** From the leaf's pids.current, when the kernel has it. */
  pidsCurrent?: number;
}

export interface StatusRecord {
  /** Position in the history, from 0. */
  seq: number;
  /** Wall time (ISO 8601). */
  time: string;
  /** Milliseconds since the first record (virtual time for simulated runs). */
  at: number;
  state: string;
  event: string;
  /** eventLabel(event): "done: mount", "after: stopDeadline", … */
  label: string;
  reason: string | null;
  outcome: string | null;
  errors: number;
  /** This record is a failure (the error count grew with it). */
  failure: boolean;
  services: ServiceStatus[];
}

export interface ConfigSummary {
  name: string;
  runtimeDir: string;
  storage: string;
  timeouts: { setupMs: number; stopMs: number; killMs: number };
  cgroupParent: string;
  landlock: { minAbi: number; allowDegraded: boolean };
  services: { name: string; uid: number; gid: number; vmm: boolean; onExit: string; limits: Record<string, string | number> }[];
}

/**
 * One entry of a service's output as the status socket carries it (from the backend's output$,
 * effects/linux/output.ts): a line it wrote, or how many lines were dropped.
 */
export type OutputEntry =
  | { time: string; at: number; stream: 'stdout' | 'stderr'; line: string; cut?: true }
  /** rate: over the lines per second; socket: the init's buffer to the manager was full. */
  | { time: string; at: number; stream?: 'stdout' | 'stderr'; dropped: number; reason: 'rate' | 'socket' };

export interface HelloMessage {
  type: 'hello';
  protocol: number;
  vm: string;
  pid: number;
  startedAt: string;
  config: ConfigSummary;
  graph: MachineGraph;
  history: StatusRecord[];
  /** Kernel events received so far, in order. */
  events: EventMessage[];
  /** Each service's recent output, oldest first: at most OUTPUT_KEPT entries per service. */
  output: Record<string, OutputEntry[]>;
}
export interface RecordMessage extends StatusRecord {
  type: 'record';
}
export interface EventMessage {
  type: 'event';
  time: string;
  at: number;
  event: { type: string } & Record<string, unknown>;
}
export interface ServicesMessage {
  type: 'services';
  time: string;
  services: ServiceStatus[];
}
export type OutputMessage = { type: 'output'; service: string } & OutputEntry;
export interface ByeMessage {
  type: 'bye';
  time: string;
}
export type StatusMessage = HelloMessage | RecordMessage | EventMessage | ServicesMessage | OutputMessage | ByeMessage;

/** Keep `entry` as the newest of `list`, dropping the oldest beyond OUTPUT_KEPT (in place). */
export function keepOutput(list: OutputEntry[], entry: OutputEntry): void {
  list.push(entry);
  if (list.length > OUTPUT_KEPT) list.splice(0, list.length - OUTPUT_KEPT);
}

export function configSummary(config: VmConfig): ConfigSummary {
  return {
    name: config.name,
    runtimeDir: config.runtimeDir,
    storage: config.storage,
    timeouts: { ...config.timeouts },
    cgroupParent: config.cgroup.parent,
    landlock: { ...config.landlock },
    services: config.services.map((s) => ({ name: s.name, uid: s.uid, gid: s.gid, vmm: s.vmm, onExit: s.onExit, limits: { ...s.limits } })),
  };
}

/** The cgroup leaf of a service, relative to the cgroup2 mount (config/cgroupLayout.ts). */
export const serviceCgroup = serviceCgroupPath;

/** A TransitionRecord's live services (name → pid), completed from the config. */
export function serviceStatuses(config: VmConfig | null, pids: Record<string, number>): ServiceStatus[] {
  return Object.entries(pids).map(([name, pid]) => {
    const s = config?.services.find((x) => x.name === name);
    return { name, pid, uid: s?.uid ?? null, gid: s?.gid ?? null, vmm: s?.vmm ?? false, cgroup: config ? serviceCgroup(config, name) : null };
  });
}

/** Build the StatusRecord for a TransitionRecord. */
export function statusRecord(
  r: TransitionRecord,
  opts: { seq: number; time: Date; at: number; prevErrors: number; services: ServiceStatus[] },
): StatusRecord {
  return {
    seq: opts.seq,
    time: opts.time.toISOString(),
    at: opts.at,
    state: r.state,
    event: r.event,
    label: eventLabel(r.event),
    reason: r.reason,
    outcome: r.outcome,
    errors: r.errors,
    failure: r.errors > opts.prevErrors,
    services: opts.services,
  };
}

export function encodeMessage(m: StatusMessage): string {
  return JSON.stringify(m) + '\n';
}

/** Split a byte stream into messages; malformed lines are handed to onBad, never thrown. */
export function lineDecoder(onMessage: (m: StatusMessage) => void, onBad: (line: string, err: Error) => void = () => undefined): (chunk: Buffer | string) => void {
  let buf = '';
  return (chunk) => {
    buf += chunk.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      let m: unknown;
      try {
        m = JSON.parse(line);
      } catch (e) {
        onBad(line, e as Error);
        continue;
      }
      if (m && typeof m === 'object' && typeof (m as { type?: unknown }).type === 'string') onMessage(m as StatusMessage);
      else onBad(line, new Error('not a status message'));
    }
  };
}
