// Why Landlock said no: a service that fails early usually prints only its own "Permission denied"
// (QEMU: "could not open kernel file …"). On Landlock ABI 7 the plan asks the kernel to audit the
// service's denials (LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON, plan/landlock.ts); with the kernel's
// audit enabled each denial is a record naming the access and the path:
//   type=1423 (LANDLOCK_ACCESS) … domain=<id> blockers=fs.read_file path="/var/tmp/x" dev=… ino=…
//   type=1424 (LANDLOCK_DOMAIN) … domain=<id> status=allocated mode=enforcing pid=… uid=62001 exe=…
// They reach the kernel log (/dev/kmsg) when no audit daemon runs, auditd's log when one does.
// This module reads them back, after the fact (nothing is paid at start), and names the rule to add.

import { closeSync, constants, openSync, readSync, statSync } from 'node:fs';
import type { ServiceConfig, VmConfig } from '../../config/types.js';

export interface LandlockDenial {
  /** Wall time of the record (ms since the epoch). */
  time: number;
  uid: number;
  /** What Landlock blocked, as the kernel names it: fs.read_file, fs.make_reg, net.connect_tcp, scope.signal, … */
  blockers: string[];
  path: string | null;
  /** The whole record, for whoever debugs it. */
  record: string;
}

/** Where audit records land: auditd's log if it runs, else the kernel log. */
export const AUDIT_LOG = '/var/log/audit/audit.log';
const KMSG = '/dev/kmsg';
/** The most of auditd's log read back (its end). */
const AUDIT_LOG_TAIL = 1 << 20;

const ACCESS = /type=(?:1423|LANDLOCK_ACCESS) (?:msg=)?audit\((\d+)\.(\d+):\d+\): domain=([0-9a-f]+) blockers=(\S+)(?: path=("(?:[^"\\]|\\.)*"|[0-9A-F]+))?/;
const DOMAIN = /type=(?:1424|LANDLOCK_DOMAIN) (?:msg=)?audit\(\d+\.\d+:\d+\): domain=([0-9a-f]+) status=allocated\b.* uid=(\d+)/;

/** An audit path field: "quoted", or hex when it holds unusual bytes. */
function auditPath(v: string | undefined): string | null {
  if (v === undefined) return null;
  if (v.startsWith('"')) return v.slice(1, -1);
  return Buffer.from(v, 'hex').toString();
}

/** The Landlock denials in `lines` (kernel log or auditd log lines), with the uid of their domain. */
export function parseDenials(lines: string[]): LandlockDenial[] {
  const uidOf = new Map<string, number>();
  for (const l of lines) {
    const m = DOMAIN.exec(l);
    if (m) uidOf.set(m[1]!, Number(m[2]));
  }
  const out: LandlockDenial[] = [];
  for (const l of lines) {
    const m = ACCESS.exec(l);
    if (!m) continue;
    const uid = uidOf.get(m[3]!);
    if (uid === undefined) continue;
    out.push({ time: Number(m[1]) * 1000 + Number(m[2]), uid, blockers: m[4]!.split(','), path: auditPath(m[5]), record: l.slice(l.indexOf('type=')) });
  }
  return out;
}

/** The kernel log's records (root; non-blocking: stops at the newest). */
function kmsgLines(): string[] {
  let fd: number;
  try {
    fd = openSync(KMSG, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return [];
  }
  const lines: string[] = [];
  const buf = Buffer.alloc(8192);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        // EPIPE: records were overwritten while reading (go on); EAGAIN: the end.
        if ((e as NodeJS.ErrnoException).code === 'EPIPE') continue;
        break;
      }
      if (n <= 0) break;
      const rec = buf.toString('utf8', 0, n);
      lines.push(rec.slice(rec.indexOf(';') + 1).split('\n')[0]!);
    }
  } finally {
    closeSync(fd);
  }
  return lines;
}

function auditLogLines(path = AUDIT_LOG): string[] {
  try {
    const size = statSync(path).size;
    const fd = openSync(path, 'r');
    try {
      const len = Math.min(size, AUDIT_LOG_TAIL);
      const buf = Buffer.alloc(len);
      const n = readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8', 0, n).split('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

/**
 * Landlock denials of `uid` since `sinceMs` (wall time), from wherever the audit records are. A
 * record names the uid, not the VM: give each VM's services their own uids (as docs/config.md
 * recommends) and a denial is never another VM's.
 */
export function recentDenials(uid: number, sinceMs: number): LandlockDenial[] {
  const all = [...parseDenials(kmsgLines()), ...parseDenials(auditLogLines())];
  const seen = new Set<string>();
  return all.filter((d) => {
    // The same clock (CLOCK_REALTIME, ms): nothing of this uid before the manager started is its.
    if (d.uid !== uid || d.time < sinceMs) return false;
    const key = `${d.blockers.join(',')} ${d.path}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

const WRITE_BLOCKERS = /^fs\.(write_file|remove_dir|remove_file|make_|truncate|refer|ioctl_dev)/;

/** The fix for one denial: the rule to add, by field path; or why there is none. */
export function denialFix(config: VmConfig, service: ServiceConfig, d: LandlockDenial): string {
  const i = config.services.indexOf(service);
  const at = `services[${i}].landlock`;
  if (d.blockers.some((b) => b.startsWith('scope.'))) return `${d.blockers.join(', ')}: Landlock's scoping keeps services apart by design; no rule grants it`;
  if (d.blockers.some((b) => b.startsWith('net.'))) return `add the port to ${at}.${d.blockers.includes('net.bind_tcp') ? 'bindTcp' : 'connectTcp'} (network "host" only)`;
  if (!d.path) return `a path outside ${at}'s rules (the record does not say which)`;
  const kind = d.blockers.some((b) => WRITE_BLOCKERS.test(b)) ? 'write' : 'read';
  return `add ${JSON.stringify(d.path)} (or a directory above it) to ${at}.${kind}`;
}

/** What an operator needs to hear when no denial was found: audit may be off. */
export const AUDIT_HINT =
  'no Landlock denial was recorded for it; if the kernel\'s audit is off, denials are not recorded: ' +
  'enable it (auditctl -e 1, or audit=1 on the kernel command line) to have them named here';

/** A service exit explained in Landlock's terms, for the log; null when there is nothing to say. */
export interface LandlockExplanation {
  fields: { service: string; event: 'landlock-denied' | 'landlock-unexplained'; denials?: Array<{ blockers: string[]; path: string | null; fix: string }> };
  msg: string;
}

/**
 * After `service` exited with a failure: the Landlock denials of its uid since `sinceMs`, each with
 * the rule to add; when none was recorded and the exit was early (the usual missing rule), how to
 * have them recorded. `abi`: the kernel's Landlock ABI (below 7 there are no such records).
 */
export function explainFailedExit(config: VmConfig, service: ServiceConfig, sinceMs: number, early: boolean, abi: number, denials = recentDenials): LandlockExplanation | null {
  if (abi < 7) return null;
  const found = denials(service.uid, sinceMs).map((d) => ({ blockers: d.blockers, path: d.path, fix: denialFix(config, service, d) }));
  if (found.length) {
    const first = found[0]!;
    return {
      fields: { service: service.name, event: 'landlock-denied', denials: found },
      msg: `${service.name}: Landlock denied ${first.blockers.join(', ')}${first.path ? ` on ${first.path}` : ''}: ${first.fix}${found.length > 1 ? ` (and ${found.length - 1} more, see denials)` : ''}`,
    };
  }
  return early ? { fields: { service: service.name, event: 'landlock-unexplained' }, msg: `${service.name} failed early: ${AUDIT_HINT}` } : null;
}
