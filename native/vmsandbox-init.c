/* vmsandbox-init: PID 1 of a VM's PID + mount namespace.
 *
 * It carries no policy. It executes the manager's requests, reaps every process of the namespace,
 * reports service exits, and dies with the manager. Single-threaded; every return value is checked.
 * This file is PID 1: the protocol, the mount requests, the registry of services and reaping; the
 * spawner (a spawn request's fields, the service's setup up to execve) is spawn.c.
 *
 * Started by libvmsandbox's vms_clone_init() with:
 *   fd 0  /dev/null            fd 1, 2  the manager's stdout/stderr (the init's own diagnostics
 *                                       only: each service's fds 1, 2 are pipes to the init)
 *   fd 3  control socket (AF_UNIX SOCK_STREAM, one end of a socketpair; the manager holds the other)
 *   fd 4  O_PATH|O_DIRECTORY fd of the VM's cgroup directory (optional; absent = no placement)
 *   PR_SET_PDEATHSIG(SIGKILL) already set by the shim (the parent is the manager's main thread).
 *
 * PROTOCOL (version 1), both directions: one message per line ('\n'-terminated, at most 64 KiB).
 * A line is tokens separated by one space. Every token is percent-encoded: any byte outside
 * [A-Za-z0-9._/:=,+@-] is written as %XX (two hex digits); the empty string is written as "~".
 *
 * init -> manager, unsolicited:
 *   hello <version> <pid>                 sent once, after / was made MS_SLAVE|MS_REC
 *   exit <service> <pid> exited <status>  a service exited (pid as seen in the namespace)
 *   exit <service> <pid> killed <signo>   a service was killed by a signal
 *   out <service> stdout|stderr whole|cut <line>
 *                                         one line a service wrote (without its newline); cut: it
 *                                         was longer than the spawn's outline= and the rest of it,
 *                                         up to its newline, was dropped
 *   outdrop <service> stdout|stderr <count>
 *                                         lines dropped because the control socket's buffer was
 *                                         full (PID 1 never waits on a service's output)
 *   outlimit <service> <count>            lines (stdout and stderr together) dropped because the
 *                                         service wrote more than the spawn's outrate= in one
 *                                         one-second window; sent once the window has ended (or
 *                                         at the streams' EOF), before the service's next line
 * manager -> init, requests, each answered by exactly one reply in request order:
 *   ping <id>
 *   mkdir <id> <path> <mode-octal>                      (EEXIST is success)
 *   touch <id> <path> <mode-octal>                      create an empty file (mount point)
 *   symlink <id> <target> <linkpath>
 *   mknod <id> <source> <path> <mode-octal> <uid> <gid>  a node of the same type and device number
 *                                                       as the host node <source>, owned by uid:gid
 *   mount <id> <source> <target> <fstype> <flags> <data>  mount(2); "~" = NULL; flags decimal
 *   umount <id> <path> <flags>                          umount2(2)
 *   setattr <id> <path> <set> <clr> <recursive 0|1>     mount_setattr(2)
 *   clone <id> <path> <slot>                            keep a detached copy of the mount tree at
 *                                                       path in slot 0..63 (open_tree, recursive)
 *   place <id> <slot> <path>                            attach the slot's tree at path, on a new
 *                                                       mount point of its type (dir or empty file)
 *   kill <id> <service> <signo>                         signal a live service (never a reaped pid)
 *   spawn <id> key=value...                             see spawn.c for the keys; one more,
 *                                                       outrate=<lines per second, 1..1000000>,
 *                                                       is PID 1's (it bounds the streams it
 *                                                       reads) and taken out before spawn.c
 *                                                       parses the rest: at most that many lines
 *                                                       of the service are forwarded in each
 *                                                       one-second window, the rest counted and
 *                                                       reported as outlimit. Absent: no bound
 *                                                       here. Malformed or repeated: err EINVAL
 *                                                       outrate
 * init -> manager, replies:
 *   ok <id> [<pid>]
 *   err <id> <errno> <step>                            errno as a decimal number, step a word
 * Every request whose id can be read gets exactly one reply, a malformed one too: a token that is
 * not valid encoding (EINVAL, request-token), more than MAX_TOKENS tokens (E2BIG, request-tokens),
 * an unknown verb (ENOSYS, verb), a line longer than MAX_LINE (E2BIG, request-length: answered and
 * dropped up to its newline; the manager refuses to send one). None of them ends PID 1; nor does a
 * failing close(2).
 *
 * When the control socket reports EOF, POLLHUP or an error the manager is gone: the init exits,
 * and the kernel SIGKILLs everything else in the PID namespace. (getppid() is 0 in a new PID
 * namespace, so the socket, not the parent pid, is the race-free liveness check.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "spawn.h"
#include "tree.h"
#include "util.h"

#define PROTO_VERSION 1
#define MAX_LINE 65536
#define MAX_TOKENS 4096
#define MAX_SERVICES 64
#define MAX_NAME 64

struct service {
    pid_t pid; /* 0 = free slot */
    char name[MAX_NAME];
};

