// Run-time errors that name the thing. vmsandbox-init reports only `err <id> <errno> <step>` (the C
// side carries no policy); this module maps a failing step, with the request and the config, to the
// object it concerns (a path, a device, a uid …), that object's config field path, the errno's
// meaning, and the fix — the way `vmsandbox check` words its findings:
//
//   launch vmm: /opt/vmm (services[1].argv[0]): ENOENT (no such file or directory) at execve: …; fix argv[0]
//
// Pure: no I/O, only type imports (cgroup.ts imports it). Unit tests: test/linux/explain.test.ts.

import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { EffectError } from '../port.js';
import { posix } from 'node:path';
import { STAGE_DATA, type MountOp } from '../../plan/mounts.js';

/** glibc's strerror() texts, lower-cased, for the errnos setup can meet. */
const MEANINGS: Record<string, string> = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  ESRCH: 'no such process',
  EINTR: 'interrupted system call',
  EIO: 'input/output error',
  ENXIO: 'no such device or address',
  E2BIG: 'argument list too long',
  ENOEXEC: 'exec format error',
  EBADF: 'bad file descriptor',
  ECHILD: 'no child processes',
  EAGAIN: 'resource temporarily unavailable',
  ENOMEM: 'cannot allocate memory',
  EACCES: 'permission denied',
  EFAULT: 'bad address',
  EBUSY: 'device or resource busy',
  EEXIST: 'file exists',
  EXDEV: 'invalid cross-device link',
  ENODEV: 'no such device',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EINVAL: 'invalid argument',
  ENFILE: 'too many open files in system',
  EMFILE: 'too many open files',
  ETXTBSY: 'text file busy',
  EFBIG: 'file too large',
  ENOSPC: 'no space left on device',
  EROFS: 'read-only file system',
  EMLINK: 'too many links',
  EPIPE: 'broken pipe',
  ENAMETOOLONG: 'file name too long',
  ENOSYS: 'function not implemented',
  ENOTEMPTY: 'directory not empty',
  ELOOP: 'too many levels of symbolic links',
  ENOTSUP: 'operation not supported',
  EOPNOTSUPP: 'operation not supported',
  EADDRINUSE: 'address already in use',
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'connection timed out',
  ECANCELED: 'operation canceled',
  EPROTO: 'protocol error',
  EDQUOT: 'disk quota exceeded',
  ESTALE: 'stale file handle',
};

/** The errno's meaning as strerror() words it, or null (not an errno, or an unusual one). */
export function errnoMeaning(errno: string): string | null {
  return MEANINGS[errno] ?? null;
}

/** `ENOENT (no such file or directory)`; an unknown name as it is. */
export function describeErrno(errno: string): string {
  const m = errnoMeaning(errno);
  return m ? `${errno} (${m})` : errno;
}

/** What a failure concerns: the object as an operator knows it, its config field, and the fix. */
export interface Explanation {
  /** `/opt/vmm`, `storage /var/lib/vm`, `device /dev/kvm`, `uid 62001` … */
  object: string;
  /** The config field path (`services[1].argv[0]`), if the object comes from the config. */
  field?: string;
  /** What the errno means here and what to change; omitted when there is nothing specific to say. */
  fix?: string;
}

/** `<object> (<field>): <ERRNO> (<meaning>)[ at <step>][: <fix>]`. */
export function formatExplanation(ex: Explanation, errno: string, step: string | null): string {
  const field = ex.field ? ` (${ex.field})` : '';
  const at = step ? ` at ${step}` : '';
  return `${ex.object}${field}: ${describeErrno(errno)}${at}${ex.fix ? `: ${ex.fix}` : ''}`;
}

/** An EffectError whose message is `<op>: <explanation>` (errno named once, with its meaning). */
export function explainedError(op: string, errno: string, step: string | null, ex: Explanation): EffectError {
  const e = new EffectError(op, errno, formatExplanation(ex, errno, step));
  e.message = `${op}: ${formatExplanation(ex, errno, step)}`;
  return e;
}

function serviceField(config: VmConfig, s: ServiceConfig): string {
  const i = config.services.findIndex((x) => x.name === s.name);
  return `services[${i < 0 ? '?' : i}]`;
}

