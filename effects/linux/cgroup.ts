// cgroup v2 through plain file I/O. Only the cgroup2 mount is ever touched (found in
// /proc/self/mountinfo); cgroup v1 hierarchies are left alone.
//
// Layout (plan/cgroup.ts): <mount>/<config.cgroup.parent>/<vm>/{init,svc-<service>...}: the init and every service
// in a leaf of their own, so the VM directory holds no process and can carry controllers.

// Plain synchronous calls: cgroupfs answers at once, and each async call would be a thread-pool
// round trip on the manager's way to ready (and load node:fs/promises into every manager).
import { mkdirSync, readdirSync, readFileSync, rmdirSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VmConfig } from '../../config/types.js';
import { INIT_LEAF, serviceLeaf, vmCgroupPath } from '../../plan/cgroup.js';
import type { LimitWrite } from '../../plan/types.js';
import { EffectError } from '../port.js';
import { explainedError } from './explain.js';

export { INIT_LEAF, serviceLeaf };

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The first cgroup2 mount of the whole hierarchy (root "/"), from /proc/self/mountinfo. */
export function findCgroup2Mount(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string | null {
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (right[0] === 'cgroup2' && left[3] === '/') return unescapeMountinfo(left[4]!);
  }
  return null;
}

export function cgroupRoot(): string {
  const m = findCgroup2Mount();
  if (!m) {
    throw explainedError('cgroup', 'ENOENT', null, {
      object: 'the cgroup2 mount',
      fix: 'there is none in /proc/self/mountinfo: mount cgroup2 (e.g. mount -t cgroup2 none /sys/fs/cgroup/unified)',
    });
  }
  return m;
}

/** <mount>/<parent>/<vm>. */
export function vmCgroupDir(config: VmConfig, root = cgroupRoot()): string {
  if (config.cgroup.parent.split('/').includes('..')) throw new EffectError('cgroup', 'EINVAL', `cgroup.parent ${config.cgroup.parent} must not contain ..`);
  return join(root, vmCgroupPath(config));
}

/** What an errno from cgroupfs usually means, for any cgroup file or directory. */
function cgroupFix(code: string): string | undefined {
  if (code === 'EACCES' || code === 'EPERM') return 'the manager must run as root, with the cgroup2 tree writable by it';
  if (code === 'EROFS') return 'cgroup2 is mounted read-only here: mount it read-write';
  if (code === 'ENOSPC' || code === 'EAGAIN') return "cgroup.max.descendants or cgroup.max.depth of an ancestor is reached";
  return undefined;
}

/** `<op>: <what>[ (<field>)]: <ERRNO> (<meaning>)[: <fix>]`. */
function fsError(op: string, err: unknown, what: string, field?: string, fix?: string): EffectError {
  const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
  return explainedError(op, code, null, { object: what, field, fix: fix ?? cgroupFix(code) });
}

export async function mkdirCgroup(dir: string, field?: string): Promise<void> {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fsError('cgroup', e, `mkdir ${dir}`, field);
  }
}

function controllerOf(key: string): string {
  return key.split('.')[0]!;
}

function readWords(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Write one limit of the plan: enable its controller in each ancestor's cgroup.subtree_control
 * below the mount root (cgroup v2 offers a controller to a child only where the parent enables
 * it), then write the value. The plan only holds limits whose controller the host offers
 * (plan/cgroup.ts); a failure here names the limit's field and the fix.
 */
export async function writeLimit(root: string, w: LimitWrite): Promise<void> {
  const ctl = controllerOf(w.key);
  const rel = w.cgroup.split('/').filter(Boolean);
  let where = root;
  for (let i = 0; i < rel.length; i++) {
    const enabled = readWords(join(where, 'cgroup.subtree_control'));
    if (!enabled.includes(ctl)) {
      try {
        writeFileSync(join(where, 'cgroup.subtree_control'), `+${ctl}`);
      } catch (e) {
        const busy = (e as NodeJS.ErrnoException).code === 'EBUSY';
        throw fsError(
          'cgroup',
          e,
          `limit ${w.key}: enabling the ${ctl} controller in ${where}/cgroup.subtree_control`,
          w.field,
          busy ? `${where} has processes of its own, and cgroup v2 enables a controller for children only where there are none: move them into a leaf cgroup, or set cgroup.limitsOptional` : undefined,
        );
      }
    }
    where = join(where, rel[i]!);
  }
  const file = join(root, w.cgroup, w.key);
  try {
    writeFileSync(file, w.value);
  } catch (e) {
    const invalid = (e as NodeJS.ErrnoException).code === 'EINVAL';
    throw fsError('cgroup', e, `limit ${w.key}=${w.value}: writing ${file}`, w.field, invalid ? 'the kernel refused the value' : undefined);
  }
}

export async function isPopulated(dir: string): Promise<boolean | null> {
  try {
    const text = readFileSync(join(dir, 'cgroup.events'), 'utf8');
    return /^populated 1$/m.test(text);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fsError('cgroup', e, `reading ${dir}/cgroup.events`);
  }
}

/** cgroup.kill the directory (subtree included). Returns false if it does not exist. */
export async function killCgroup(dir: string): Promise<boolean> {
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fsError('cgroup', e, `writing ${dir}/cgroup.kill`);
  }
}

/** Resolve when cgroup.events says `populated 0` (or the directory is gone); inotify + a slow poll. */
export async function waitUnpopulated(dir: string, signal: AbortSignal): Promise<void> {
  if ((await isPopulated(dir)) !== true) return;
  await new Promise<void>((resolve, reject) => {
    let done = false;
    let watcher: ReturnType<typeof watch> | null = null;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      watcher?.close();
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const check = () => {
      isPopulated(dir).then((p) => p !== true && finish(), (e: Error) => finish(e));
    };
    const onAbort = () => finish(new EffectError('killAll', 'ECANCELED', `aborted while waiting for ${dir} to empty`));
    try {
      watcher = watch(join(dir, 'cgroup.events'), check);
      watcher.on('error', () => undefined);
    } catch {
      watcher = null;
    }
    const timer = setInterval(check, 20);
    signal.addEventListener('abort', onAbort);
    check();
  });
}

export async function listProcs(dir: string): Promise<number[]> {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** rmdir every child cgroup, then the directory itself, retrying EBUSY a bounded number of times. */
export async function removeCgroupTree(dir: string, attempts = 50, delayMs = 10): Promise<void> {
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fsError('cleanup', e, `listing ${dir}`);
  }
  for (const name of entries) await removeCgroupTree(join(dir, name), attempts, delayMs);
  for (let i = 0; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || i + 1 >= attempts) throw fsError('cleanup', e, `rmdir ${dir} (after ${i + 1} attempts)`);
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}
