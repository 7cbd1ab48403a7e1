// `vmsandbox status [NAME...]`: what s6-svstat and systemctl status give, for VMs. Read-only: it
// takes no lock and signals nothing.
//
// Where it looks (all root-only): each VM's lock record (effects/linux/owner.ts) says which manager
// holds the VM and where its runtime dir is; the manager's status socket there
// (visualizer/statusSocket.ts) gives its state, history, readiness and services; the cgroup leaves
// give each service's memory and pids in use; vm.<name>.last says how the last run ended.

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findCgroup2Mount } from '../effects/linux/cgroup.js';
import { LOCK_DIR, readLastRun, readRecord, vmLockPath, type LastRun } from '../effects/linux/owner.js';
import type { OwnerRecord } from '../effects/owner.js';
import { READY_EVENT, STATUS_SOCKET, type HelloMessage, type ServiceStatus } from '../visualizer/protocol.js';
import { followStatus, readCounter } from '../visualizer/statusSocket.js';
import { processIo, type CliIo } from './io.js';

const USAGE =
  'usage: vmsandbox status [NAME...] [--json]\n' +
  '  The state of each VM on this host (root): running or not and since when, ready or not, the\n' +
  '  machine\'s state and its last transition\'s reason, each service\'s pid, uid, cgroup, memory and\n' +
  '  pids in use, and how the last run ended. Without NAME: every VM this host has a record of.\n' +
  '  --json  one JSON object per VM, in an array\n' +
  '  exit: 0 every NAME is running (or no NAME given), 3 a NAME is not running, 2 usage\n';

/** systemctl's "not running" status, so scripts can tell. */
const NOT_RUNNING = 3;
/** How long a manager's status socket may take to say hello. */
const HELLO_MS = 1000;

export interface ServiceState {
  name: string;
  /** The host's pid (what ps and kill take), as the Linux backend reports a launch. */
  pid: number;
  uid: number | null;
  cgroup: string | null;
  memoryBytes: number | null;
  pids: number | null;
}