static struct service services[MAX_SERVICES];
static int have_cgroup_fd;

/* A service's stdout or stderr: the read end of its pipe, read in the loop below, split into
 * lines and forwarded as `out` messages. It outlives the service while a descendant holds the
 * write end (closed at EOF). */
#define MAX_STREAMS (2 * MAX_SERVICES)
/* The highest outrate= (lines per second) a spawn may ask for. */
#define MAX_OUT_RATE 1000000
#define RATE_WINDOW_MS 1000

/* A service's output rate bound (outrate=), shared by its two streams, which may outlive it: a
 * line past `limit` in the current window is not even encoded, only counted, and the count goes
 * to the manager once the window has ended (outlimit). So a flooding service costs the manager at
 * most `limit` lines a second to parse, whatever it writes. */
struct outrate {
    int refs;                   /* streams using it; 0 = free */
    unsigned limit;             /* lines per window */
    long long start;            /* the window's start (ms, CLOCK_MONOTONIC) */
    unsigned long long lines;   /* lines forwarded in this window */
    unsigned long long dropped; /* lines dropped and not reported yet */
    char name[MAX_NAME];
};
static struct outrate rates[MAX_STREAMS]; /* each holds >= 1 stream: never exhausted */
static long long now_ms;                  /* CLOCK_MONOTONIC, read once per round of the loop */

struct stream {
    int fd;     /* -1 = free */
    pid_t pid;  /* the service's, to drain the pipe before its exit report */
    int which;  /* 0 stdout, 1 stderr */
    char name[MAX_NAME];
    size_t limit;              /* outline= */
    size_t used;               /* bytes of an unfinished line in buf */
    int skipping;              /* dropping the rest of a line cut at limit */
    unsigned long long dropped; /* lines not sent: the control socket's buffer was full */
    struct outrate *rate;       /* NULL: no outrate= */
    char buf[MAX_OUT_LINE + 1];
};
static struct stream streams[MAX_STREAMS];

/* Output messages wait here, sent without blocking; what does not fit is dropped and counted. Every
 * other message is sent after it (send_msg flushes it first), so lines never split a reply. */
#define TX_CAP (1 << 17)
static char tx[TX_CAP];
static size_t tx_used;

static void die(const char *what) {
    /* stderr is the manager's log. */
    fprintf(stderr, "vmsandbox-init: %s: %s\n", what, strerror(errno));
    _exit(111);
}

/* ---------- encoding ---------- */

static int safe_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '/' || c == ':' || c == '=' || c == ',' || c == '+' ||
           c == '@' || c == '-';
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode a token in place. Returns 0, or -1 on a malformed token (or an embedded NUL). */
static int decode(char *s) {
    if (strcmp(s, "~") == 0) {
        s[0] = '\0';
        return 0;
    }
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%') {
            int hi = hexval(r[1]);
            int lo = hi < 0 ? -1 : hexval(r[2]);
            if (hi < 0 || lo < 0) return -1;
            int v = hi * 16 + lo;
            if (v == 0) return -1;
            *w++ = (char)v;
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return 0;
}

/* Append an encoded token of tlen bytes (a NUL byte too: %00) to out (size n, used *len).
 * Returns -1 if it does not fit. */
static int encode_bytes(char *out, size_t n, size_t *len, const char *tok, size_t tlen) {
    static const char hex[] = "0123456789ABCDEF";
    if (*len > 0) {
        if (*len + 1 >= n) return -1;
        out[(*len)++] = ' ';
    }
    if (tlen == 0) {
        if (*len + 1 >= n) return -1;
        out[(*len)++] = '~';
    }
    for (const unsigned char *p = (const unsigned char *)tok; p < (const unsigned char *)tok + tlen; p++) {
        if (safe_char(*p)) {
            if (*len + 1 >= n) return -1;
            out[(*len)++] = (char)*p;
        } else {
            if (*len + 3 >= n) return -1;
            out[(*len)++] = '%';
            out[(*len)++] = hex[*p >> 4];
            out[(*len)++] = hex[*p & 15];
        }
    }
    out[*len] = '\0';
    return 0;
}