/** Steps that are the init's own plumbing: no config object to name. */
const INTERNAL_STEPS = new Set([
  'move-pipe', 'sigemptyset', 'sigprocmask', 'setsid', 'no-new-privs', 'close-ruleset', 'close-range',
  'pipe', 'read-pipe', 'short-report', 'close-storage', 'close-keep', 'unshare', 'mount-slave',
  'dup2-output',
]);

function execFix(errno: string, s: ServiceConfig, p: string): string | undefined {
  switch (errno) {
    case 'ENOENT':
      return 'the program, or the interpreter its #! line names, or its ELF loader, does not exist: install it or fix argv[0]';
    case 'EACCES':
      return (
        `uid ${s.uid} may not execute it: it is not executable for that uid, a directory on the way is not searchable, ` +
        `its file system is mounted noexec, or it is outside the service's Landlock rules (add its directory to ${p}.landlock.read); ` +
        '`vmsandbox check` says which'
      );
    case 'ENOEXEC':
      return 'not a program this kernel can run (no #! line, or another architecture): fix argv[0]';
    case 'ENOTDIR':
      return 'a component of the path is not a directory: fix argv[0]';
    case 'ELOOP':
      return 'too many symbolic links on the way: fix argv[0]';
    case 'ETXTBSY':
      return 'the file is open for writing (being installed?): retry once it is complete';
    case 'E2BIG':
      return `argv and env together are too long: shorten ${p}.argv or ${p}.env`;
    case 'EPERM':
      return 'refused by a security module or a nosuid/noexec rule: check the host\'s LSM policy for this program';
    default:
      return undefined;
  }
}

function storageFix(config: VmConfig, errno: string): string | undefined {
  if (errno === 'ENOENT') return `the directory does not exist: create it (mkdir -p ${config.storage})`;
  if (errno === 'ENOTDIR') return `${config.storage} is not a directory: point storage at a directory`;
  if (errno === 'EACCES' || errno === 'EPERM') return `the sandbox init (root) may not reach it: check the permissions and mounts on the way to ${config.storage}`;
  return undefined;
}

/** A handed-over socket's path and field: the one the step concerns if it can be told, else all of them. */
function socketObject(config: VmConfig, s: ServiceConfig, p: string, errno: string): Explanation {
  const socks = s.sockets ?? [];
  if (socks.length === 1) return { object: `socket ${socks[0]!.path}`, field: `${p}.sockets[0].path` };
  if (errno === 'ENAMETOOLONG') {
    const j = socks.findIndex((k) => Buffer.byteLength(k.path) >= 108);
    if (j >= 0) return { object: `socket ${socks[j]!.path}`, field: `${p}.sockets[${j}].path` };
  }
  return { object: `sockets ${socks.map((k) => k.path).join(', ') || '(none)'} in ${config.runtimeDir}`, field: `${p}.sockets` };
}

function listenFix(step: string, errno: string, s: ServiceConfig): string | undefined {
  if (step === 'listen-path' && errno === 'EEXIST') return 'a file that is not a socket is in the way: remove it, or choose another path';
  if (errno === 'ENAMETOOLONG') return 'a unix socket path must be shorter than 108 bytes: choose a shorter path';
  if (step === 'listen-bind' && errno === 'ENOENT') return `its directory does not exist: put the socket directly in runtimeDir or in <runtimeDir>/${s.name}/`;
  if (step === 'listen-bind' && errno === 'EADDRINUSE') return 'another socket is bound there: is the VM already running?';
  return undefined;
}

/**
 * A `spawn` that failed at `step` (spawn_start/open_listener/service_child in native/spawn.c, do_spawn in vmsandbox-init.c),
 * explained in terms of the service's config. `cgroupLeaf`: the service's cgroup leaf directory, if known.
 */