export interface VmStatus {
  vm: string;
  running: boolean;
  /** The manager holding the VM, when one does. */
  manager: { pid: number; since: string; phase: string } | null;
  state: { name: string; since: string; event: string; reason: string | null } | null;
  ready: { condition: string; ms: number; at: string } | null;
  services: ServiceState[];
  lastRun: LastRun | null;
  /** Why some of it could not be read (e.g. the status socket did not answer). */
  notes: string[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function hello(path: string): Promise<HelloMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.close();
      reject(new Error(`${path} did not answer within ${HELLO_MS} ms`));
    }, HELLO_MS);
    const client = followStatus(
      path,
      (m) => {
        if (m.type !== 'hello') return;
        clearTimeout(timer);
        client.close();
        resolve(m);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

function counter(root: string | null, cgroup: string | null, file: string): number | null {
  return root && cgroup ? (readCounter(join(root, cgroup, file)) ?? null) : null;
}

function cgroupRoot(): string | null {
  try {
    return findCgroup2Mount();
  } catch {
    return null;
  }
}

/** The VM names this host has a record of: a lock record or a last run. */
export function knownVms(dir = LOCK_DIR): string[] {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const names = entries.map((e) => /^vm\.(.+)\.(lock|last)$/.exec(e)?.[1]).filter((n): n is string => n !== undefined);
  return [...new Set(names)].sort();
}

export async function vmStatus(name: string, dir = LOCK_DIR): Promise<VmStatus> {
  const out: VmStatus = { vm: name, running: false, manager: null, state: null, ready: null, services: [], lastRun: readLastRun(name, dir), notes: [] };
  const rec: OwnerRecord | null = readRecord(vmLockPath(name, dir));
  if (!rec || rec.phase === 'ended' || rec.phase === 'finish' || !alive(rec.pid)) {
    if (rec && rec.phase !== 'ended' && rec.phase !== 'finish' && !alive(rec.pid)) {
      out.notes.push(`its manager (pid ${rec.pid}) died without tearing down (${rec.phase}); \`vmsandbox finish CONFIG\` removes what it left`);
    }
    return out;
  }
  out.running = true;
  out.manager = { pid: rec.pid, since: new Date(rec.since).toISOString(), phase: rec.phase };
  if (!rec.journal.runtimeDir) {
    out.notes.push('its runtime dir is not made yet');
    return out;
  }
  let h: HelloMessage;
  try {
    h = await hello(join(rec.journal.runtimeDir, STATUS_SOCKET));
  } catch (e) {
    // run opens its status socket once setup is over (its services launched, or setup failed).
    const opening = rec.phase === 'starting' && (e as NodeJS.ErrnoException).code === 'ENOENT';
    out.notes.push(opening ? 'its manager is setting up the sandbox (the status socket opens once its services are launched)' : `no status from its manager: ${(e as Error).message}`);
    return out;
  }
  const last = h.history[h.history.length - 1];
  if (last) out.state = { name: last.state, since: last.time, event: last.label, reason: last.reason };
  const ready = h.events.find((e) => e.event.type === READY_EVENT);
  if (ready) out.ready = { condition: String(ready.event.condition), ms: Number(ready.event.ms), at: ready.time };
  const root = cgroupRoot();
  out.services = (last?.services ?? []).map((s: ServiceStatus) => ({
    name: s.name,
    pid: s.pid,
    uid: s.uid,
    cgroup: s.cgroup,
    memoryBytes: counter(root, s.cgroup, 'memory.current'),
    pids: counter(root, s.cgroup, 'pids.current'),
  }));
  return out;
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function when(iso: string, now: number): string {
  return `${iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} (${duration(now - Date.parse(iso))} ago)`;
}

function mib(bytes: number | null): string {
  return bytes === null ? '-' : `${(bytes / 1048576).toFixed(1)} MiB`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
}

/** The text a person reads. */
export function renderStatus(s: VmStatus, now = Date.now()): string {
  const lines: string[] = [];
  if (s.running && s.manager) {
    lines.push(`${s.vm}: running${s.ready ? ', ready' : ', not ready'}, since ${when(s.manager.since, now)}; manager pid ${s.manager.pid}`);
    if (s.state) lines.push(`  state     ${s.state.name} since ${when(s.state.since, now)}, after ${s.state.event}${s.state.reason ? `: ${s.state.reason}` : ''}`);
    if (s.ready) lines.push(`  ready     ${s.ready.condition}, ${s.ready.ms} ms after the manager started`);
    if (s.services.length) {
      const rows = [['name', 'pid', 'uid', 'memory', 'pids', 'cgroup'], ...s.services.map((v) => [v.name, String(v.pid), String(v.uid ?? '-'), mib(v.memoryBytes), v.pids === null ? '-' : String(v.pids), v.cgroup ?? '-'])];
      table(rows).forEach((r, i) => lines.push(`  ${i === 0 ? 'services' : '        '}  ${r}`));
    }
  } else {
    lines.push(`${s.vm}: not running${s.lastRun ? '' : ' (no run recorded on this host)'}`);
  }
  if (s.lastRun) {
    const r = s.lastRun;
    lines.push(`  last run  exit ${r.exitCode} (${r.outcome}), ended ${when(r.endedAt, now)}, after ${duration(Date.parse(r.endedAt) - Date.parse(r.startedAt))}${r.reason ? `: ${r.reason}` : ''}`);
  }
  for (const n of s.notes) lines.push(`  note      ${n}`);
  return `${lines.join('\n')}\n`;
}

export async function statusMain(argv: string[], io: CliIo = processIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const names = positionals.length ? positionals : knownVms();
  const all = await Promise.all(names.map((n) => vmStatus(n)));
  if (values.json) io.out(`${JSON.stringify(all, null, 2)}\n`);
  else if (!all.length) io.out('no VM has run on this host (no record under /run/vmsandbox-locks)\n');
  else io.out(all.map((s) => renderStatus(s)).join('\n'));
  return positionals.length && all.some((s) => !s.running) ? NOT_RUNNING : 0;
}