static int encode_append(char *out, size_t n, size_t *len, const char *tok) {
    return encode_bytes(out, n, len, tok, strlen(tok));
}

/* Send what tx holds: without waiting (block = 0: what the socket does not take now stays for the
 * loop's POLLOUT), or all of it (block = 1, before another message). */
static void tx_flush(int block) {
    size_t off = 0;
    while (off < tx_used) {
        ssize_t r = send(VMS_CONTROL_FD, tx + off, tx_used - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                if (!block) break;
                struct pollfd p = {.fd = VMS_CONTROL_FD, .events = POLLOUT};
                if (poll(&p, 1, -1) < 0 && errno != EINTR) die("poll(control, POLLOUT)");
                continue;
            }
            _exit(0); /* EPIPE/ECONNRESET: the manager died */
        }
        off += (size_t)r;
    }
    memmove(tx, tx + off, tx_used - off);
    tx_used -= off;
}

/* Queue one message for tx_flush, or return -1 if tx has no room for it. */
static int tx_queue(const char *msg, size_t len) {
    if (len > TX_CAP - tx_used) return -1;
    memcpy(tx + tx_used, msg, len);
    tx_used += len;
    return 0;
}

/* Send one message made of the given tokens. A failure to send means the manager is gone. */
static void send_msg(const char *const *toks, int ntoks) {
    tx_flush(1);
    char buf[4096];
    size_t len = 0;
    for (int i = 0; i < ntoks; i++) {
        if (encode_append(buf, sizeof buf - 1, &len, toks[i]) < 0) {
            fprintf(stderr, "vmsandbox-init: message too long, dropped\n");
            return;
        }
    }
    buf[len++] = '\n';
    size_t off = 0;
    while (off < len) {
        ssize_t r = send(VMS_CONTROL_FD, buf + off, len - off, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {.fd = VMS_CONTROL_FD, .events = POLLOUT};
                if (poll(&p, 1, -1) < 0 && errno != EINTR) die("poll(control, POLLOUT)");
                continue;
            }
            /* EPIPE/ECONNRESET: the manager died. Exiting takes the namespace down with us. */
            _exit(0);
        }
        off += (size_t)r;
    }
}

static void reply_ok(const char *id, long pid) {
    if (pid < 0) {
        const char *t[] = {"ok", id};
        send_msg(t, 2);
    } else {
        char p[32];
        snprintf(p, sizeof p, "%ld", pid);
        const char *t[] = {"ok", id, p};
        send_msg(t, 3);
    }
}

static void reply_err(const char *id, int err, const char *step) {
    char e[32];
    snprintf(e, sizeof e, "%d", err);
    const char *t[] = {"err", id, e, step};
    send_msg(t, 4);
}

/* ---------- mount requests ---------- */

static void do_mkdir(char **tok, int n) {
    unsigned long long mode;
    if (n != 4 || parse_ul(tok[3], 8, &mode) < 0) return reply_err(tok[1], EINVAL, "parse");
    if (mkdir(tok[2], (mode_t)mode) < 0 && errno != EEXIST) return reply_err(tok[1], errno, "mkdir");
    reply_ok(tok[1], -1);
}

