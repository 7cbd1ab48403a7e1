/*
 * seccomp and keyring probes for test/linux/seccomp.test.ts, run as a service inside a sandbox (and
 * on the host, as the positive controls). One static binary with subcommands; each attempt prints
 * `<what> rc=<n>` or `<what> rc=-1 errno=<NAME>`:
 *   unshare-user            unshare(CLONE_NEWUSER)
 *   clone-user              clone(CLONE_NEWUSER|SIGCHLD): the child exits at once
 *   clone3                  clone3 without flags: the child exits at once
 *   thread                  pthread_create + join (glibc falls back to clone when clone3 is ENOSYS)
 *   i386-unshare            unshare(CLONE_NEWUSER) through the i386 table (int 0x80)
 *   sibling PID             prlimit(RLIMIT_NOFILE 3), setpriority(PRIO_PROCESS, 19), sched_setaffinity
 *                           (CPU 0), sched_setscheduler(SCHED_IDLE), ioprio_set(idle) on PID (0 = itself),
 *                           then setpriority(PRIO_USER, 0): every process of the uid
 *   session                 the id of its session keyring (KEYCTL_GET_KEYRING_ID @s)
 *   keyread ID              KEYCTL_READ of key ID; prints the payload on success
 *   addkey                  add_key("user", "probe", ...) to its session keyring
 * A failure that is not the attempt being probed (fork, waitpid, writing the report) is told on
 * stderr with exit 1, so a broken probe cannot pass for a refused attempt.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/keyctl.h>
#include <linux/sched.h>

#define PROBE_NAME "scp"
#include "probe.h"

/* A child made by a raw clone: reap it (it exits 0 at once). The report's errno is kept. */
static void reap_child(long pid) {
    if (pid <= 0) return;
    int e = errno, st;
    while (waitpid((pid_t)pid, &st, 0) < 0)
        if (errno != EINTR) die("waitpid");
    errno = e;
}

static void *thread_main(void *arg) { return arg; }

static long parse_pid(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0) {
        (void)fprintf(stderr, "scp: bad pid %s\n", s);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        (void)fprintf(stderr, "usage: seccomp-probe SUBCOMMAND [ARG]\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "unshare-user")) {
        report("unshare-user", unshare(CLONE_NEWUSER));
    } else if (!strcmp(cmd, "clone-user")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        report("clone-user", pid);
        reap_child(pid);
    } else if (!strcmp(cmd, "clone3")) {
        struct clone_args ca = {.exit_signal = SIGCHLD};
        long pid = syscall(SYS_clone3, &ca, sizeof ca);
        if (pid == 0) _exit(0);
        report("clone3", pid);
        reap_child(pid);
    } else if (!strcmp(cmd, "thread")) {
        pthread_t t;
        int e = pthread_create(&t, NULL, thread_main, NULL);
        if (e == 0 && (e = pthread_join(t, NULL)) != 0) die("pthread_join");
        errno = e;
        report("thread", e ? -1 : 0);
    } else if (!strcmp(cmd, "i386-unshare")) {
#if defined(__x86_64__)
        long rc;
        /* i386 __NR_unshare is 310; int 0x80 takes the number in eax and arg 0 in ebx. */
        __asm__ volatile("int $0x80" : "=a"(rc) : "a"(310L), "b"((long)CLONE_NEWUSER) : "memory");
        if (rc < 0 && rc > -4096) {
            errno = (int)-rc;
            rc = -1;
        }
        report("i386-unshare", rc);
#else
        (void)fprintf(stderr, "scp: i386-unshare is x86_64 only\n");
        return 1;
#endif
    } else if (!strcmp(cmd, "sibling") && argc == 3) {
        /* PRIO_USER of root would renice every root process of the host. */
        if (getuid() == 0) {
            (void)fprintf(stderr, "scp: sibling refuses to run as root\n");
            return 1;
        }
        pid_t pid = (pid_t)parse_pid(argv[2]);
        struct rlimit rl = {3, 3};
        report("prlimit", prlimit(pid, RLIMIT_NOFILE, &rl, NULL));
        report("setpriority", setpriority(PRIO_PROCESS, (id_t)pid, 19));
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        report("affinity", sched_setaffinity(pid, sizeof set, &set));
        struct sched_param sp = {.sched_priority = 0};
        report("sched-idle", sched_setscheduler(pid, SCHED_IDLE, &sp));
        /* IOPRIO_WHO_PROCESS = 1; IOPRIO_CLASS_IDLE (3) << 13. */
        report("ioprio", syscall(SYS_ioprio_set, 1, pid, 3 << 13));
        report("setpriority-user", setpriority(PRIO_USER, 0, 19));
    } else if (!strcmp(cmd, "session")) {
        report("session", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    } else if (!strcmp(cmd, "keyread") && argc == 3) {
        char buf[256];
        long n = syscall(SYS_keyctl, KEYCTL_READ, parse_pid(argv[2]), buf, sizeof buf - 1);
        report("keyread", n);
        if (n >= 0) {
            buf[n < (long)sizeof buf - 1 ? n : (long)sizeof buf - 1] = '\0';
            say("payload=%s\n", buf);
        }
    } else if (!strcmp(cmd, "addkey")) {
        report("addkey", syscall(SYS_add_key, "user", "probe", "probe-payload", 13, KEY_SPEC_SESSION_KEYRING));
    } else {
        (void)fprintf(stderr, "scp: unknown subcommand %s\n", cmd);
        return 2;
    }
    return 0;
}
