// Connecting, as root, to a socket the vmm created (QMP, the cloud-hypervisor API) without
// following anything the vmm could plant. The vmm owns the directory its socket lives in (and any
// directory it makes below it), so it can put a symlink there — in place of the socket, or of a
// directory on the way to it — to another VM's QMP socket or a root-only socket of the host; a
// plain connect(2) by path would follow it with root's rights. So: walk the path one component at a
// time, each opened relative to the directory before it (O_PATH | O_NOFOLLOW through
// /proc/self/fd/N, so nothing renamed behind the walk changes what it holds); follow a symlink only
// in a directory that no user but root can change (the host's own, such as /var/run -> /run), never
// at the last component; check that what is found is a socket owned by the vmm's uid, and connect
// through that very inode (/proc/self/fd/N).

import { closeSync, constants, fstatSync, openSync, readlinkSync, type Stats } from 'node:fs';
import { EffectError } from '../port.js';

/** O_PATH (Linux, every architecture Node runs vmsandbox on): Node does not export it. */
const O_PATH = 0o10000000;

export interface VettedSocket {
  /** A path that names exactly the vetted inode. */
  readonly path: string;
  close(): void;
}

/** The most symlinks one walk follows (the kernel's own limit is 40). */
const MAX_LINKS = 40;

/** Who other than root could change entries of a directory: its owner, its group, everyone; or null. */
export function changeableBy(st: Stats): string | null {
  if (st.uid !== 0) return `uid ${st.uid}`;
  if (st.mode & 0o002) return 'every user';
  if (st.mode & 0o020 && st.gid !== 0) return `group ${st.gid}`;
  return null;
}

/**
 * An O_PATH descriptor of `path`'s last component, itself never followed, reached through
 * directories opened one by one, each relative to the one before it. A symlink on the way is
 * followed only where no user but root could have put it; one in a directory another user can
 * change is refused (EPERM, naming it). Errors of the walk (ENOENT, ENOTDIR, ELOOP) pass through
 * as EffectErrors of `op`.
 */
export function openWithoutPlantedLinks(op: string, path: string): number {
  if (!path.startsWith('/')) throw new EffectError(op, 'EINVAL', `${path}: not an absolute path`);
  const fail = (e: unknown): never => {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new EffectError(op, code, `${path}: ${(e as Error).message}`);
  };
  const open = (at: string, flags: number): number => {
    try {
      // libuv opens every file close-on-exec: nothing the manager starts inherits it.
      return openSync(at, flags);
    } catch (e) {
      return fail(e);
    }
  };
  let dir = open('/', O_PATH | constants.O_DIRECTORY);
  let where = '';
  let links = 0;
  const rest = path.split('/').filter((c) => c !== '' && c !== '.');
  try {
    while (rest.length > 1) {
      const name = rest.shift()!;
      const fd = open(`/proc/self/fd/${dir}/${name}`, O_PATH | constants.O_NOFOLLOW);
      const st = fstatSync(fd);
      if (st.isDirectory()) {
        closeSync(dir);
        dir = fd;
        where = name === '..' ? where.slice(0, where.lastIndexOf('/')) : `${where}/${name}`;
        continue;
      }
      closeSync(fd);
      if (!st.isSymbolicLink()) fail(Object.assign(new Error(`${where}/${name} is not a directory`), { code: 'ENOTDIR' }));
      const who = changeableBy(fstatSync(dir));
      if (who) {
        throw new EffectError(op, 'EPERM', `${path}: ${where}/${name} is a symlink in a directory ${who} can change: not following it as root`);
      }
      if (++links > MAX_LINKS) fail(Object.assign(new Error('too many symlinks'), { code: 'ELOOP' }));
      // Root's own link: its directory cannot change under the walk, so reading it by name is exact.
      const target = readlinkSync(`/proc/self/fd/${dir}/${name}`);
      rest.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      if (target.startsWith('/')) {
        closeSync(dir);
        dir = open('/', O_PATH | constants.O_DIRECTORY);
        where = '';
      }
    }
    return open(`/proc/self/fd/${dir}/${rest[0] ?? '.'}`, O_PATH | constants.O_NOFOLLOW);
  } finally {
    closeSync(dir);
  }
}

/**
 * Open `path` for connecting: a socket owned by `uid`, reached without following a symlink at its
 * last component, nor one on the way that a user other than root could have planted
 * (openWithoutPlantedLinks). ENOENT passes through (the vmm has not created it yet); anything else
 * that is not the vmm's socket is EPERM, naming what was found.
 */
export function vetVmmSocket(op: string, path: string, uid: number): VettedSocket {
  const fd = openWithoutPlantedLinks(op, path);
  try {
    const st = fstatSync(fd);
    const what = st.isSymbolicLink() ? 'a symlink' : st.isSocket() ? `a socket of uid ${st.uid}` : 'not a socket';
    if (!st.isSocket() || st.uid !== uid) {
      throw new EffectError(op, 'EPERM', `${path} is ${what}, not the vmm's (uid ${uid}) socket: not connecting to it as root`);
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  let open = true;
  return {
    path: `/proc/self/fd/${fd}`,
    close: () => {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
