// `vmsandbox check`'s host report on Linux: can THIS host enforce a (valid) config? Everything here
// only looks (stat, read, the Landlock ABI probe); nothing is created. Each finding is one item:
// ok, warn (runs, but weaker or worth a look) or fail (`vmsandbox run` would refuse or fail setup).
// See docs/linux-backend.md ("Host check") and docs/config.md ("Validating").

import { vmmFiles } from '../../config/vmmFiles.js';
import { vmCgroupPath } from '../../plan/cgroup.js';
import { existsSync, lstatSync, readFileSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { canonicalCapability, RISKY_CAPABILITIES } from '../../config/rules.js';
import { planSandbox, type Refusal, type SandboxPlan } from '../../plan/index.js';
import { missingFeatures } from '../../plan/landlock.js';
import { landlockRules, serviceRuntimeDir } from '../../plan/service.js';
import { findCgroup2Mount } from './cgroup.js';
import { cgroupControllersFor } from './hostFacts.js';
import { landlockAbi, nativeBuildDir } from './native.js';
import { readRecord, runtimeDirLockPath, vmLockPath } from './owner.js';


/** Below this, a guest asked to power off (qmp, cloudHypervisorApi, command) rarely gets there. */
export const STOP_MS_FOR_A_GUEST = 5000;
export type HostLevel = 'ok' | 'warn' | 'fail';

export interface HostItem {
  level: HostLevel;
  /** A config field path (`services[1].argv[0]`) or a host item (`host.root`, `host.cgroup2`, …). */
  item: string;
  /** What was found and, for warn/fail, the fix. */
  message: string;
}

export interface HostFacts {
  root: boolean;
  /** Landlock ABI the kernel offers (0: unavailable); null if the native helper is missing. */
  landlockAbi: number | null;
  /** Where cgroup2 is mounted (from /proc/self/mountinfo); null if nowhere. */
  cgroup2Mount: string | null;
  /** Controllers the VM's cgroup could use: cgroup.controllers of the deepest existing directory on the way to cgroup.parent. */
  cgroupControllers: string[];
  kvm: boolean;
}

export interface HostReport {
  /** No item failed: `vmsandbox run` can enforce this config here. */
  ok: boolean;
  failures: number;
  warnings: number;
  items: HostItem[];
  facts: HostFacts;
}

/** Where the host check reads; tests point these at fixtures. */
export interface HostCheckOptions {
  mountinfo?: string;
  passwd?: string;
  procCgroups?: string;
  /** Override the probed Landlock ABI (null: the native helper is missing). */
  landlockAbi?: number | null;
  root?: boolean;
  /** Where the VM locks live (default /run/vmsandbox-locks). */
  lockDir?: string;
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/** The permission bits (rwx as 4/2/1) that apply to uid/gid/groups on a file, as the kernel picks them. */
function permsFor(st: Stats, uid: number, gids: number[]): number {
  if (uid === 0) return st.mode & 0o111 ? 7 : 6; // root: rw always, x if anyone has x
  if (st.uid === uid) return (st.mode >> 6) & 7;
  if (gids.includes(st.gid)) return (st.mode >> 3) & 7;
  return st.mode & 7;
}

/** The first directory on the way to `file` that `uid` cannot search, or null. */
function unsearchableDir(file: string, uid: number, gids: number[]): string | null {
  const dirs: string[] = [];
  for (let d = dirname(file); ; d = dirname(d)) {
    dirs.unshift(d);
    if (d === '/') break;
  }
  for (const d of dirs) {
    const st = statOrNull(d);
    if (st && !(permsFor(st, uid, gids) & 1)) return d;
  }
  return null;
}

function realOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function isUnder(path: string, dir: string): boolean {
  return dir === '/' || path === dir || path.startsWith(`${dir}/`);
}

/** `path` with its longest existing prefix resolved (symlinks followed), the rest appended. */
function resolveExisting(path: string): string {
  let head = path;
  const rest: string[] = [];
  while (head !== '/' && !existsSync(head)) {
    rest.unshift(head.slice(head.lastIndexOf('/') + 1));
    head = dirname(head);
  }
  return join(realOr(head), ...rest);
}

/** A directory another user than root could change (owner, group or world write). */
function writableByOthers(st: Stats): string | null {
  if (st.uid !== 0) return `its owner (uid ${st.uid})`;
  if (st.mode & 0o020 && st.gid !== 0) return `group ${st.gid}`;
  if (st.mode & 0o002) return 'every user';
  return null;
}

/**
 * The first directory on the way to `path` whose next entry a non-root user could replace (with a
 * symlink the root manager would follow), or null. A sticky directory (/tmp) protects an existing
 * entry owned by root: only its owner may rename or remove it.
 */
function replaceableBy(path: string): { dir: string; entry: string; who: string } | null {
  const parts = path.split('/').filter(Boolean);
  let dir = '/';
  for (const part of parts) {
    const entry = join(dir, part);
    const st = statOrNull(dir);
    const who = st && writableByOthers(st);
    if (who) {
      let kept = false;
      try {
        const e = lstatSync(entry);
        kept = (st.mode & 0o1000) !== 0 && e.uid === 0 && !e.isSymbolicLink();
      } catch {
        kept = false;
      }
      if (!kept) return { dir, entry, who };
    }
    dir = entry;
  }
  return null;
}

/** The mount (from mountinfo) that holds `path`, with its per-mount options. */
function mountOf(path: string, mountinfo: string): { point: string; options: string[] } | null {
  let best: { point: string; options: string[] } | null = null;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    const point = f[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (!point || !isUnder(path, point)) continue;
    if (!best || point.length >= best.point.length) best = { point, options: (f[5] ?? '').split(',') };
  }
  return best;
}

interface PasswdEntry {
  name: string;
  uid: number;
  shell: string;
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#')) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), shell: f[6]! });
  }
  return out;
}

const NO_LOGIN = /(^|\/)(nologin|false|sync|shutdown|halt)$/;

/** Controllers bound to a cgroup v1 hierarchy (hierarchy id ≠ 0 in /proc/cgroups). */
function v1Controllers(procCgroups: string): Set<string> {
  const out = new Set<string>();
  for (const line of procCgroups.split('\n')) {
    if (line.startsWith('#')) continue;
    const [name, hier] = line.split(/\s+/);
    if (name && hier && hier !== '0') out.add(name);
  }
  return out;
}

/** Check `config` (already valid) against this host. */
export async function linuxHostCheck(config: VmConfig, opts: HostCheckOptions = {}): Promise<HostReport> {
  return (await hostCheckAndPlan(config, opts)).report;
}

/**
 * The check, and the plan it made of the config from the same facts (null where the plan refuses:
 * each refusal is then a failed item). `vmsandbox run`'s preflight executes that plan.
 */
export async function hostCheckAndPlan(config: VmConfig, opts: HostCheckOptions = {}): Promise<{ report: HostReport; plan: SandboxPlan | null }> {
  const items: HostItem[] = [];
  const add = (level: HostLevel, item: string, message: string) => items.push({ level, item, message });
  const svcPath = (i: number) => `services[${i}]`;

  // ---- who runs the check ----
  const root = opts.root ?? process.getuid?.() === 0;
  if (root) add('ok', 'host.root', 'running as root (vmsandbox run needs root)');
  else add('warn', 'host.root', `not running as root (uid ${process.getuid?.()}): vmsandbox run needs root; this check saw the host as this user`);

  // ---- the native parts ----
  const build = nativeBuildDir();
  const nativeOk = ['vmsandbox-init', 'libvmsandbox.so'].every((f) => existsSync(join(build, f)));
  if (nativeOk) add('ok', 'host.native', `${build}: vmsandbox-init and libvmsandbox.so present`);
  else add('fail', 'host.native', `${build}: vmsandbox-init or libvmsandbox.so missing: build them with \`make -C native\` (npm ci does)`);

  // What runs of this VM created and have not removed yet (its lock's journal; read, not locked).
  const journal = readRecord(vmLockPath(config.name, opts.lockDir))?.journal ?? { cgroup: null, runtimeDir: null };

  // ---- the plan: the same refusals `run` makes (plan/index.ts), from this host's facts ----
  const abi = opts.landlockAbi !== undefined ? opts.landlockAbi : nativeOk ? landlockAbi() : null;
  const mountinfo = opts.mountinfo ?? readOr('/proc/self/mountinfo', '');
  const mount = findCgroup2Mount(mountinfo);
  const found = mount ? cgroupControllersFor(config, mount) : null;
  const controllers = found?.controllers ?? [];
  const planned = planSandbox(config, { landlockAbi: abi ?? 0, cgroupControllers: controllers });
  const refusals = new Map<string, Refusal>(planned.ok ? [] : planned.refusals.map((r) => [r.field, r]));
  const skipped = planned.ok ? planned.plan.cgroup.skipped : [];

  // ---- Landlock ----
  const { minAbi } = config.landlock;
  const llRefused = refusals.get('landlock.minAbi');
  refusals.delete('landlock.minAbi');
  if (abi === null) {
    add('fail', 'landlock.minAbi', 'Landlock ABI unknown: the native helper that probes it is missing (see host.native)');
  } else if (llRefused) {
    add('fail', 'landlock.minAbi', `${llRefused.message}; vmsandbox run would refuse to start`);
  } else {
    const missing = missingFeatures(abi);
    const lacks = missing.length ? `; lacks: ${missing.join(', ')}` : '';
    if (abi >= minAbi) add('ok', 'landlock.minAbi', `the kernel offers Landlock ABI ${abi} (config needs ≥ ${minAbi})${lacks}`);
    else add('warn', 'landlock.minAbi', `the kernel offers Landlock ABI ${abi} < ${minAbi}: runs degraded (landlock.allowDegraded)${lacks}`);
  }

  // ---- cgroup v2 ----
  if (!mount) {
    add('fail', 'host.cgroup2', 'no cgroup2 mount in /proc/self/mountinfo: mount cgroup2 (e.g. mount -t cgroup2 none /sys/fs/cgroup/unified)');
  } else {
    const where = found!.where;
    add('ok', 'host.cgroup2', `mounted at ${mount}; controllers available at ${where}: ${controllers.join(' ') || '(none)'}`);
    const vmDir = join(mount, vmCgroupPath(config));
    const events = readOr(join(vmDir, 'cgroup.events'), '');
    if (events && journal.cgroup !== vmDir) {
      // run refuses a cgroup no run of this VM created (effects/linux/backend.ts): so does check.
      add('fail', 'name', `cgroup ${vmDir} exists, and no run of vm ${config.name} created it: vmsandbox run would refuse it (exit 111). Fix: see what it holds (${vmDir}/cgroup.procs) and remove it, or \`vmsandbox finish --force CONFIG\``);
    } else if (/^populated 1$/m.test(events)) {
      add('warn', 'name', `${vmDir} has processes: this VM is running (or its last run was not cleaned up: vmsandbox finish)`);
    }
  }
  const v1 = v1Controllers(opts.procCgroups ?? readOr('/proc/cgroups', ''));
  const limitItem = (path: string, key: string) => {
    const ctl = key.split('.')[0]!;
    const where = (v1.has(ctl) ? ` (here it is bound to a cgroup v1 hierarchy, see /proc/cgroups)` : '') + (mount ? '' : ' (there is no cgroup2 mount)');
    const refused = refusals.get(path);
    refusals.delete(path);
    if (refused) add('fail', path, `${refused.message}${where}; vmsandbox run would refuse to start`);
    else if (skipped.some((k) => k.startsWith(`${path}: `))) add('warn', path, `the ${ctl} controller is not available${where}: the limit is skipped at run time (cgroup.limitsOptional)`);
    else add('ok', path, `the ${ctl} controller is available`);
  };
  for (const key of Object.keys(config.cgroup.limits)) limitItem(`cgroup.limits[${JSON.stringify(key)}]`, key);
  config.services.forEach((s, i) => {
    for (const key of Object.keys(s.limits)) limitItem(`${svcPath(i)}.limits[${JSON.stringify(key)}]`, key);
  });

  // ---- /dev/kvm and devices ----
  const kvm = statOrNull('/dev/kvm');
  const kvmOk = kvm !== null && kvm.isCharacterDevice();
  // Only a config that grants /dev/kvm cares what this host's KVM is (a TCG-only VM does not).
  const usesKvm = config.services.some((s) => s.devices.includes('/dev/kvm'));
  if (usesKvm && kvmOk) {
    if (existsSync('/sys/module/kvm_pvm')) {
      add('warn', 'host./dev/kvm', 'present, from kvm_pvm (this host is itself a VM): stock guest kernels may fail under it; prefer TCG if a guest crashes');
    } else add('ok', 'host./dev/kvm', 'present');
  } else if (usesKvm) {
    add('warn', 'host./dev/kvm', 'absent: VMMs must use software emulation (QEMU -accel tcg); load kvm_intel/kvm_amd for hardware acceleration');
  }
  // A real guest needs seconds to shut down on a power-button press; a shorter stopMs always ends
  // in the forced stop (exit 2) for it. Fine for a stand-in vmm that exits at once.
  const stopMs = config.timeouts.stopMs;
  const vmm = config.services.find((s) => s.vmm);
  if (vmm && !('signal' in vmm.stop) && stopMs < STOP_MS_FOR_A_GUEST) {
    add('warn', 'timeouts.stopMs', `${stopMs} ms is too short for a guest to shut down after ${'qmp' in vmm.stop ? 'QMP system_powerdown' : 'its stop request'} (a Linux guest takes seconds): the stop will be forced (exit 2). Fix: ${STOP_MS_FOR_A_GUEST} or more`);
  }
  config.services.forEach((s, i) => {
    s.devices.forEach((d, j) => {
      const st = statOrNull(d);
      const path = `${svcPath(i)}.devices[${j}]`;
      if (!st) add('fail', path, `${d} does not exist on this host: remove it from devices, or load the driver that provides it`);
      else if (!st.isCharacterDevice() && !st.isBlockDevice()) add('fail', path, `${d} is not a device node`);
      else add('ok', path, `${d}: ${st.isCharacterDevice() ? 'character' : 'block'} device ${Math.floor(st.rdev / 256) & 0xfff}:${st.rdev & 0xff}`);
    });
  });

  // ---- placement: what only the host can tell (the loader refuses the rest) ----
  for (const [field, path] of [['storage', config.storage], ['runtimeDir', config.runtimeDir]] as const) {
    const real = resolveExisting(path);
    const kernelFs = ['/proc', '/sys', '/dev'].find((d) => isUnder(real, d));
    if (kernelFs) add('fail', field, `${path} resolves to ${real}, in ${kernelFs}, a kernel filesystem: use a directory on a real filesystem`);
    else if (real === '/') add('fail', field, `${path} resolves to /, the host's root: use a directory of its own`);
    const open = replaceableBy(path);
    if (open) {
      add(
        'fail',
        field,
        `${open.dir} is writable by ${open.who}: a local user could put a symlink at ${open.entry} and the root manager would follow it. ` +
          `Fix: put ${field} under a root-owned directory no other user can write (/run/vmsandbox, /var/lib/vmsandbox)`,
      );
    }
  }
  const storageMount = mountOf(resolveExisting(config.storage), mountinfo);
  if (storageMount && !(storageMount.options.includes('nosuid') && storageMount.options.includes('nodev'))) {
    add(
      'warn',
      'storage',
      `the host mount at ${storageMount.point} lacks ${['nosuid', 'nodev'].filter((o) => !storageMount.options.includes(o)).join(',')}: services see storage nosuid,nodev, ` +
        `but a setuid file or device node a service leaves there works for the host's own processes. Fix: storage on a filesystem mounted nosuid,nodev`,
    );
  }

  // ---- storage and runtime dir ----
  const storage = statOrNull(config.storage);
  if (!storage) add('fail', 'storage', `${config.storage} does not exist: create it (mkdir -p ${config.storage})`);
  else if (!storage.isDirectory()) add('fail', 'storage', `${config.storage} is not a directory`);
  else add('ok', 'storage', `${config.storage} is a directory`);
  const rt = statOrNull(config.runtimeDir);
  const user = readRecord(runtimeDirLockPath(config.runtimeDir, opts.lockDir));
  if (rt && user && user.vm !== config.name) {
    // Another VM's manager holds (or held) this runtime dir: run refuses while it runs (exit 101).
    add('warn', 'runtimeDir', `${config.runtimeDir} is vm ${user.vm}'s runtime dir (manager pid ${user.pid}, ${user.phase}): vmsandbox run refuses to share it while that VM runs (exit 101). Fix: give this VM its own runtimeDir`);
  } else if (rt && journal.runtimeDir !== config.runtimeDir) {
    add('fail', 'runtimeDir', `runtime dir ${config.runtimeDir} (runtimeDir) exists, and no run of vm ${config.name} created it: vmsandbox run would refuse it (exit 111). Fix: see what it holds and remove it, or choose another runtimeDir`);
  } else if (rt) {
    add('warn', 'runtimeDir', `${config.runtimeDir} exists, left by a run of vm ${config.name} (or the VM is running): vmsandbox run removes it first, or \`vmsandbox finish CONFIG\` does`);
  }

  // ---- services ----
  const passwd = parsePasswd(opts.passwd ?? readOr('/etc/passwd', ''));
  const uidsSeen = new Map<number, string>();
  config.services.forEach((s, i) => {
    const p = svcPath(i);
    serviceChecks(config, s, p, abi, add);
    // Capabilities the plan allows but a compromised service would use (config/rules.ts says how).
    s.caps.forEach((name, j) => {
      const cap = canonicalCapability(name);
      const risk = RISKY_CAPABILITIES[cap];
      if (risk) add('warn', `${p}.caps[${j}]`, `CAP_${cap}: if ${s.name} is compromised, ${risk}`);
    });
    socketClients(config, s, p, add);
    const user = passwd.find((e) => e.uid === s.uid);
    if (user) {
      const login = !NO_LOGIN.test(user.shell);
      add(
        'warn',
        `${p}.uid`,
        `uid ${s.uid} belongs to ${login ? 'the login user' : 'the system user'} ${user.name} (${user.shell}): ` +
          `a compromised ${s.name} could act on that user's files and processes. Fix: a uid with no passwd entry`,
      );
    } else add('ok', `${p}.uid`, `uid ${s.uid} has no passwd entry (none is needed)`);
    const other = uidsSeen.get(s.uid);
    if (other) add('warn', `${p}.uid`, `uid ${s.uid} is also ${other}'s: distinct uids keep one compromised service from acting on the other where Landlock does not cover it`);
    else uidsSeen.set(s.uid, s.name);
  });

  // Whatever else the plan refuses (devices, capabilities, paths of a config built in code).
  for (const r of refusals.values()) add('fail', r.field, r.message);

  const failures = items.filter((x) => x.level === 'fail').length;
  const warnings = items.filter((x) => x.level === 'warn').length;
  return {
    report: { ok: failures === 0, failures, warnings, items, facts: { root, landlockAbi: abi, cgroup2Mount: mount, cgroupControllers: controllers, kvm: kvmOk } },
    plan: planned.ok ? planned.plan : null,
  };
}

/** Paths `vmsandbox run` creates before any service starts: the runtime dirs and handed-over sockets. */
function createdByRun(config: VmConfig): string[] {
  return [
    config.runtimeDir,
    ...config.services.flatMap((x) => [serviceRuntimeDir(config, x), ...(x.sockets ?? []).map((k) => k.path)]),
  ];
}

function serviceChecks(
  config: VmConfig,
  s: ServiceConfig,
  p: string,
  abi: number | null,
  add: (level: HostLevel, item: string, message: string) => void,
): void {
  const gids = [s.gid, ...s.groups];
  // argv[0]: exists, a regular file, executable by the service's uid, and inside its Landlock rules.
  const argv0 = s.argv[0]!;
  const st = statOrNull(argv0);
  if (!st) add('fail', `${p}.argv[0]`, `${argv0} does not exist: install it or fix the path`);
  else if (!st.isFile()) add('fail', `${p}.argv[0]`, `${argv0} is not a regular file`);
  else {
    const real = realOr(argv0);
    const dir = unsearchableDir(real, s.uid, gids);
    const rules = landlockRules(config, s);
    const covered = [...rules.read, ...rules.write].some((r) => isUnder(real, realOr(r)));
    if (!(permsFor(st, s.uid, gids) & 1)) {
      add('fail', `${p}.argv[0]`, `${argv0} is not executable by uid ${s.uid} (mode ${(st.mode & 0o7777).toString(8)}, owner ${st.uid}:${st.gid})`);
    } else if (dir) {
      add('fail', `${p}.argv[0]`, `${argv0}: uid ${s.uid} cannot search ${dir}`);
    } else if (abi !== null && abi > 0 && !covered) {
      add('fail', `${p}.argv[0]`, `${real} is outside the service's Landlock rules: exec would be denied. Fix: add ${dirname(real)} (or a parent) to ${p}.landlock.read`);
    } else add('ok', `${p}.argv[0]`, `${argv0} is executable by uid ${s.uid}`);
  }
  // Files a QEMU or cloud-hypervisor command line names (-kernel, -drive file=, --disk path=, …):
  // outside the rules, the vmm dies at start with only its own "Permission denied" to say why.
  if (abi !== null && abi > 0) {
    const rules = landlockRules(config, s);
    for (const f of vmmFiles(s.argv)) {
      const allowed = f.access === 'read' ? [...rules.read, ...rules.write] : rules.write;
      const real = realOr(f.path);
      if (allowed.some((r) => isUnder(real, realOr(r)))) continue;
      add('fail', `${p}.argv[${f.arg}]`, `${f.option} ${f.path}: outside ${s.name}'s Landlock ${f.access} rules, so it cannot be opened (Permission denied when the VM starts). Fix: add "${f.path}" (or its directory) to ${p}.landlock.${f.access}`);
    }
  }
  // Landlock paths: a rule needs an inode, so a missing path fails the launch.
  for (const kind of ['read', 'write'] as const) {
    s.landlock[kind].forEach((path, j) => {
      const item = `${p}.landlock.${kind}[${j}]`;
      const created = createdByRun(config);
      if (created.includes(path)) add('ok', item, `${path} is created by vmsandbox run before the service starts`);
      else if (existsSync(path)) add('ok', item, `${path} exists`);
      else if (isUnder(path, config.runtimeDir)) {
        add('warn', item, `${path} does not exist yet: it must exist when ${s.name} launches (a service launched earlier may create it), else the launch fails`);
      } else add('fail', item, `${path} does not exist: a Landlock rule needs an existing file or directory; create it or remove the rule`);
    });
  }
  // Sockets the vmm creates and the manager connects to (stop, readiness).
  if (!s.vmm) return;
  const own = serviceRuntimeDir(config, s);
  const handed = (s.sockets ?? []).map((k) => k.path);
  const socketItem = (item: string, sock: string) => {
    if (handed.includes(sock)) add('ok', item, `${sock} is created by the sandbox and handed to the vmm (sockets)`);
    else if (isUnder(sock, own)) add('ok', item, `${sock} is in ${own}, which the vmm (uid ${s.uid}) can write`);
    else if (isUnder(sock, config.runtimeDir)) {
      add('warn', item, `${sock}: ${config.runtimeDir} is created root-owned (0755), so the vmm (uid ${s.uid}) cannot create its socket there. Fix: put it in ${own}/`);
    } else add('warn', item, `${sock} is outside ${config.runtimeDir}: the vmm can only create sockets where the sandbox lets it write; prefer ${own}/`);
  };
  const ready = s.ready;
  if (ready && ready !== 'immediate') socketItem(`${p}.ready.${'qmp' in ready ? 'qmp' : 'socket'}`, 'qmp' in ready ? ready.qmp : ready.socket);
  const how = s.stop;
  if ('qmp' in how) socketItem(`${p}.stop.qmp`, how.qmp);
  else if ('cloudHypervisorApi' in how) socketItem(`${p}.stop.cloudHypervisorApi`, how.cloudHypervisorApi);
  else if ('command' in how) {
    const cmd = how.command[0]!;
    const cst = statOrNull(cmd);
    const item = `${p}.stop.command[0]`;
    if (!cst || !cst.isFile()) add('fail', item, `${cmd} does not exist or is not a file: the stop command could not run`);
    else if (!(cst.mode & 0o111)) add('fail', item, `${cmd} is not executable`);
    else add('ok', item, `${cmd} is executable (it runs on the host as root, unsandboxed)`);
  }
}

/**
 * A listed client sees a handed-over socket (its view); whether it may connect is the file's
 * owner, group and mode (connect needs write permission), unless it bypasses them. A client that
 * sees the socket but would get EACCES is a config mistake worth a warning.
 */
function socketClients(config: VmConfig, s: ServiceConfig, p: string, add: (level: HostLevel, item: string, message: string) => void): void {
  (s.sockets ?? []).forEach((sock, j) => {
    const mode = Number.parseInt(sock.mode, 8);
    (sock.clients ?? []).forEach((name, k) => {
      const c = config.services.find((x) => x.name === name);
      if (!c) return;
      const bypass = c.caps.some((cap) => canonicalCapability(cap) === 'DAC_OVERRIDE');
      const bit = c.uid === s.uid ? 0o200 : c.gid === sock.gid || c.groups.includes(sock.gid) ? 0o020 : 0o002;
      if (bypass || mode & bit) return;
      add('warn', `${p}.sockets[${j}].clients[${k}]`, `${name} sees ${sock.path} but cannot connect to it: the file is uid ${s.uid}, gid ${sock.gid}, mode ${sock.mode}, and ${name} runs as ${c.uid}:${c.gid}. Fix: "gid": ${c.gid} with "mode": "0660"`);
    });
  });
}

