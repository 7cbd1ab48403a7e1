// The files a VMM's command line names, so that `check` can tell, before anything runs, that its
// Landlock rules do not reach one (QEMU would only say "could not open kernel file …: Permission
// denied" and exit). QEMU and cloud-hypervisor, the options that open a host file.

import { posix } from 'node:path';

export interface NamedFile {
  /** Index in argv of the argument that names it. */
  arg: number;
  path: string;
  /** read: opened for reading; write: written (or created: its directory is written). */
  access: 'read' | 'write';
  /** The option, for the message ("-kernel", "-drive file=", "--disk path="). */
  option: string;
}

/** QEMU options whose value is a file it reads / writes. */
const QEMU_READ = ['-kernel', '-initrd', '-bios', '-dtb'];
const QEMU_WRITE = ['-pidfile', '-D'];
const CH_READ = ['--kernel', '--initramfs', '--firmware'];

/** QEMU's option syntax: key=value pairs split at commas, ",," an escaped comma. */
function qemuPairs(v: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of v.replace(/,,/g, '\0').split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq), part.slice(eq + 1).replace(/\0/g, ','));
  }
  return out;
}

function on(v: string | undefined): boolean {
  return v === 'on' || v === 'true' || v === 'yes';
}

function absolute(p: string | undefined): p is string {
  return p !== undefined && posix.isAbsolute(p);
}

export function vmmKind(argv: readonly string[]): 'qemu' | 'cloud-hypervisor' | null {
  const base = posix.basename(argv[0] ?? '');
  if (base.startsWith('qemu-system-')) return 'qemu';
  if (base === 'cloud-hypervisor') return 'cloud-hypervisor';
  return null;
}

/** Every absolute host file the command line names (relative paths depend on the cwd: not judged). */
export function vmmFiles(argv: readonly string[]): NamedFile[] {
  const kind = vmmKind(argv);
  const out: NamedFile[] = [];
  const add = (arg: number, path: string | undefined, access: NamedFile['access'], option: string) => {
    if (absolute(path)) out.push({ arg, path, access, option });
  };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (kind === 'qemu') {
      if (QEMU_READ.includes(a)) add(i + 1, v, 'read', a);
      else if (QEMU_WRITE.includes(a)) add(i + 1, v, 'write', a);
      else if (a === '-drive' && v !== undefined) {
        const o = qemuPairs(v);
        add(i + 1, o.get('file'), on(o.get('readonly')) ? 'read' : 'write', '-drive file=');
      } else if (a === '-blockdev' && v !== undefined) {
        const o = qemuPairs(v);
        add(i + 1, o.get('filename'), on(o.get('read-only')) ? 'read' : 'write', '-blockdev filename=');
      } else if ((a === '-serial' || a === '-monitor') && v?.startsWith('file:')) add(i + 1, v.slice('file:'.length), 'write', `${a} file:`);
    } else if (kind === 'cloud-hypervisor') {
      if (CH_READ.includes(a)) add(i + 1, v, 'read', a);
      else if (a === '--disk') {
        // --disk takes one or more values, up to the next option.
        for (let j = i + 1; j < argv.length && !argv[j]!.startsWith('--'); j++) {
          const o = qemuPairs(argv[j]!);
          add(j, o.get('path'), on(o.get('readonly')) ? 'read' : 'write', '--disk path=');
        }
      } else if ((a === '--serial' || a === '--console') && v?.startsWith('file=')) add(i + 1, v.slice('file='.length), 'write', `${a} file=`);
    }
  }
  return out;
}