static void do_touch(char **tok, int n) {
    unsigned long long mode;
    if (n != 4 || parse_ul(tok[3], 8, &mode) < 0) return reply_err(tok[1], EINVAL, "parse");
    int fd = open(tok[2], O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
    if (fd < 0) return reply_err(tok[1], errno, "open");
    if (close(fd) < 0) return reply_err(tok[1], errno, "close");
    reply_ok(tok[1], -1);
}

static void do_symlink(char **tok, int n) {
    if (n != 4) return reply_err(tok[1], EINVAL, "parse");
    if (symlink(tok[2], tok[3]) < 0 && errno != EEXIST) return reply_err(tok[1], errno, "symlink");
    reply_ok(tok[1], -1);
}

static void do_mknod(char **tok, int n) {
    unsigned long long mode, uid, gid;
    if (n != 7 || parse_ul(tok[4], 8, &mode) < 0 || mode > 07777 || parse_ul(tok[5], 10, &uid) < 0 ||
        uid >= UINT32_MAX || parse_ul(tok[6], 10, &gid) < 0 || gid >= UINT32_MAX)
        return reply_err(tok[1], EINVAL, "parse");
    struct stat st;
    if (stat(tok[2], &st) < 0) return reply_err(tok[1], errno, "stat");
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) return reply_err(tok[1], ENODEV, "not-a-device");
    mode_t type = S_ISCHR(st.st_mode) ? S_IFCHR : S_IFBLK;
    if (mknod(tok[3], type | (mode_t)mode, st.st_rdev) < 0) return reply_err(tok[1], errno, "mknod");
    /* mknod applies the umask: set the exact mode, then the owner (chown keeps these bits). */
    if (chmod(tok[3], (mode_t)mode) < 0) return reply_err(tok[1], errno, "chmod");
    if (lchown(tok[3], (uid_t)uid, (gid_t)gid) < 0) return reply_err(tok[1], errno, "chown");
    reply_ok(tok[1], -1);
}

static void do_mount(char **tok, int n) {
    unsigned long long flags;
    if (n != 7 || parse_ul(tok[5], 10, &flags) < 0) return reply_err(tok[1], EINVAL, "parse");
    const char *src = tok[2][0] ? tok[2] : NULL;
    const char *fstype = tok[4][0] ? tok[4] : NULL;
    const char *data = tok[6][0] ? tok[6] : NULL;
    if (mount(src, tok[3], fstype, (unsigned long)flags, data) < 0)
        return reply_err(tok[1], errno, "mount");
    reply_ok(tok[1], -1);
}

static void do_umount(char **tok, int n) {
    unsigned long long flags;
    if (n != 4 || parse_ul(tok[3], 10, &flags) < 0) return reply_err(tok[1], EINVAL, "parse");
    if (umount2(tok[2], (int)flags) < 0) return reply_err(tok[1], errno, "umount2");
    reply_ok(tok[1], -1);
}

/* Detached trees a view keeps between its `clone` and its `place` (tree.h). */
#define MAX_SLOTS 64
static int slots[MAX_SLOTS];
static int slots_ready;

static int slot_of(const char *tok, long long *slot) {
    if (!slots_ready) {
        for (int i = 0; i < MAX_SLOTS; i++) slots[i] = -1;
        slots_ready = 1;
    }
    return parse_int(tok, 0, MAX_SLOTS - 1, slot);
}

static void do_clone(char **tok, int n) {
    long long slot;
    if (n != 4 || slot_of(tok[3], &slot) < 0) return reply_err(tok[1], EINVAL, "parse");
    if (slots[slot] >= 0) return reply_err(tok[1], EBUSY, "slot");
    int fd = tree_clone(tok[2]);
    if (fd < 0) return reply_err(tok[1], errno, "open_tree");
    slots[slot] = fd;
    reply_ok(tok[1], -1);
}

static void do_place(char **tok, int n) {
    long long slot;
    if (n != 4 || slot_of(tok[2], &slot) < 0) return reply_err(tok[1], EINVAL, "parse");
    if (slots[slot] < 0) return reply_err(tok[1], EBADF, "slot");
    int fd = slots[slot];
    slots[slot] = -1;
    const char *step;
    if (tree_place(fd, tok[3], &step) < 0) return reply_err(tok[1], errno, step);
    reply_ok(tok[1], -1);
}

static void do_setattr(char **tok, int n) {
    unsigned long long set, clr, rec;
    if (n != 6 || parse_ul(tok[3], 10, &set) < 0 || parse_ul(tok[4], 10, &clr) < 0 ||
        parse_ul(tok[5], 10, &rec) < 0)
        return reply_err(tok[1], EINVAL, "parse");
    struct vms_mount_attr attr = {.attr_set = set, .attr_clr = clr};
    unsigned flags = rec ? VMS_AT_RECURSIVE : 0;
    if (syscall(VMS_NR_mount_setattr, AT_FDCWD, tok[2], flags, &attr, sizeof attr) < 0)
        return reply_err(tok[1], errno, "mount_setattr");
    reply_ok(tok[1], -1);
}

/* ---------- services ---------- */

static struct service *find_service(const char *name) {
    for (int i = 0; i < MAX_SERVICES; i++)
        if (services[i].pid > 0 && strcmp(services[i].name, name) == 0) return &services[i];
    return NULL;
}

