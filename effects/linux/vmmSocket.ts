// Connecting, as root, to a socket the vmm created (QMP, the cloud-hypervisor API) without
// following anything the vmm could plant. The vmm owns the directory its socket lives in, so it
// can put a symlink there (to another VM's QMP socket, or to a root-only socket of the host); a
// plain connect(2) by path would follow it with root's rights. So: open the path itself with
// O_PATH | O_NOFOLLOW (a symlink is opened as a symlink, not followed), check that it is a socket
// owned by the vmm's uid, and connect through that very inode (/proc/self/fd/N), so a rename
// between the check and the connect changes nothing.

import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { EffectError } from '../port.js';

/** O_PATH (Linux, every architecture Node runs vmsandbox on): Node does not export it. */
const O_PATH = 0o10000000;

export interface VettedSocket {
  /** A path that names exactly the vetted inode. */
  readonly path: string;
  close(): void;
}

/**
 * Open `path` for connecting: a socket owned by `uid`, reached without following a symlink at its
 * last component (its parents are the runtime dir's, root's). ENOENT passes through (the vmm has
 * not created it yet); anything else that is not the vmm's socket is EPERM, naming what was found.
 */
export function vetVmmSocket(op: string, path: string, uid: number): VettedSocket {
  let fd: number;
  try {
    // libuv opens every file close-on-exec: nothing the manager starts inherits it.
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new EffectError(op, code, `${path}: ${(e as Error).message}`);
  }
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
