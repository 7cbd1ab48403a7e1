/* Small helpers shared by vmsandbox-init's two halves (vmsandbox-init.c: PID 1 and the protocol;
 * spawn.c: the spawner). Header-only: each is a few lines. */
#ifndef VMSANDBOX_UTIL_H
#define VMSANDBOX_UTIL_H

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* close(2) failing (EINTR, EIO on a last reference) still releases the descriptor on Linux: say
 * so and go on. PID 1 never dies of it (its death would take the whole VM down). */
static inline void close_or_warn(int fd, const char *what) {
    if (close(fd) < 0) fprintf(stderr, "vmsandbox-init: close(%s): %s (descriptor released)\n", what, strerror(errno));
}

/* An unsigned number in `base`, the whole string. strtoull alone would take leading blanks, a
 * sign ("-1" is ULLONG_MAX: every bit of a mask) and an empty string; none of these is a number. */
static inline int parse_ul(const char *s, int base, unsigned long long *out) {
    if (!isalnum((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0') return -1;
    *out = v;
    return 0;
}

static inline int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (*s == '\0') return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

#endif
