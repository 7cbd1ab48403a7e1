/* vmsandbox-init: PID 1 of a VM's PID + mount namespace.
 *
 * It carries no policy. It executes the manager's requests, reaps every process of the namespace,
 * reports service exits, and dies with the manager. Single-threaded; every return value is checked.
 *
 * Started by libvmsandbox's vms_clone_init() with:
 *   fd 0  /dev/null            fd 1, 2  the manager's stdout/stderr
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
 *   kill <id> <service> <signo>                         signal a live service (never a reaped pid)
 *   spawn <id> key=value...                             see spawn_service() for the keys
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
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "proto.h"

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

static void die(const char *what) {
    /* stderr is the manager's log. */
    fprintf(stderr, "vmsandbox-init: %s: %s\n", what, strerror(errno));
    _exit(111);
}

/* close(2) failing (EINTR, EIO on a last reference) still releases the descriptor on Linux: say
 * so and go on. PID 1 never dies of it (its death would take the whole VM down). */
static void close_or_warn(int fd, const char *what) {
    if (close(fd) < 0) fprintf(stderr, "vmsandbox-init: close(%s): %s (descriptor released)\n", what, strerror(errno));
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

/* Append an encoded token to out (size n, used *len). Returns -1 if it does not fit. */
static int encode_append(char *out, size_t n, size_t *len, const char *tok) {
    static const char hex[] = "0123456789ABCDEF";
    if (*len > 0) {
        if (*len + 1 >= n) return -1;
        out[(*len)++] = ' ';
    }
    if (*tok == '\0') {
        if (*len + 1 >= n) return -1;
        out[(*len)++] = '~';
    }
    for (const unsigned char *p = (const unsigned char *)tok; *p; p++) {
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

/* Send one message made of the given tokens. A failure to send means the manager is gone. */
static void send_msg(const char *const *toks, int ntoks) {
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

/* ---------- number parsing ---------- */

static int parse_ul(const char *s, int base, unsigned long long *out) {
    if (*s == '\0') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0') return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (*s == '\0') return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
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

#define MAX_LISTEN 8
/* Listeners live at fds >= LISTEN_FD_BASE in the init, above every target fd a request may name. */
#define LISTEN_FD_BASE 512
#define LISTEN_FD_MAX 255

/* A listening unix socket handed to the service at fd `target`. */
struct listen_req {
    int target;
    unsigned mode;
    gid_t gid;
    const char *path;
    int fd; /* in the init; -1 = not created */
};

struct spawn_req {
    const char *name;
    const char *leaf;
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
    uint64_t keep_caps; /* bit mask of capabilities kept (bounding, permitted, effective, ambient) */
    unsigned secbits;   /* securebits set before the uid switch (e.g. SECBIT_NO_SETUID_FIXUP) */
    struct listen_req listen[MAX_LISTEN];
    int nlisten;
    const char *tmp;    /* tmpfs size for private /tmp, NULL = none */
    const char *shm;    /* tmpfs size for private /dev/shm, NULL = none */
    const char *storage;      /* "none" | "ro" | "rw" */
    const char *storage_path; /* NULL = no storage */
    const char *keep[16];     /* paths kept reachable under a private /tmp or /dev/shm */
    int nkeep;
    int ll_abi;               /* 0 = no Landlock */
    const char *ro[256];
    int nro;
    const char *rw[256];
    int nrw;
    char *argv[1024];
    int argc;
    char *envp[1024];
    int envc;
    const char *cwd;
};

struct exec_failure {
    int err;
    char step[28];
};

/* In the child: report why we could not exec, and exit. Only async-signal-safe calls. */
static void child_fail(int pipefd, const char *step) {
    struct exec_failure f = {.err = errno};
    size_t i = 0;
    for (; step[i] && i < sizeof f.step - 1; i++) f.step[i] = step[i];
    f.step[i] = '\0';
    ssize_t r = write(pipefd, &f, sizeof f);
    (void)r; /* nothing else can be done: the parent sees a short read and reports EIO */
    _exit(127);
}

static int landlock_add_path(int ruleset, const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0; /* a missing path grants nothing; not an error */
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) access &= LL_FILE_RIGHTS;
    struct vms_landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = fd};
    long r = syscall(VMS_NR_landlock_add_rule, ruleset, VMS_LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    int e = errno;
    close(fd);
    errno = e;
    return r < 0 ? -1 : 0;
}

static uint64_t landlock_fs_rights(int abi) {
    uint64_t all = (LL_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
    if (abi >= 2) all |= LL_REFER;
    if (abi >= 3) all |= LL_TRUNCATE;
    if (abi >= 5) all |= LL_IOCTL_DEV;
    return all;
}

static int mount_tmpfs(const char *target, const char *size) {
    char data[128];
    int n = snprintf(data, sizeof data, "mode=1777,size=%s", size);
    if (n < 0 || (size_t)n >= sizeof data) {
        errno = EINVAL;
        return -1;
    }
    return mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data);
}

static int under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* mkdir -p for an absolute path (mode 0755); existing directories are fine. */
static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf || path[0] != '/') {
        errno = EINVAL;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        buf[i] = c;
    }
    return 0;
}

/* Runs in the forked child, already in its cgroup leaf (CLONE_INTO_CGROUP). Never returns. */
static void service_child(struct spawn_req *r, int pipefd) {
    if (r->nlisten > 0) {
        /* Keep the failure pipe out of the way of the target fds. */
        int moved = fcntl(pipefd, F_DUPFD_CLOEXEC, LISTEN_FD_BASE + MAX_LISTEN);
        if (moved < 0) child_fail(pipefd, "move-pipe");
        pipefd = moved;
    }
    sigset_t all;
    if (sigemptyset(&all) < 0) child_fail(pipefd, "sigemptyset");
    if (sigprocmask(SIG_SETMASK, &all, NULL) < 0) child_fail(pipefd, "sigprocmask");
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        signal(s, SIG_DFL); /* fails only for invalid/RT-reserved numbers, which is fine */
    }
    if (setsid() < 0) child_fail(pipefd, "setsid");

    /* Own mount namespace: private /tmp, /dev/shm, storage visibility. */
    if (unshare(CLONE_NEWNS) < 0) child_fail(pipefd, "unshare");
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0) child_fail(pipefd, "mount-slave");
    /* Detached copies of what must stay reachable, taken before a private /tmp or /dev/shm could
     * hide it (storage or the runtime dir may live under /tmp on the host). */
    int use_storage = r->storage_path && strcmp(r->storage, "none") != 0;
    int stree = -1;
    if (use_storage) {
        stree = (int)syscall(VMS_NR_open_tree, AT_FDCWD, r->storage_path, VMS_OPEN_TREE_CLONE | O_CLOEXEC);
        if (stree < 0) child_fail(pipefd, "clone-storage");
    }
    int ktree[16];
    for (int i = 0; i < r->nkeep; i++) {
        ktree[i] = -1;
        if (!(r->tmp && under(r->keep[i], "/tmp")) && !(r->shm && under(r->keep[i], "/dev/shm"))) continue;
        ktree[i] = (int)syscall(VMS_NR_open_tree, AT_FDCWD, r->keep[i], VMS_OPEN_TREE_CLONE | O_CLOEXEC);
        if (ktree[i] < 0) child_fail(pipefd, "clone-keep");
    }
    if (r->tmp && mount_tmpfs("/tmp", r->tmp) < 0) child_fail(pipefd, "mount-tmp");
    if (r->shm && mount_tmpfs("/dev/shm", r->shm) < 0) child_fail(pipefd, "mount-shm");
    for (int i = 0; i < r->nkeep; i++) {
        if (ktree[i] < 0) continue;
        if (mkdir_p(r->keep[i]) < 0) child_fail(pipefd, "mkdir-keep");
        if (syscall(VMS_NR_move_mount, ktree[i], "", AT_FDCWD, r->keep[i], VMS_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(pipefd, "move-keep");
        if (close(ktree[i]) < 0) child_fail(pipefd, "close-keep");
    }
    if (use_storage) {
        const char *sp = r->storage_path;
        int ro = strcmp(r->storage, "ro") == 0;
        if (mkdir_p(sp) < 0) child_fail(pipefd, "mkdir-storage");
        if (syscall(VMS_NR_move_mount, stree, "", AT_FDCWD, sp, VMS_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(pipefd, "move-storage");
        if (close(stree) < 0) child_fail(pipefd, "close-storage");
        struct vms_mount_attr a = {
            .attr_set = VMS_MOUNT_ATTR_NOSUID | VMS_MOUNT_ATTR_NODEV | (ro ? VMS_MOUNT_ATTR_RDONLY : 0),
            .attr_clr = ro ? 0 : VMS_MOUNT_ATTR_RDONLY,
        };
        if (syscall(VMS_NR_mount_setattr, AT_FDCWD, sp, 0, &a, sizeof a) < 0) child_fail(pipefd, "setattr-storage");
    } else if (r->storage_path) {
        struct stat st;
        if (stat(r->storage_path, &st) == 0 &&
            mount("tmpfs", r->storage_path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=000,size=4k") < 0)
            child_fail(pipefd, "hide-storage");
    }

    /* Landlock ruleset: built now, after the final mounts (rules follow inodes), enforced last. */
    int ruleset = -1;
    if (r->ll_abi > 0) {
        uint64_t fs = landlock_fs_rights(r->ll_abi);
        struct vms_landlock_ruleset_attr attr = {.handled_access_fs = fs};
        if (r->ll_abi >= 6) attr.scoped = LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT_UNIX_SOCKET;
        ruleset = (int)syscall(VMS_NR_landlock_create_ruleset, &attr, sizeof attr, 0);
        if (ruleset < 0) child_fail(pipefd, "landlock-create");
        uint64_t read = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR;
        for (int i = 0; i < r->nro; i++)
            if (landlock_add_path(ruleset, r->ro[i], read) < 0) child_fail(pipefd, "landlock-rule");
        for (int i = 0; i < r->nrw; i++)
            if (landlock_add_path(ruleset, r->rw[i], fs) < 0) child_fail(pipefd, "landlock-rule");
    }

    /* Privilege drop, in the order that works: setgroups -> bounding set -> gid -> uid. */
    if (setgroups((size_t)r->ngroups, r->groups) < 0) child_fail(pipefd, "setgroups");
    for (int c = 0; c < 64; c++) {
        if (r->keep_caps & (1ULL << c)) continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
            if (errno == EINVAL) break; /* past CAP_LAST_CAP */
            child_fail(pipefd, "capbset-drop");
        }
    }
    /* PR_SET_SECUREBITS replaces every bit (KEEP_CAPS too), so it goes before PR_SET_KEEPCAPS. */
    if (r->secbits && prctl(PR_SET_SECUREBITS, (unsigned long)r->secbits, 0, 0, 0) < 0) child_fail(pipefd, "securebits");
    if (r->keep_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) child_fail(pipefd, "keepcaps");
    if (setresgid(r->gid, r->gid, r->gid) < 0) child_fail(pipefd, "setresgid");
    if (setresuid(r->uid, r->uid, r->uid) < 0) child_fail(pipefd, "setresuid");
    /* Set the capability sets explicitly: this also clears them for a uid-0 service. */
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].permitted = data[0].effective = data[0].inheritable = (uint32_t)r->keep_caps;
    data[1].permitted = data[1].effective = data[1].inheritable = (uint32_t)(r->keep_caps >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0) child_fail(pipefd, "capset");
    for (int c = 0; c < 64; c++) {
        if (!(r->keep_caps & (1ULL << c))) continue;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0) child_fail(pipefd, "ambient");
    }
    if (r->keep_caps && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) child_fail(pipefd, "keepcaps");

    /* Credentials changed, which cleared any death signal: set it now, then check the parent. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) child_fail(pipefd, "pdeathsig");
    if (getppid() != 1) {
        errno = ESRCH;
        child_fail(pipefd, "parent-gone");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(pipefd, "no-new-privs");
    if (ruleset >= 0) {
        if (syscall(VMS_NR_landlock_restrict_self, ruleset, 0) < 0) child_fail(pipefd, "landlock-restrict");
        if (close(ruleset) < 0) child_fail(pipefd, "close-ruleset");
    }
    if (chdir(r->cwd ? r->cwd : "/") < 0) child_fail(pipefd, "chdir");
    /* Handed-over sockets: onto their target fds (the listeners sit at >= LISTEN_FD_BASE and the
     * failure pipe was moved there too, so no dup2 clobbers a source). */
    for (int i = 0; i < r->nlisten; i++)
        if (dup2(r->listen[i].fd, r->listen[i].target) < 0) child_fail(pipefd, "dup2-listen");
    /* Every fd above stderr closes at exec, including the control socket and the cgroup fd... */
    if (syscall(VMS_NR_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) < 0)
        child_fail(pipefd, "close-range");
    /* ...except the handed-over sockets. */
    for (int i = 0; i < r->nlisten; i++)
        if (fcntl(r->listen[i].target, F_SETFD, 0) < 0) child_fail(pipefd, "fcntl-listen");
    execve(r->argv[0], r->argv, r->envp);
    child_fail(pipefd, "execve");
}

/* listen=<target fd>,<mode octal>,<gid>,<path> */
static int add_listen(struct spawn_req *r, char *v) {
    if (r->nlisten >= MAX_LISTEN) return -1;
    char *f[3];
    for (int i = 0; i < 3; i++) {
        char *c = strchr(v, ',');
        if (!c) return -1;
        *c = '\0';
        f[i] = v;
        v = c + 1;
    }
    unsigned long long fd, mode, gid;
    if (parse_ul(f[0], 10, &fd) < 0 || fd < 3 || fd > LISTEN_FD_MAX || parse_ul(f[1], 8, &mode) < 0 ||
        mode > 0777 || parse_ul(f[2], 10, &gid) < 0 || gid >= UINT32_MAX || v[0] != '/')
        return -1;
    for (int i = 0; i < r->nlisten; i++)
        if (r->listen[i].target == (int)fd) return -1;
    struct listen_req *l = &r->listen[r->nlisten++];
    l->target = (int)fd;
    l->mode = (unsigned)mode;
    l->gid = (gid_t)gid;
    l->path = v;
    l->fd = -1;
    return 0;
}

/* Create, own and listen on a handed-over socket. Returns the fd (>= LISTEN_FD_BASE, CLOEXEC) or
 * -1 with errno set and *step naming what failed. A stale socket at the path is replaced; any
 * other file there is an error. */
static int open_listener(const struct listen_req *l, uid_t uid, const char **step) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    *step = "listen-path";
    if (strlen(l->path) >= sizeof a.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(a.sun_path, l->path, strlen(l->path) + 1);
    struct stat st;
    if (lstat(l->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            errno = EEXIST;
            return -1;
        }
        *step = "listen-unlink";
        if (unlink(l->path) < 0) return -1;
    } else if (errno != ENOENT) {
        return -1;
    }
    *step = "listen-socket";
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    /* Move it above every possible target fd, so the child's dup2()s never clobber a source. */
    int fd = fcntl(s, F_DUPFD_CLOEXEC, LISTEN_FD_BASE);
    int e = errno;
    close_or_warn(s, "socket");
    errno = e;
    if (fd < 0) return -1;
    const char *failed = NULL;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) failed = "listen-bind";
    else if (chmod(l->path, l->mode) < 0) failed = "listen-chmod";
    else if (lchown(l->path, uid, l->gid) < 0) failed = "listen-chown";
    else if (listen(fd, 16) < 0) failed = "listen";
    if (failed) {
        e = errno;
        (void)close(fd);
        errno = e;
        *step = failed;
        return -1;
    }
    return fd;
}

static void close_listeners(struct spawn_req *r) {
    for (int i = 0; i < r->nlisten; i++) {
        if (r->listen[i].fd < 0) continue;
        close_or_warn(r->listen[i].fd, "listener");
        r->listen[i].fd = -1;
    }
}

static int add_cap_list(struct spawn_req *r, const char *v) {
    unsigned long long c;
    if (parse_ul(v, 10, &c) < 0 || c > 63) return -1;
    r->keep_caps |= 1ULL << c;
    return 0;
}

/* spawn keys (each may appear once unless marked repeatable):
 *   name=<service> leaf=<cgroup leaf under fd 4> uid= gid= group=<gid>* cap=<number>*
 *   tmp=<size> shm=<size> storage=none|ro|rw storagepath=<path> keep=<path>* landlock=<abi, 0 = off>
 *   secbits=<securebits, decimal> listen=<target fd>,<mode octal>,<gid>,<path>* (owned by uid)
 *   ro=<path>* rw=<path>* arg=<string>* env=<K=V>* cwd=<path>
 */
static void do_spawn(char **tok, int n) {
    const char *id = tok[1];
    static struct spawn_req r;
    memset(&r, 0, sizeof r);
    r.storage = "none";
    for (int i = 2; i < n; i++) {
        char *kv = tok[i];
        char *eq = strchr(kv, '=');
        if (!eq) return reply_err(id, EINVAL, "parse");
        *eq = '\0';
        char *v = eq + 1;
        unsigned long long u = 0;
        int bad = 0;
        if (strcmp(kv, "name") == 0) r.name = v;
        else if (strcmp(kv, "leaf") == 0) r.leaf = v;
        else if (strcmp(kv, "uid") == 0) bad = parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX, r.uid = (uid_t)u;
        else if (strcmp(kv, "gid") == 0) bad = parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX, r.gid = (gid_t)u;
        else if (strcmp(kv, "group") == 0) {
            bad = r.ngroups >= 64 || parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX;
            if (!bad) r.groups[r.ngroups++] = (gid_t)u;
        } else if (strcmp(kv, "cap") == 0) bad = add_cap_list(&r, v) < 0;
        else if (strcmp(kv, "secbits") == 0) {
            bad = parse_ul(v, 10, &u) < 0 || u > 0xff;
            r.secbits = (unsigned)u;
        } else if (strcmp(kv, "listen") == 0) bad = add_listen(&r, v) < 0;
        else if (strcmp(kv, "tmp") == 0) r.tmp = v;
        else if (strcmp(kv, "shm") == 0) r.shm = v;
        else if (strcmp(kv, "storage") == 0) {
            r.storage = v;
            bad = strcmp(v, "none") != 0 && strcmp(v, "ro") != 0 && strcmp(v, "rw") != 0;
        } else if (strcmp(kv, "storagepath") == 0) r.storage_path = v;
        else if (strcmp(kv, "keep") == 0) {
            bad = r.nkeep >= 16;
            if (!bad) r.keep[r.nkeep++] = v;
        }
        else if (strcmp(kv, "landlock") == 0) {
            bad = parse_ul(v, 10, &u) < 0 || u > 1000;
            r.ll_abi = (int)u;
        } else if (strcmp(kv, "ro") == 0) {
            bad = r.nro >= 256;
            if (!bad) r.ro[r.nro++] = v;
        } else if (strcmp(kv, "rw") == 0) {
            bad = r.nrw >= 256;
            if (!bad) r.rw[r.nrw++] = v;
        } else if (strcmp(kv, "arg") == 0) {
            bad = r.argc >= 1023;
            if (!bad) r.argv[r.argc++] = v;
        } else if (strcmp(kv, "env") == 0) {
            bad = r.envc >= 1023;
            if (!bad) r.envp[r.envc++] = v;
        } else if (strcmp(kv, "cwd") == 0) r.cwd = v;
        else bad = 1;
        if (bad) return reply_err(id, EINVAL, kv);
    }
    r.argv[r.argc] = NULL;
    r.envp[r.envc] = NULL;
    if (!r.name || strlen(r.name) >= MAX_NAME || r.argc == 0)
        return reply_err(id, EINVAL, "parse");
    if (find_service(r.name)) return reply_err(id, EEXIST, "name");
    struct service *slot = NULL;
    for (int i = 0; i < MAX_SERVICES && !slot; i++)
        if (services[i].pid == 0) slot = &services[i];
    if (!slot) return reply_err(id, ENOSPC, "slots");

    int cgfd = -1;
    if (r.leaf) {
        if (!have_cgroup_fd) return reply_err(id, EBADF, "no-cgroup-fd");
        if (strchr(r.leaf, '/') || strcmp(r.leaf, "..") == 0 || strcmp(r.leaf, ".") == 0)
            return reply_err(id, EINVAL, "leaf");
        cgfd = openat(VMS_CGROUP_FD, r.leaf, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (cgfd < 0) return reply_err(id, errno, "open-leaf");
    }
    for (int i = 0; i < r.nlisten; i++) {
        const char *step;
        r.listen[i].fd = open_listener(&r.listen[i], r.uid, &step);
        if (r.listen[i].fd < 0) {
            int e = errno;
            close_listeners(&r);
            if (cgfd >= 0) close_or_warn(cgfd, "cgroup leaf");
            return reply_err(id, e, step);
        }
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        int e = errno;
        close_listeners(&r);
        if (cgfd >= 0) close(cgfd);
        return reply_err(id, e, "pipe");
    }
    /* clone3 places the child in its leaf atomically: it runs nothing outside it. */
    struct vms_clone_args ca = {.exit_signal = SIGCHLD};
    if (cgfd >= 0) {
        ca.flags = VMS_CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)cgfd;
    }
    long pid = syscall(VMS_NR_clone3, &ca, sizeof ca);
    if (pid == 0) {
        close(pipefd[0]);
        service_child(&r, pipefd[1]);
    }
    int clone_errno = errno;
    /* The child holds its own copies now (or failed): the socket files stay for the clients. */
    close_listeners(&r);
    if (cgfd >= 0) close_or_warn(cgfd, "cgroup leaf");
    close_or_warn(pipefd[1], "pipe");
    if (pid < 0) {
        close(pipefd[0]);
        return reply_err(id, clone_errno, "clone3");
    }
    struct exec_failure f;
    ssize_t got;
    do got = read(pipefd[0], &f, sizeof f);
    while (got < 0 && errno == EINTR);
    int read_errno = errno;
    close_or_warn(pipefd[0], "pipe");
    if (got == 0) {
        /* exec succeeded (the CLOEXEC pipe closed). Register before the next reap. */
        slot->pid = (pid_t)pid;
        snprintf(slot->name, sizeof slot->name, "%s", r.name);
        return reply_ok(id, pid);
    }
    /* The child failed before exec and exits 127: reap it now so it is never reported. */
    int st;
    while (waitpid((pid_t)pid, &st, 0) < 0) {
        if (errno != EINTR) die("waitpid(failed child)");
    }
    if (got < 0) return reply_err(id, read_errno, "read-pipe");
    if (got != (ssize_t)sizeof f) return reply_err(id, EIO, "short-report");
    f.step[sizeof f.step - 1] = '\0';
    reply_err(id, f.err, f.step);
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

    static char buf[MAX_LINE + 1];
    size_t used = 0;
    int skipping = 0; /* dropping the rest of an over-long request, up to its newline */
    for (;;) {
        struct pollfd p[2] = {{.fd = VMS_CONTROL_FD, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
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