static void do_kill(char **tok, int n) {
    long long sig;
    if (n != 4 || parse_int(tok[3], 0, 64, &sig) < 0) return reply_err(tok[1], EINVAL, "parse");
    struct service *s = find_service(tok[2]);
    /* The init is the parent and reaps only in its loop: a registered pid cannot be reused yet. */
    if (!s) return reply_err(tok[1], ESRCH, "lookup");
    if (kill(s->pid, (int)sig) < 0) return reply_err(tok[1], errno, "kill");
    reply_ok(tok[1], -1);
}

/* ---------- service output ---------- */

static const char *const stream_names[2] = {"stdout", "stderr"};

/* Queue `outdrop` for the lines s dropped, if tx has room (else they stay counted). */
static void report_dropped(struct stream *s) {
    if (s->dropped == 0) return;
    char n[32], msg[256];
    size_t len = 0;
    snprintf(n, sizeof n, "%llu", s->dropped);
    const char *t[] = {"outdrop", s->name, stream_names[s->which], n};
    for (int i = 0; i < 4; i++)
        if (encode_append(msg, sizeof msg - 1, &len, t[i]) < 0) return;
    msg[len++] = '\n';
    if (tx_queue(msg, len) == 0) s->dropped = 0;
}

static long long monotonic_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) die("clock_gettime");
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Queue `outlimit` for the lines r dropped over its rate, if tx has room (else they stay counted). */
static void report_rate(struct outrate *r) {
    if (r->dropped == 0) return;
    char n[32], msg[256];
    size_t len = 0;
    snprintf(n, sizeof n, "%llu", r->dropped);
    const char *t[] = {"outlimit", r->name, n};
    for (int i = 0; i < 3; i++)
        if (encode_append(msg, sizeof msg - 1, &len, t[i]) < 0) return;
    msg[len++] = '\n';
    if (tx_queue(msg, len) == 0) r->dropped = 0;
}

/* Whether one more line of r's service may go in this window; counted as dropped if not. A new
 * window begins with the first line after the last one ended, its predecessor's count reported
 * first. */
static int rate_admit(struct outrate *r) {
    if (now_ms - r->start >= RATE_WINDOW_MS) {
        report_rate(r);
        r->start = now_ms;
        r->lines = 0;
    }
    if (r->lines < r->limit) {
        r->lines++;
        return 1;
    }
    r->dropped++;
    return 0;
}

/* The loop's poll timeout: until the first window with drops to report ends (-1: none). A window
 * that has ended and whose count found no room waits for room (POLLOUT), not in a spin. */
static int rate_timeout(void) {
    long long t = -1;
    for (int i = 0; i < MAX_STREAMS; i++) {
        struct outrate *r = &rates[i];
        if (r->refs == 0 || r->dropped == 0) continue;
        long long left = r->start + RATE_WINDOW_MS - now_ms;
        if (left <= 0 && tx_used > 0) continue;
        if (left < 0) left = 0;
        if (t < 0 || left < t) t = left;
    }
    return (int)t;
}

/* Report the drops of every window that has ended, whether or not its service writes again. */
static void rate_windows_ended(void) {
    for (int i = 0; i < MAX_STREAMS; i++) {
        struct outrate *r = &rates[i];
        if (r->refs > 0 && r->dropped > 0 && now_ms - r->start >= RATE_WINDOW_MS) report_rate(r);
    }
}

/* Queue one line as an `out` message, after the count of any dropped before it; dropped and
 * counted itself when tx has no room. A line over the service's rate is only counted. */
static void out_line(struct stream *s, const char *line, size_t n, int cut) {
    static char msg[3 * MAX_OUT_LINE + 256]; /* every byte %XX at worst, and the header */
    size_t len = 0;
    if (s->rate && !rate_admit(s->rate)) return;
    report_dropped(s);
    const char *t[] = {"out", s->name, stream_names[s->which], cut ? "cut" : "whole"};
    for (int i = 0; i < 4; i++)
        if (encode_append(msg, sizeof msg - 1, &len, t[i]) < 0) goto drop;
    if (encode_bytes(msg, sizeof msg - 1, &len, line, n) < 0) goto drop;
    msg[len++] = '\n';
    if (s->dropped == 0 && tx_queue(msg, len) == 0) return;
drop:
    s->dropped++;
}

