// A service's seccomp filter: the policy, decided here and nowhere else. The init (native/spawn.c)
// builds it with libseccomp from the spawn request's `sc=` fields (effects/linux/spawnRequest.ts)
// and loads it last before execve; it resolves each syscall NAME for its own architecture and
// refuses a name it does not know (err <id> 22 sc), so a typo can never leave a syscall open.
//
// Allow by default, deny a list. An allow-list would be tighter, but a VMM's syscall surface is
// large and depends on its build, devices and options (QEMU alone uses some 150 syscalls, more
// with io_uring, vhost or a different accelerator); one missing entry kills the VM at some later
// device access. What is denied here is what a compromised daemon uses to escape or to harm
// others, and what a VMM or virtiofsd never calls (docs/threat-model.md, "seccomp"). Syscalls of
// another architecture (the i386 `int 0x80` table, x32) are not covered by a deny list, so the
// init kills the process on any of them (libseccomp's bad-arch action).
//
// `services[i].seccomp.allow` re-enables a denied syscall by name (config/service.ts checks the
// names against SECCOMP_DENIABLE).

import type { Refuse } from './service.js';

export const ERRNO = { EPERM: 1, ENOSYS: 38 } as const;

/** x86_64 / aarch64 uapi values the conditions below test (the flags argument is arg 0 on both). */
const CLONE_NEWUSER = 0x10000000;
const PRIO_PROCESS = 0;
const IOPRIO_WHO_PROCESS = 1;

/** An argument condition: arg[index] != value, or (arg[index] & mask) == value. */
export type SeccompArg = { index: number; op: 'ne'; value: number } | { index: number; op: 'maskedEq'; mask: number; value: number };

/** One rule: the syscall answers `errno` (instead of running) when `arg` holds, or always without one. */
export interface SeccompRule {
  syscall: string;
  errno: number;
  arg?: SeccompArg;
}

/** The filter: allow by default, these rules deny. */
export interface SeccompPlan {
  rules: SeccompRule[];
}

const always = (syscall: string, why: string, errno: number = ERRNO.EPERM) => ({ rules: [{ syscall, errno }], why });
/** Denied unless aimed at the caller itself (pid argument 0 means "self" for all of these). */
const selfOnly = (syscall: string, why: string, pidArg = 0) => ({ rules: [{ syscall, errno: ERRNO.EPERM, arg: { index: pidArg, op: 'ne' as const, value: 0 } }], why });
/** Denied unless (which, who) is (`which`, 0): the caller itself, not a process group or a uid. */
const whichSelfOnly = (syscall: string, which: number, why: string) => ({
  rules: [
    { syscall, errno: ERRNO.EPERM, arg: { index: 0, op: 'ne' as const, value: which } },
    { syscall, errno: ERRNO.EPERM, arg: { index: 1, op: 'ne' as const, value: 0 } },
  ],
  why,
});
/** Denied when the flags argument asks for a new user namespace. */
const newUserNs = (syscall: string, why: string) => ({
  rules: [{ syscall, errno: ERRNO.EPERM, arg: { index: 0, op: 'maskedEq' as const, mask: CLONE_NEWUSER, value: CLONE_NEWUSER } }],
  why,
});

/**
 * The default deny list, by syscall name, each with the reason (shown in docs/threat-model.md).
 * The keys are the names `seccomp.allow` accepts.
 */
