/*
 * Escape probes for test/linux/escape.test.ts, run as a service inside a sandbox. One static
 * binary with subcommands; each attempt prints `<what> rc=<n>` or `<what> rc=-1 errno=<NAME>`:
 *   ptrace-attach PID | ptrace-seize PID   PTRACE_ATTACH / PTRACE_SEIZE a process (detaches on success)
 *   ptrace-child                            control: attach and seize a child of its own
 *   pidfd PID                               pidfd_open + pidfd_send_signal(SIGTERM)
 *   pidfd-child                             control: pidfd_open + pidfd_send_signal(SIGKILL) to its own child
 *   cgmove FILE                             write its own pid into FILE (a cgroup.procs)
 *   ids                                     print real/effective/saved uid, then try setuid(0)
 *   connect PATH                            connect(2) to the named unix socket at PATH
 * A failure that is not the attempt being probed (fork, waitpid, detaching, writing the report)
 * is told on stderr with exit 1, so a broken probe cannot pass for a refused escape.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_NAME "esc"
#include "probe.h"

static void reap(pid_t pid, int *status, int flags) {
    while (waitpid(pid, status, flags) < 0) {
        if (errno != EINTR) die("waitpid");
    }
}

/* The attempt's errno is what is reported; undoing a successful attach must not change it. */
static long do_ptrace(enum __ptrace_request req, pid_t pid) {
    long rc = ptrace(req, pid, 0, 0);
    if (rc != 0) return rc;
    int saved = errno;
    if (req == PTRACE_SEIZE && ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) die("PTRACE_INTERRUPT");
    reap(pid, NULL, __WALL);
    if (ptrace(PTRACE_DETACH, pid, 0, 0) != 0) die("PTRACE_DETACH");
    errno = saved;
    return rc;
}

static pid_t child(void) {
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        /* pause() only returns after a handled signal; none is handled, so it waits for SIGKILL. */
        for (;;) (void)pause();
    }
    return p;
}

static void end_child(pid_t c) {
    if (kill(c, SIGKILL) != 0) die("kill");
    reap(c, NULL, 0);
}

static pid_t pid_arg(int argc, char **argv) {
    if (argc < 3) {
        (void)fprintf(stderr, "esc: %s needs a pid\n", argv[1]);
        exit(2);
    }
    char *end;
    errno = 0;
    long v = strtol(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || v <= 0 || v > INT32_MAX) {
        (void)fprintf(stderr, "esc: not a pid: %s\n", argv[2]);
        exit(2);
    }
    return (pid_t)v;
}

static void ids(const char *prefix) {
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) != 0) die("getresuid");
    say("%sruid=%u euid=%u suid=%u\n", prefix, (unsigned)r, (unsigned)e, (unsigned)s);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "ptrace-attach")) {
        report("ptrace-attach", do_ptrace(PTRACE_ATTACH, pid_arg(argc, argv)));
        return 0;
    }
    if (!strcmp(cmd, "ptrace-seize")) {
        report("ptrace-seize", do_ptrace(PTRACE_SEIZE, pid_arg(argc, argv)));
        return 0;
    }
    if (!strcmp(cmd, "ptrace-child")) {
        pid_t c = child();
        report("ptrace-child-attach", do_ptrace(PTRACE_ATTACH, c));
        report("ptrace-child-seize", do_ptrace(PTRACE_SEIZE, c));
        end_child(c);
        return 0;
    }
    if (!strcmp(cmd, "pidfd")) {
        pid_t target = pid_arg(argc, argv);
        long fd = syscall(SYS_pidfd_open, target, 0);
        report("pidfd_open", fd);
        if (fd >= 0) report("pidfd_send_signal", syscall(SYS_pidfd_send_signal, (int)fd, SIGTERM, NULL, 0));
        return 0;
    }
    if (!strcmp(cmd, "pidfd-child")) {
        pid_t c = child();
        long fd = syscall(SYS_pidfd_open, c, 0);
        report("pidfd-child-open", fd);
        long sent = fd < 0 ? -1 : syscall(SYS_pidfd_send_signal, (int)fd, SIGKILL, NULL, 0);
        report("pidfd-child-signal", sent);
        /* Had the signal not been sent, the wait below would never end. */
        if (sent != 0 && kill(c, SIGKILL) != 0) die("kill");
        int st = 0;
        reap(c, &st, 0);
        say("pidfd-child-status %s %d\n", WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return 0;
    }
    if (!strcmp(cmd, "connect")) {
        /* connect(2) to a named unix socket: what Landlock does not govern. */
        if (argc < 3 || strlen(argv[2]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return 2;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket");
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        memcpy(a.sun_path, argv[2], strlen(argv[2]) + 1);
        report("connect", connect(fd, (struct sockaddr *)&a, sizeof a));
        if (close(fd) < 0) die("close");
        return 0;
    }
    if (!strcmp(cmd, "cgmove")) {
        if (argc < 3) return 2;
        /* Write our own pid into a cgroup.procs file: the move cgroup v2 would do. */
        FILE *f = fopen(argv[2], "w");
        if (!f) {
            report("cgmove-open", -1);
            return 0;
        }
        int n = fprintf(f, "%d\n", (int)getpid());
        int werr = errno;
        int c = fclose(f);
        if (n < 0 || c != 0) {
            if (n < 0) errno = werr;
            report("cgmove-write", -1);
            return 0;
        }
        report("cgmove-write", 0);
        return 0;
    }
    if (!strcmp(cmd, "ids")) {
        ids("");
        report("setuid0", setuid(0));
        ids("after ");
        return 0;
    }
    return 2;
}