export function explainSpawnStep(config: VmConfig, s: ServiceConfig, step: string, errno: string, cgroupLeaf?: string): Explanation {
  const p = serviceField(config, s);
  const leaf = cgroupLeaf ?? `svc-${s.name}`;
  if (step === 'execve') return { object: s.argv[0] ?? '(empty argv)', field: `${p}.argv[0]`, fix: execFix(errno, s, p) };
  if (step.startsWith('listen')) return { ...socketObject(config, s, p, errno), fix: listenFix(step, errno, s) };
  switch (step) {
    case 'clone-storage':
    case 'mkdir-storage':
    case 'move-storage':
    case 'setattr-storage':
      return {
        object: `storage ${config.storage}`,
        field: 'storage',
        fix: storageFix(config, errno) ?? `${p}.storage is "${s.storage}": the sandbox mounts the storage directory into the service`,
      };
    case 'hide-storage':
      return {
        object: `storage ${config.storage}`,
        field: `${p}.storage`,
        fix: `with storage "none" the directory is covered by an empty read-only tmpfs, which the kernel refused`,
      };
    case 'clone-keep':
    case 'mkdir-keep':
    case 'move-keep':
      return {
        object: `runtime dir ${config.runtimeDir}`,
        field: 'runtimeDir',
        fix: `the runtime dir is under the service's private ${s.tmp !== false ? '/tmp' : '/dev/shm'} and is kept reachable there; put runtimeDir outside /tmp and /dev/shm`,
      };
    case 'view-clone':
    case 'view-mount':
    case 'view-remount':
    case 'tree-stat':
    case 'tree-mkdir':
    case 'tree-mountpoint':
    case 'tree-move':
    case 'tree-close':
      return {
        object: `the service's view of the runtime dir ${config.runtimeDir} (its own directory and the sockets shared with it)`,
        field: 'runtimeDir',
        fix: step === 'view-clone' && errno === 'ENOENT'
          ? `its directory or a socket shared with it (sockets[].clients) is missing: was it removed while the VM ran (another manager using ${config.runtimeDir}?)`
          : undefined,
      };
    case 'mount-tmp':
      return { object: `private /tmp (tmpfs, size ${s.tmp})`, field: `${p}.tmp`, fix: errno === 'EINVAL' ? 'the kernel refused the size: use a size like "64M"' : undefined };
    case 'mount-shm':
      return { object: `private /dev/shm (tmpfs, size ${s.shm})`, field: `${p}.shm`, fix: errno === 'EINVAL' ? 'the kernel refused the size: use a size like "64M"' : undefined };
    case 'landlock-create':
      return {
        object: 'the Landlock ruleset',
        field: 'landlock.minAbi',
        fix:
          errno === 'EINVAL' || errno === 'E2BIG'
            ? 'the kernel refused the handled rights or scopes planned for the Landlock ABI it reported (plan/landlock.ts): report it with `vmsandbox check`\'s Landlock line'
            : 'the kernel refused to create it: is "landlock" in lsm=? (`vmsandbox check` shows the ABI)',
      };
    case 'landlock-rule':
      return {
        object: `a Landlock rule path (read: ${s.landlock.read.join(', ') || 'none'}; write: ${s.landlock.write.join(', ') || 'none'}; and the implicit ones)`,
        field: `${p}.landlock`,
        fix: 'every rule path must be a file or directory the sandbox init can open (a missing one is skipped): `vmsandbox check` checks each',
      };
    case 'landlock-port':
      return {
        object: `a Landlock TCP port rule (bind: ${(s.landlock.bindTcp ?? []).join(', ') || 'none'}; connect: ${(s.landlock.connectTcp ?? []).join(', ') || 'none'})`,
        field: `${p}.landlock`,
        fix: 'the kernel refused the rule: TCP rules need Landlock ABI 4 (`vmsandbox check` shows the ABI)',
      };
    case 'landlock-restrict':
      return { object: 'the Landlock ruleset', field: `${p}.landlock`, fix: 'the kernel refused to enforce it' };
    case 'setgroups':
      return { object: `supplementary groups [${s.groups.join(', ')}]`, field: `${p}.groups` };
    case 'capbset-drop':
    case 'keepcaps':
    case 'capset':
    case 'ambient':
      return {
        object: `capabilities [${s.caps.join(', ')}]`,
        field: `${p}.caps`,
        fix: errno === 'EPERM' ? 'the manager itself lacks one of them (it must run as root with a full capability set)' : undefined,
      };
    case 'securebits':
      return { object: `securebits [${(s.securebits ?? []).join(', ')}]`, field: `${p}.securebits`, fix: errno === 'EPERM' ? 'a locked securebit is already set on the manager' : undefined };
    case 'setresgid':
      return { object: `gid ${s.gid}`, field: `${p}.gid` };
    case 'setresuid':
      return { object: `uid ${s.uid}`, field: `${p}.uid`, fix: errno === 'EAGAIN' ? `uid ${s.uid} has reached its process limit (RLIMIT_NPROC)` : undefined };
    case 'chdir':
      return { object: 'working directory /', fix: 'the service cannot enter /' };
    case 'sc':
    case 'seccomp-init':
    case 'seccomp-rule':
    case 'seccomp-load':
      return {
        object: `the seccomp filter (allowed: ${(s.seccomp?.allow ?? []).join(', ') || 'none'})`,
        field: `${p}.seccomp.allow`,
        fix: step === 'sc' ? 'the sandbox init\'s libseccomp does not know a syscall of the deny list for this architecture: rebuild native/ against a newer libseccomp-dev' : undefined,
      };
    case 'session-keyring':
      return { object: 'a fresh session keyring', fix: errno === 'EDQUOT' ? `uid ${s.uid} has reached its key quota (/proc/sys/kernel/keys/maxkeys)` : undefined };
    case 'dup2-listen':
    case 'fcntl-listen':
      return { object: `socket fds ${(s.sockets ?? []).map((k) => k.fd).join(', ')}`, field: `${p}.sockets` };
    case 'pdeathsig':
    case 'parent-gone':
      return { object: 'the sandbox init', fix: 'the init exited while the service was starting' };
    case 'no-cgroup-fd':
    case 'leaf':
    case 'open-leaf':
    case 'clone3':
      return {
        object: `cgroup leaf ${leaf}`,
        fix:
          errno === 'EAGAIN'
            ? `a pids.max limit (cgroup.limits or ${p}.limits) or the system's process limit is reached`
            : errno === 'ENOMEM'
              ? 'out of memory (or a memory limit of the VM is reached)'
              : undefined,
      };
    case 'name':
      return { object: `service name ${s.name}`, field: `${p}.name`, fix: 'a service of that name is already running in this sandbox' };
    case 'parse':
      return { object: 'the spawn request', fix: 'the init could not parse what the manager sent: rebuild native/ (make -C native) so both match' };
    case 'slots':
      return { object: 'the sandbox init', fix: 'it runs a fixed number of services at most: fewer services' };
    case 'outrate':
      // PID 1's own spawn field (vmsandbox-init.c, do_spawn): the plan's rate, as the manager sent it.
      return {
        object: `the output rate of ${s.name} (SERVICE_OUTPUT.linesPerSecond, plan/output.ts)`,
        fix: 'the init refused the rate the manager sent (1 to 1000000 lines a second, once): rebuild native/ (make -C native) so both match',
      };
    case 'streams':
      // Each service's stdout/stderr pipes stay open while a descendant of an exited service holds them.
      return { object: 'the sandbox init', fix: 'no free output stream: processes left by exited services still hold their stdout/stderr; fewer services, or services that do not leave processes behind' };
    case 'request-token':
    case 'request-tokens':
    case 'request-length':
      // The init answers a request it cannot read (vmsandbox-init.c, dispatch) instead of dying.
      return {
        object: `the request to the sandbox init (${step})`,
        field: `${p}.argv`,
        fix: 'too long or malformed for the init: shorten the service\'s argv, env, Landlock paths or sockets; if they are short, rebuild native/ (make -C native) so manager and init match',
      };
    default:
      if (INTERNAL_STEPS.has(step)) return { object: 'the sandbox init', fix: 'an internal step failed: report it with this line' };
      // A spawn field the init could not parse (step = the key): a manager/init mismatch.
      return { object: `the spawn request's ${step} field`, fix: 'the init rejected what the manager sent: rebuild native/ (make -C native) so both match' };
  }
}

