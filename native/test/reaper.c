/*
 * A subreaper for test/linux/leak.test.ts and parent-death.test.ts: runs a command and reports,
 * one line each on stdout, `child <pid>` and then `reaped <pid> exit <code>` /
 * `reaped <pid> signal <signo>` for every process it reaps (its own child and every orphan
 * re-parented to it); it exits when it has no child left. The test sees an orphaned init reaped
 * at once, instead of waiting for the host's PID 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The test parses the lines as they come, so each is flushed; one it cannot read is a failure. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    if (n < 0 || fflush(stdout) != 0) {
        perror("reaper: writing stdout");
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        (void)fprintf(stderr, "usage: reaper PROGRAM [ARG...]\n");
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        perror("reaper: PR_SET_CHILD_SUBREAPER");
        return 1;
    }
    pid_t p = fork();
    if (p < 0) {
        perror("reaper: fork");
        return 1;
    }
    if (p == 0) {
        execv(argv[1], argv + 1);
        perror("reaper: execv");
        _exit(127);
    }
    say("child %d\n", (int)p);
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == ECHILD) return 0;
            perror("reaper: waitpid");
            return 1;
        }
        if (WIFEXITED(st)) say("reaped %d exit %d\n", (int)w, WEXITSTATUS(st));
        else say("reaped %d signal %d\n", (int)w, WTERMSIG(st));
    }
}