export const SECCOMP_DENY: Record<string, { rules: SeccompRule[]; why: string }> = {
  // New user namespaces: a full capability set in a fresh namespace (nf_tables, mounts, ...): the
  // kernel's most-exploited attack surface. Other namespace flags need CAP_SYS_ADMIN anyway.
  unshare: newUserNs('unshare', 'with CLONE_NEWUSER: a new user namespace holds every capability'),
  clone: newUserNs('clone', 'with CLONE_NEWUSER, as unshare'),
  // clone3's flags are in memory, which seccomp cannot read: ENOSYS makes glibc fall back to
  // clone (threads, posix_spawn), whose flags the rule above checks.
  clone3: always('clone3', 'its flags cannot be checked (they are in memory); ENOSYS makes libc fall back to clone', ERRNO.ENOSYS),
  setns: always('setns', 'joins another namespace; no VMM or virtiofsd needs it'),
  // Keyrings: the manager's and the uid's keys (a fresh session keyring is joined anyway).
  add_key: always('add_key', 'keyrings are shared by uid across VMs and outlive them'),
  request_key: always('request_key', 'as add_key'),
  keyctl: always('keyctl', 'as add_key: reads, links or leaves keys in the uid\'s user keyring'),
  // Resource and scheduling changes aimed at another process of the same uid (Landlock does not
  // govern them): allowed on the caller itself only.
  prlimit64: selfOnly('prlimit64', 'on another process: cripple a same-uid sibling (address space, CPU time, open files)'),
  setpriority: whichSelfOnly('setpriority', PRIO_PROCESS, 'other than PRIO_PROCESS of itself: renice a sibling, or every process of the uid (PRIO_USER)'),
  sched_setaffinity: selfOnly('sched_setaffinity', 'on another process: pin a sibling to one CPU'),
  sched_setscheduler: selfOnly('sched_setscheduler', 'on another process: SCHED_IDLE for a sibling'),
  sched_setparam: selfOnly('sched_setparam', 'on another process, as sched_setscheduler'),
  sched_setattr: selfOnly('sched_setattr', 'on another process, as sched_setscheduler'),
  ioprio_set: whichSelfOnly('ioprio_set', IOPRIO_WHO_PROCESS, 'other than IOPRIO_WHO_PROCESS of itself: idle I/O priority for a sibling or the whole uid'),
  // Never needed by a VMM or virtiofsd; each is kernel attack surface or reaches other processes.
  ptrace: always('ptrace', 'debugging other processes (Landlock already limits it to its own domain)'),
  process_vm_readv: always('process_vm_readv', 'reads another process\'s memory'),
  process_vm_writev: always('process_vm_writev', 'writes another process\'s memory'),
  pidfd_getfd: always('pidfd_getfd', 'steals another process\'s file descriptors'),
  kcmp: always('kcmp', 'compares other processes\' kernel objects (an information leak)'),
  bpf: always('bpf', 'eBPF: a large kernel attack surface'),
  perf_event_open: always('perf_event_open', 'performance counters: kernel attack surface and side channels'),
  userfaultfd: always('userfaultfd', 'only for QEMU postcopy migration and background snapshots; a classic exploit aid (stalls kernel copies)'),
  kexec_load: always('kexec_load', 'loads a new kernel'),
  kexec_file_load: always('kexec_file_load', 'as kexec_load'),
  init_module: always('init_module', 'loads kernel modules'),
  finit_module: always('finit_module', 'as init_module'),
  delete_module: always('delete_module', 'unloads kernel modules'),
  open_by_handle_at: always('open_by_handle_at', 'opens files by handle past every path check (CAP_DAC_READ_SEARCH); virtiofsd uses it only with --inode-file-handles (Rust virtiofsd; off by default)'),
  iopl: always('iopl', 'raw I/O port access'),
  ioperm: always('ioperm', 'raw I/O port access'),
  acct: always('acct', 'process accounting of the host'),
  swapon: always('swapon', 'host swap'),
  swapoff: always('swapoff', 'host swap'),
  reboot: always('reboot', 'the host\'s reboot'),
  syslog: always('syslog', 'the kernel log (addresses, other VMs\' messages)'),
  mount: always('mount', 'mounting (a service has no CAP_SYS_ADMIN; virtiofsd -o sandbox=chroot does not mount)'),
  umount2: always('umount2', 'as mount'),
  pivot_root: always('pivot_root', 'as mount'),
  fsopen: always('fsopen', 'the new mount API, as mount'),
  fsconfig: always('fsconfig', 'as fsopen'),
  fsmount: always('fsmount', 'as fsopen'),
  fspick: always('fspick', 'as fsopen'),
  move_mount: always('move_mount', 'as fsopen'),
  open_tree: always('open_tree', 'as fsopen'),
  mount_setattr: always('mount_setattr', 'as fsopen (Landlock does not govern it)'),
  quotactl: always('quotactl', 'host filesystem quotas'),
  quotactl_fd: always('quotactl_fd', 'as quotactl'),
  settimeofday: always('settimeofday', 'the host clock'),
  clock_settime: always('clock_settime', 'the host clock'),
  clock_adjtime: always('clock_adjtime', 'the host clock'),
  vhangup: always('vhangup', 'hangs up the terminal'),
};

/** The names `seccomp.allow` accepts. */
export const SECCOMP_DENIABLE: readonly string[] = Object.keys(SECCOMP_DENY);

/** The service's filter: every default rule except those of the syscalls it allows; null if nothing is left. */
export function planSeccomp(allow: readonly string[], field: string, refuse: Refuse): SeccompPlan | null {
  allow.forEach((name, j) => {
    if (!Object.hasOwn(SECCOMP_DENY, name)) refuse(`${field}[${j}]`, `${JSON.stringify(name)} is not a syscall the default filter denies; it can re-enable only: ${SECCOMP_DENIABLE.join(', ')}`);
  });
  const rules = Object.entries(SECCOMP_DENY).filter(([name]) => !allow.includes(name)).flatMap(([, d]) => d.rules);
  return rules.length ? { rules } : null;
}