/* EOF (every holder of the write end is gone): the unfinished last line, then the dropped count,
 * which is this stream's last word and so waits for room as an exit report does. */
static void stream_close(struct stream *s) {
    if (s->used > 0 && !s->skipping) out_line(s, s->buf, s->used, 0);
    if (s->dropped > 0) {
        tx_flush(1);
        report_dropped(s);
    }
    /* The service's last stream: its rate's count is its last word too. */
    if (s->rate && --s->rate->refs == 0 && s->rate->dropped > 0) {
        tx_flush(1);
        report_rate(s->rate);
    }
    s->rate = NULL;
    close_or_warn(s->fd, "output pipe");
    s->fd = -1;
}

/* One read of at most limit + 1 bytes, split into lines. Returns the bytes read, 0 if there were
 * none (the pipe is non-blocking), -1 once the stream is closed. */
static ssize_t stream_read(struct stream *s) {
    ssize_t r = read(s->fd, s->buf + s->used, s->limit + 1 - s->used);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) {
        if (r < 0) fprintf(stderr, "vmsandbox-init: read(%s of %s): %s\n", stream_names[s->which], s->name, strerror(errno));
        stream_close(s);
        return -1;
    }
    size_t end = s->used + (size_t)r, start = 0;
    for (size_t i = s->used; i < end; i++) {
        if (s->buf[i] != '\n') continue;
        if (s->skipping) s->skipping = 0; /* the end of a line already cut */
        else out_line(s, s->buf + start, i - start, 0);
        start = i + 1;
    }
    memmove(s->buf, s->buf + start, end - start);
    s->used = end - start;
    if (s->used > s->limit) {
        /* Longer than the limit: its first `limit` bytes go, marked, the rest up to its newline not. */
        if (!s->skipping) out_line(s, s->buf, s->limit, 1);
        s->skipping = 1;
        s->used = 0;
    }
    return r;
}

/* Before a service's exit is reported: what it wrote before it died, so that its last lines come
 * before its exit. Bounded (a pipe's worth and a line), as a descendant may still be writing. */
static void drain_output(pid_t pid) {
    for (int i = 0; i < MAX_STREAMS; i++) {
        struct stream *s = &streams[i];
        if (s->fd < 0 || s->pid != pid) continue;
        size_t total = 0;
        ssize_t r;
        while (total <= 65536 && (r = stream_read(s)) > 0) total += (size_t)r;
    }
}

static int free_streams(void) {
    int n = 0;
    for (int i = 0; i < MAX_STREAMS; i++) n += streams[i].fd < 0;
    return n;
}

static void add_stream(pid_t pid, int which, int fd, const char *name, size_t limit, struct outrate *rate) {
    for (int i = 0; i < MAX_STREAMS; i++) {
        struct stream *s = &streams[i];
        if (s->fd >= 0) continue;
        s->fd = fd;
        s->pid = pid;
        s->which = which;
        snprintf(s->name, sizeof s->name, "%s", name);
        s->limit = limit;
        s->used = 0;
        s->skipping = 0;
        s->dropped = 0;
        s->rate = rate;
        if (rate) rate->refs++;
        return;
    }
}

/* spawn <id> key=value...: spawn.c parses the request and starts the service; the registry of
 * live services (names, slots) is PID 1's. */
