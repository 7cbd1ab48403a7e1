/*
 * What every probe in native/test/ shares: one line per attempt, flushed at once (the test reads
 * the file while the VM may be torn down), and exit 1 with the reason on stderr for a failure that
 * is not the attempt being probed, so a broken probe cannot pass for a refused one.
 * A probe defines PROBE_NAME (its prefix on stderr) before including this.
 */
#ifndef VMS_PROBE_H
#define VMS_PROBE_H
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what) {
    const char *name = strerrorname_np(errno);
    /* Nothing is left to do if stderr fails too: the exit code still tells. */
    (void)fprintf(stderr, PROBE_NAME ": %s: %s\n", what, name ? name : "unknown errno");
    exit(1);
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    if (n < 0 || fflush(stdout) != 0) die("writing stdout");
}

/* `<what> rc=<n>`, or `<what> rc=-1 errno=<NAME>`. */
__attribute__((unused)) static void report(const char *what, long rc) {
    if (rc >= 0) {
        say("%s rc=%ld\n", what, rc);
        return;
    }
    const char *name = strerrorname_np(errno);
    if (name) say("%s rc=-1 errno=%s\n", what, name);
    else say("%s rc=-1 errno=%d\n", what, errno);
}
#endif