/** The VM's /dev node a staging path (/tmp/dev/…) stands for. */
function devOf(path: string): string | null {
  const m = /^\/tmp\/dev(\/.*)?$/.exec(path);
  return m ? `/dev${m[1] ?? ''}` : null;
}

function mountOpPath(op: MountOp): string {
  switch (op.verb) {
    case 'mount':
      return op.target;
    case 'symlink':
    case 'mkdir':
    case 'touch':
    case 'mknod':
    case 'umount':
    case 'setattr':
    case 'clone':
    case 'place':
      return op.path;
  }
}

/** The config field a path the VM's view keeps comes from (planViews). */
function keptField(config: VmConfig, path: string): string | undefined {
  if (path === config.storage) return 'storage';
  for (const [i, s] of config.services.entries()) {
    if (s.argv[0] === path) return `services[${i}].argv[0]`;
    for (const kind of ['read', 'write'] as const) {
      const j = s.landlock[kind].indexOf(path);
      if (j >= 0) return `services[${i}].landlock.${kind}[${j}]`;
    }
  }
  return undefined;
}

/**
 * A mount-plan request (planMounts in plan/mounts.ts) that failed at `step`, explained: which VM path or
 * device it builds, the field it comes from, and the fix.
 */
export function explainMountStep(config: VmConfig, op: MountOp, step: string, errno: string): Explanation {
  if (op.verb === 'mknod') {
    let field: string | undefined;
    config.services.forEach((s, i) => {
      const j = s.devices.indexOf(op.source);
      if (j >= 0 && field === undefined) field = `services[${i}].devices[${j}]`;
    });
    const fix =
      step === 'stat' && errno === 'ENOENT'
        ? `${op.source} does not exist on this host: remove it from devices, or load the driver that provides it`
        : step === 'not-a-device'
          ? `${op.source} is not a device node: remove it from devices`
          : undefined;
    return { object: `device ${op.source}`, field, fix };
  }
  const path = mountOpPath(op);
  const runtime = config.runtimeDir;
  if (path === runtime || (op.verb === 'mount' && op.source === runtime)) {
    return { object: `runtime dir ${runtime}`, field: 'runtimeDir', fix: errno === 'ENOENT' ? 'it was removed while the sandbox was built: is another manager using it?' : undefined };
  }
  if ((op.verb === 'clone' || op.verb === 'place') && path === config.storage) {
    return { object: `storage ${path}, kept in the VM's view`, field: 'storage', fix: storageFix(config, errno) };
  }
  if ((op.verb === 'clone' || op.verb === 'place') && path !== runtime) {
    const fix = op.verb === 'clone' && errno === 'ENOENT' ? `${path} does not exist: create it, or remove it from the config` : undefined;
    return { object: `${path}, kept in the VM's view (its parent is covered so that no other VM's files show)`, field: keptField(config, path), fix };
  }
  if (op.verb === 'mount' && op.source !== 'proc' && op.data !== STAGE_DATA && (path === posix.dirname(runtime) || path === posix.dirname(config.storage))) {
    return { object: `the view covering ${path} (where other VMs' runtime dirs or storage live)` };
  }
  if (op.verb === 'setattr' && path === '/') {
    return { object: "the host's mount tree (made read-only and nosuid for the VM)", fix: errno === 'ENOSYS' ? 'the kernel lacks mount_setattr(2) (Linux 5.12 or later is needed)' : undefined };
  }
  if (path === '/proc' || path === '/sys') return { object: `${path} (a fresh ${path === '/proc' ? 'proc' : 'sysfs'} for the VM)` };
  if (op.verb === 'mount' && op.target === '/dev' && op.source === '/tmp/dev') return { object: "the VM's /dev (moved from its staging tmpfs)" };
  if (path === '/dev') return { object: "the VM's /dev" };
  if (path === '/tmp') return { object: "the staging tmpfs for the VM's /dev (at /tmp)" };
  const dev = devOf(path);
  if (dev === '/dev') return { object: "the VM's /dev (staging tmpfs at /tmp/dev)" };
  if (dev) {
    const fix = op.verb === 'mount' && op.source === dev && errno === 'ENOENT' ? `${dev} does not exist on this host` : undefined;
    return { object: `${dev} in the VM's /dev`, fix };
  }
  return { object: path };
}

/**
 * The error of a failed mount-plan request, as the mount operation reports it: an init step
 * failure explained (`request`, describeOp's text, is appended for whoever debugs the plan), any
 * other EffectError (the init gone, …) prefixed with the request.
 */
export function explainMountError(config: VmConfig, op: MountOp, request: string, e: EffectError): EffectError {
  const step = (e as EffectError & { step?: unknown }).step;
  if (typeof step !== 'string') return new EffectError('mount', e.errno, `${request}: ${e.message}`);
  const ex = explainMountStep(config, op, step, e.errno);
  return explainedError('mount', e.errno, step, { ...ex, fix: `${ex.fix ? `${ex.fix} ` : ''}(request: ${request})` });
}