static void do_spawn(char **tok, int n) {
    const char *id = tok[1];
    static struct spawn_req r; /* large (argv, envp, rules): not on the stack */
    const char *what;
    /* outrate= bounds the streams PID 1 reads: taken out here, the rest is spawn.c's. */
    unsigned long long rate = 0;
    int kept = 2;
    for (int i = 2; i < n; i++) {
        if (strncmp(tok[i], "outrate=", 8) != 0) {
            tok[kept++] = tok[i];
            continue;
        }
        unsigned long long u;
        if (rate != 0 || parse_ul(tok[i] + 8, 10, &u) < 0 || u < 1 || u > MAX_OUT_RATE) return reply_err(id, EINVAL, "outrate");
        rate = u;
    }
    n = kept;
    if (spawn_parse(&r, tok + 2, n - 2, &what) < 0) return reply_err(id, EINVAL, what);
    if (strlen(r.name) >= MAX_NAME) return reply_err(id, EINVAL, "parse");
    if (find_service(r.name)) return reply_err(id, EEXIST, "name");
    struct service *slot = NULL;
    for (int i = 0; i < MAX_SERVICES && !slot; i++)
        if (services[i].pid == 0) slot = &services[i];
    if (!slot) return reply_err(id, ENOSPC, "slots");
    /* Streams of exited services whose descendants still hold the pipe count too. */
    if (free_streams() < 2) return reply_err(id, ENOSPC, "streams");
    long pid = spawn_start(&r, have_cgroup_fd, &what);
    if (pid < 0) return reply_err(id, errno, what);
    /* execve succeeded. Registered before the next reap, so its exit is reported. */
    slot->pid = (pid_t)pid;
    snprintf(slot->name, sizeof slot->name, "%s", r.name);
    struct outrate *or = NULL;
    for (int i = 0; rate && i < MAX_STREAMS && !or; i++) {
        if (rates[i].refs != 0) continue;
        or = &rates[i];
        *or = (struct outrate){.limit = (unsigned)rate, .start = now_ms - RATE_WINDOW_MS};
        snprintf(or->name, sizeof or->name, "%s", r.name);
    }
    for (int k = 0; k < 2; k++) add_stream((pid_t)pid, k, r.out_rd[k], r.name, r.out_line, or);
    reply_ok(id, pid);
}

/* ---------- reaping ---------- */

static void reap_all(void) {
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid == 0) return;
        if (pid < 0) {
            if (errno == EINTR) continue;
            if (errno == ECHILD) return;
            die("waitpid");
        }
        for (int i = 0; i < MAX_SERVICES; i++) {
            if (services[i].pid != pid) continue;
            char p[32], v[32];
            snprintf(p, sizeof p, "%d", (int)pid);
            const char *how;
            if (WIFEXITED(st)) {
                how = "exited";
                snprintf(v, sizeof v, "%d", WEXITSTATUS(st));
            } else {
                how = "killed";
                snprintf(v, sizeof v, "%d", WTERMSIG(st));
            }
            const char *t[] = {"exit", services[i].name, p, how, v};
            drain_output(pid);
            services[i].pid = 0;
            send_msg(t, 5);
            break;
        }
        /* Other pids are orphans re-parented to us: reaped, nothing to report. */
    }
}

/* ---------- main loop ---------- */

/* The id of a request line (its second token), decoded into `out`, or NULL if there is none. Read
 * before the line is split, so that a malformed request still gets its error reply. */
static const char *request_id(const char *line, char *out, size_t n) {
    const char *sp = strchr(line, ' ');
    if (!sp) return NULL;
    size_t len = strcspn(sp + 1, " ");
    if (len == 0 || len >= n) return NULL;
    memcpy(out, sp + 1, len);
    out[len] = '\0';
    return decode(out) == 0 && out[0] ? out : NULL;
}

static void dispatch(char *line) {
    char *tok[MAX_TOKENS];
    int n = 0;
    char *save = NULL;
    char idbuf[64];
    const char *id = request_id(line, idbuf, sizeof idbuf);
    for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (n == MAX_TOKENS) {
            fprintf(stderr, "vmsandbox-init: too many tokens\n");
            if (id) reply_err(id, E2BIG, "request-tokens");
            return;
        }
        if (decode(t) < 0) {
            fprintf(stderr, "vmsandbox-init: malformed token\n");
            if (id) reply_err(id, EINVAL, "request-token");
            return;
        }
        tok[n++] = t;
    }
    if (n < 2) {
        /* No id: nothing to answer (the manager never sends such a line). */
        fprintf(stderr, "vmsandbox-init: malformed request\n");
        return;
    }
    const char *verb = tok[0];
    if (strcmp(verb, "ping") == 0) reply_ok(tok[1], -1);
    else if (strcmp(verb, "mkdir") == 0) do_mkdir(tok, n);
    else if (strcmp(verb, "touch") == 0) do_touch(tok, n);
    else if (strcmp(verb, "symlink") == 0) do_symlink(tok, n);
    else if (strcmp(verb, "mknod") == 0) do_mknod(tok, n);
    else if (strcmp(verb, "mount") == 0) do_mount(tok, n);
    else if (strcmp(verb, "umount") == 0) do_umount(tok, n);
    else if (strcmp(verb, "setattr") == 0) do_setattr(tok, n);
    else if (strcmp(verb, "clone") == 0) do_clone(tok, n);
    else if (strcmp(verb, "place") == 0) do_place(tok, n);
    else if (strcmp(verb, "kill") == 0) do_kill(tok, n);
    else if (strcmp(verb, "spawn") == 0) do_spawn(tok, n);
    else reply_err(tok[1], ENOSYS, "verb");
}

