/* libvmsandbox: the few calls the manager (Node, through ffi-rs) cannot make comfortably itself.
 * Every function returns a non-negative result or -errno; none keeps state. Call
 * vms_clone_init() from Node's main thread only: PR_SET_PDEATHSIG fires when the parent *thread*
 * exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

/* A socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC): returns (fd0 << 32) | fd1, or -errno. */
int64_t vms_socketpair(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
    return ((int64_t)sv[0] << 32) | (int64_t)sv[1];
}

/* open(path, O_PATH|O_DIRECTORY|O_CLOEXEC): a cgroup directory handle for CLONE_INTO_CGROUP. */
int64_t vms_open_dir_path(const char *path) {
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int64_t vms_close(int64_t fd) {
    return close((int)fd) < 0 ? -errno : 0;
}

/* Set IFF_UP on `lo` of the caller's network namespace (a new one has it down, so even 127.0.0.1
 * is unreachable). Plain syscalls only: this runs in init_child. 0, or -1 with errno set. */
static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", sizeof "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) goto fail;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) goto fail;
    return close(s);
fail:;
    int e = errno;
    (void)close(s); /* the ioctl's errno is the one that tells */
    errno = e;
    return -1;
}

/* Child side of vms_clone_init: async-signal-safe calls only (we are a copy of a threaded process). */
static void init_child(const char *path, int ctl, int cgdir, int errw, int loopback) {
    int e;
    const char *step;
    /* Move the error pipe out of the way of fds 0, 3 and 4 (it stays CLOEXEC). */
    int hi = fcntl(errw, F_DUPFD_CLOEXEC, 16);
    if (hi >= 0) errw = hi;
    /* Before the init runs, so it never sees the VM's network without its loopback. */
    if (loopback && loopback_up() < 0) { step = "loopback-up"; goto fail; }
    /* Move the fds above everything we place, then place them. */
    int c = fcntl(ctl, F_DUPFD_CLOEXEC, 16);
    if (c < 0) { step = "dup-control"; goto fail; }
    int g = -1;
    if (cgdir >= 0) {
        g = fcntl(cgdir, F_DUPFD_CLOEXEC, 16);
        if (g < 0) { step = "dup-cgroup"; goto fail; }
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) { step = "open-devnull"; goto fail; }
    if (dup2(devnull, 0) < 0) { step = "dup2-stdin"; goto fail; }
    /* Node marks its stdout/stderr close-on-exec: clear that, so the init and the services write
     * to the manager's stdout/stderr (s6-log) as documented. */
    for (int fd = 1; fd <= 2; fd++)
        if (fcntl(fd, F_SETFD, 0) < 0 && errno != EBADF) { step = "stdio-cloexec"; goto fail; }
    if (dup2(c, VMS_CONTROL_FD) < 0) { step = "dup2-control"; goto fail; }
    if (g >= 0 && dup2(g, VMS_CGROUP_FD) < 0) { step = "dup2-cgroup"; goto fail; }
    if (g < 0) close(VMS_CGROUP_FD); /* EBADF is fine: there must be nothing at fd 4 */
    /* Everything else closes at exec (the error pipe with it). */
    if (syscall(VMS_NR_close_range, (unsigned)(g >= 0 ? VMS_CGROUP_FD + 1 : VMS_CONTROL_FD + 1), ~0U,
                4U /* CLOSE_RANGE_CLOEXEC */) < 0) {
        step = "close-range";
        goto fail;
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) { step = "pdeathsig"; goto fail; }
    char *const argv[] = {(char *)"vmsandbox-init", NULL};
    char *const envp[] = {(char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(path, argv, envp);
    step = "execve";
fail:
    e = errno;
    {
        char msg[40];
        size_t i = 0;
        memcpy(msg, &e, sizeof e);
        for (; step[i] && i < sizeof msg - sizeof e - 1; i++) msg[sizeof e + i] = step[i];
        msg[sizeof e + i] = '\0';
        ssize_t r = write(errw, msg, sizeof e + i + 1);
        (void)r;
    }
    _exit(127);
}

/* clone3(CLONE_NEWPID|CLONE_NEWNS|CLONE_PIDFD [|CLONE_INTO_CGROUP] [|nsflags]) and exec the init in
 * the child, with `ctl` at fd 3 and `cgdir` (or nothing, if < 0) at fd 4. `initcg`, if >= 0, is the
 * O_PATH fd of the init's cgroup leaf: the init starts in it. `nsflags` are the further namespaces
 * the plan asks for (only CLONE_NEWIPC and CLONE_NEWNET are accepted); `loopback` non-zero brings
 * `lo` of the new network namespace up before the exec (only with CLONE_NEWNET). Returns
 * (pidfd << 32) | pid, or -errno when the arguments, the clone, the loopback or the exec failed
 * (the failed child is reaped). */
int64_t vms_clone_init(const char *path, int64_t ctl, int64_t cgdir, int64_t initcg, int64_t nsflags,
                       int64_t loopback) {
    /* Anything else would change what the init is (a user namespace, a shared pid namespace): the
     * plan cannot ask for it by mistake. */
    if (nsflags < 0 || ((uint64_t)nsflags & ~(VMS_CLONE_NEWIPC | VMS_CLONE_NEWNET)) != 0) return -EINVAL;
    if (loopback && !((uint64_t)nsflags & VMS_CLONE_NEWNET)) return -EINVAL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -errno;
    int pidfd = -1;
    struct vms_clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = VMS_CLONE_NEWPID | VMS_CLONE_NEWNS | VMS_CLONE_PIDFD | (uint64_t)nsflags;
    ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
    ca.exit_signal = SIGCHLD;
    if (initcg >= 0) {
        ca.flags |= VMS_CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)initcg;
    }
    long pid = syscall(VMS_NR_clone3, &ca, sizeof ca);
    if (pid == 0) {
        close(p[0]);
        init_child(path, (int)ctl, (int)cgdir, p[1], loopback != 0);
    }
    int e = errno;
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -e;
    }
    char msg[40];
    ssize_t got;
    do got = read(p[0], msg, sizeof msg);
    while (got < 0 && errno == EINTR);
    int re = errno;
    close(p[0]);
    if (got == 0) return ((int64_t)pidfd << 32) | (int64_t)pid;
    siginfo_t si;
    if (got < 0) {
        /* Whether the exec worked is unknown, so the child may be running the init: kill it rather
         * than wait for an exit that might never come, then reap it and report the read's errno. */
        if (syscall(VMS_NR_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH) {
            close(pidfd);
            return -re;
        }
        while (waitid((idtype_t)3 /* P_PIDFD */, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {
        }
        close(pidfd);
        return -re;
    }
    /* The exec failed (the child wrote why, then exited): reap it through its pidfd, report its errno. */
    while (waitid((idtype_t)3 /* P_PIDFD */, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    close(pidfd);
    if (got < (ssize_t)sizeof e) return -EIO;
    memcpy(&e, msg, sizeof e);
    return -e;
}

/* waitid(P_PIDFD, pidfd, WEXITED [|WNOHANG]). Returns -errno; 0 if WNOHANG and still running;
 * otherwise 0x10000 | (si_code << 8) | si_status (si_code: 1 exited, 2 killed, 3 dumped). */
int64_t vms_waitid_pidfd(int64_t pidfd, int64_t nohang) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int opts = WEXITED | (nohang ? WNOHANG : 0);
    if (waitid((idtype_t)3 /* P_PIDFD */, (id_t)pidfd, &si, opts) < 0) return -errno;
    if (si.si_pid == 0) return 0;
    return 0x10000 | ((int64_t)(si.si_code & 0xff) << 8) | (int64_t)(si.si_status & 0xff);
}