int main(void) {
    /* Leave the signal state the manager (Node) had: nothing blocked, default dispositions. */
    sigset_t none;
    if (sigemptyset(&none) < 0 || sigprocmask(SIG_SETMASK, &none, NULL) < 0) die("sigprocmask");
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        signal(s, SIG_DFL);
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) die("signal(SIGPIPE)");

    struct stat st;
    if (fstat(VMS_CONTROL_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) die("fd 3 is not the control socket");
    if (fcntl(VMS_CONTROL_FD, F_SETFD, FD_CLOEXEC) < 0) die("fcntl(control)");
    if (fstat(VMS_CGROUP_FD, &st) == 0) {
        have_cgroup_fd = 1;
        if (fcntl(VMS_CGROUP_FD, F_SETFD, FD_CLOEXEC) < 0) die("fcntl(cgroup)");
    }

    /* First of all: nothing we mount may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0) die("mount(/, MS_SLAVE|MS_REC)");

    sigset_t chld;
    if (sigemptyset(&chld) < 0 || sigaddset(&chld, SIGCHLD) < 0) die("sigaddset");
    if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask(SIGCHLD)");
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) die("signalfd");

    char pidbuf[32], ver[16];
    snprintf(pidbuf, sizeof pidbuf, "%d", (int)getpid());
    snprintf(ver, sizeof ver, "%d", PROTO_VERSION);
    const char *hello[] = {"hello", ver, pidbuf};
    send_msg(hello, 3);

    for (int i = 0; i < MAX_STREAMS; i++) streams[i].fd = -1;
    static char buf[MAX_LINE + 1];
    size_t used = 0;
    int skipping = 0; /* dropping the rest of an over-long request, up to its newline */
    now_ms = monotonic_ms();
    for (;;) {
        rate_windows_ended();
        tx_flush(0);
        struct pollfd p[2 + MAX_STREAMS] = {
            {.fd = VMS_CONTROL_FD, .events = POLLIN | (tx_used ? POLLOUT : 0)},
            {.fd = sfd, .events = POLLIN},
        };
        int at[MAX_STREAMS]; /* p[2 + k] is streams[at[k]] */
        nfds_t np = 2;
        for (int i = 0; i < MAX_STREAMS; i++) {
            if (streams[i].fd < 0) continue;
            at[np - 2] = i;
            p[np++] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
        }
        int pr = poll(p, np, rate_timeout());
        now_ms = monotonic_ms();
        if (pr < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        /* Output first, one read per stream per round: a flooding service gets no more turns than
         * the others, and none delays the control socket by more than a line's worth. */
        for (nfds_t k = 2; k < np; k++)
            if (p[k].revents && streams[at[k - 2]].fd >= 0) (void)stream_read(&streams[at[k - 2]]);
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            for (;;) {
                ssize_t r = read(sfd, &si, sizeof si);
                if (r < 0 && errno == EAGAIN) break;
                if (r < 0 && errno == EINTR) continue;
                if (r != (ssize_t)sizeof si) die("read(signalfd)");
            }
            reap_all();
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(VMS_CONTROL_FD, buf + used, MAX_LINE - used, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (r <= 0) _exit(0); /* EOF or error: the manager is gone, and so are we. */
            used += (size_t)r;
            size_t start = 0;
            for (size_t i = 0; i < used; i++) {
                if (buf[i] != '\n') continue;
                buf[i] = '\0';
                if (skipping) skipping = 0; /* the end of the over-long request */
                else dispatch(buf + start);
                start = i + 1;
            }
            memmove(buf, buf + start, used - start);
            used -= start;
            if (used == MAX_LINE) {
                /* The manager refuses such requests before sending them; should one arrive anyway,
                 * answer it (its id is at the start) and drop it, rather than end the VM. */
                if (!skipping) {
                    buf[used] = '\0';
                    char idbuf[64];
                    const char *id = request_id(buf, idbuf, sizeof idbuf);
                    fprintf(stderr, "vmsandbox-init: request longer than %d bytes, dropped\n", MAX_LINE);
                    if (id) reply_err(id, E2BIG, "request-length");
                    skipping = 1;
                }
                used = 0;
            }
        }
    }
}
