/* The spawner of vmsandbox-init (spawn.h): a `spawn` request parsed, a service started from it.
 *
 * It carries no policy. Who the service runs as, what it keeps, its tmpfs data and its Landlock
 * ruleset (handled access, scopes, each rule's rights, restrict_self flags) are all in the request,
 * decided by the manager's plan (plan/service.ts, plan/landlock.ts). What is left here is mechanism:
 * the order of the steps (each must come before the next can work), the checks that a field is a
 * number within its bounds, and two facts of the kernel's: a Landlock rule attaches to an inode
 * (a path that does not exist has none) and a rule on a non-directory can hold only the rights the
 * request names for files (llfile=).
 *
 * spawn keys (each may appear once unless marked repeatable, *):
 *   name=<service> leaf=<cgroup leaf under fd 4> uid= gid= group=<gid>* cap=<number>*
 *   tmp=<flags hex>,<tmpfs data> shm=<flags hex>,<tmpfs data> storagepath=<path>
 *   storagebind=<attr set hex>,<attr clr hex> | storagehide=<flags hex>,<tmpfs data> keep=<path>*
 *   view=<flags hex>,<tmpfs data> viewpath=<path> show=<path under viewpath>*   (the service's view)
 *   secbits=<securebits, decimal> listen=<target fd>,<mode octal>,<gid>,<path>* (owned by uid)
 *   llfs=<hex> llscope=<hex> llflags=<hex> llfile=<hex> rule=<hex>,<path>*   (Landlock: on iff llfs=)
 *   arg=<string>* env=<K=V>* cwd=<path> outline=<bytes: an output line longer than this is cut>
 *   sc=<syscall name>,<errno>[,<arg>,ne,<value hex> | ,<arg>,me,<mask hex>,<value hex>]*   (seccomp)
 * llfs is landlock_ruleset_attr.handled_access_fs, llscope its scoped, llflags the flags of
 * landlock_restrict_self(), llfile what a rule keeps on a non-directory, rule= one path-beneath
 * rule (its rights within llfs). The other Landlock keys need llfs.
 * sc= is one seccomp rule of an allow-by-default filter (plan/seccomp.ts): the syscall, by name,
 * resolved by libseccomp for this architecture (an unknown name is refused), fails with errno,
 * always or when argument <arg> != value (ne) or (arg & mask) == value (me).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <seccomp.h>

#include "proto.h"
#include "spawn.h"
#include "tree.h"
#include "util.h"

/* Listeners live at fds >= LISTEN_FD_BASE in the init, above every target fd a request may name. */
#define LISTEN_FD_BASE 512
#define LISTEN_FD_MAX 255

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

/* The size of landlock_ruleset_attr up to its last non-zero field. A kernel that predates a
 * field takes a larger struct only if the bytes it does not know are zero (else E2BIG), and one
 * that knows the field ignores it when the size stops short of it: so the size names exactly the
 * fields the request uses (scoped: ABI 6, 24 bytes; handled_access_net: ABI 4, 16 bytes). */
static size_t ruleset_attr_size(const struct vms_landlock_ruleset_attr *a) {
    if (a->scoped) return offsetof(struct vms_landlock_ruleset_attr, scoped) + sizeof a->scoped;
    if (a->handled_access_net)
        return offsetof(struct vms_landlock_ruleset_attr, handled_access_net) + sizeof a->handled_access_net;
    return offsetof(struct vms_landlock_ruleset_attr, handled_access_fs) + sizeof a->handled_access_fs;
}

/* One path-beneath rule. A path that does not exist grants nothing (a rule needs an inode; the
 * manager's preflight refuses a missing rule path outside the runtime dir). On a non-directory the rule
 * keeps only `file_access` of its rights: the kernel refuses the others there (EINVAL). */
static int landlock_add_path(int ruleset, const struct ll_rule *rule, uint64_t file_access) {
    int fd = open(rule->path, O_PATH | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    long r = fstat(fd, &st);
    if (r == 0) {
        struct vms_landlock_path_beneath_attr pb = {
            .allowed_access = S_ISDIR(st.st_mode) ? rule->access : rule->access & file_access,
            .parent_fd = fd,
        };
        r = syscall(VMS_NR_landlock_add_rule, ruleset, VMS_LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    }
    int e = errno;
    (void)close(fd); /* an O_PATH descriptor: released whatever close says, nothing to flush */
    errno = e;
    return r < 0 ? -1 : 0;
}

static int under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* Build the request's filter and load it. Returns 0, or -1 with errno set and *step named.
 * Allow by default; a syscall of another architecture (i386 `int 0x80`, x32), which a deny list
 * keyed on native numbers would not see, kills the process. */
static int seccomp_apply(const struct spawn_req *r, const char **step) {
    *step = "seccomp-init";
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        errno = ENOMEM;
        return -1;
    }
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    for (int i = 0; rc == 0 && i < r->nsc; i++) {
        const struct sc_rule *sc = &r->sc[i];
        *step = "seccomp-rule";
        if (!sc->has_arg) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((uint32_t)sc->err), sc->nr, 0);
        else if (sc->masked)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((uint32_t)sc->err), sc->nr, 1,
                                  SCMP_CMP64(sc->arg, SCMP_CMP_MASKED_EQ, sc->mask, sc->value));
        else
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((uint32_t)sc->err), sc->nr, 1,
                                  SCMP_CMP64(sc->arg, SCMP_CMP_NE, sc->value));
    }
    if (rc == 0) {
        *step = "seccomp-load";
        rc = seccomp_load(ctx);
    }
    seccomp_release(ctx);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return 0;
}

/* The service's view of the runtime dir: what it may see there (its own directory, the sockets
 * shared with it) is cloned, an empty tmpfs covers the directory, the clones are placed back at
 * their paths, and the cover gets its final flags (read-only: nothing can be added beside them).
 * Without it a service whose capabilities bypass file modes (virtiofsd's DAC_OVERRIDE) connects
 * to the vmm's QMP socket in the vmm's 0700 directory: Landlock does not govern connect(2). */
static void apply_view(const struct spawn_req *r, int pipefd) {
    int tree[MAX_SHOW];
    for (int i = 0; i < r->nshow; i++)
        if ((tree[i] = tree_clone(r->show[i])) < 0) child_fail(pipefd, "view-clone");
    /* Mounted writable to make the mount points, then remounted with the request's flags. */
    if (mount("tmpfs", r->view_path, "tmpfs", r->view_flags & ~(unsigned long)MS_RDONLY, r->view_data) < 0)
        child_fail(pipefd, "view-mount");
    for (int i = 0; i < r->nshow; i++) {
        const char *step;
        if (tree_place(tree[i], r->show[i], &step) < 0) child_fail(pipefd, step);
    }
    if (mount(NULL, r->view_path, NULL, MS_REMOUNT | r->view_flags, r->view_data) < 0) child_fail(pipefd, "view-remount");
}

/* Runs in the forked child, already in its cgroup leaf (CLONE_INTO_CGROUP). Never returns. */
static void service_child(struct spawn_req *r, int pipefd) {
    /* stdout/stderr: the pipes the init reads (fd 0 is the init's /dev/null). The service never
     * holds the manager's log, so it can neither write raw records to it nor truncate it. */
    if (dup2(r->out_wr[0], 1) < 0 || dup2(r->out_wr[1], 2) < 0) child_fail(pipefd, "dup2-output");
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
    int use_storage = r->storage_path && r->storage_bind;
    int stree = -1;
    if (use_storage) {
        stree = (int)syscall(VMS_NR_open_tree, AT_FDCWD, r->storage_path, VMS_OPEN_TREE_CLONE | O_CLOEXEC);
        if (stree < 0) child_fail(pipefd, "clone-storage");
    }
    int ktree[MAX_KEEP];
    for (int i = 0; i < r->nkeep; i++) {
        ktree[i] = -1;
        if (!(r->tmp && under(r->keep[i], "/tmp")) && !(r->shm && under(r->keep[i], "/dev/shm"))) continue;
        ktree[i] = (int)syscall(VMS_NR_open_tree, AT_FDCWD, r->keep[i], VMS_OPEN_TREE_CLONE | O_CLOEXEC);
        if (ktree[i] < 0) child_fail(pipefd, "clone-keep");
    }
    if (r->tmp && mount("tmpfs", "/tmp", "tmpfs", r->tmp_flags, r->tmp) < 0) child_fail(pipefd, "mount-tmp");
    if (r->shm && mount("tmpfs", "/dev/shm", "tmpfs", r->shm_flags, r->shm) < 0) child_fail(pipefd, "mount-shm");
    for (int i = 0; i < r->nkeep; i++) {
        if (ktree[i] < 0) continue;
        if (mkdir_p(r->keep[i]) < 0) child_fail(pipefd, "mkdir-keep");
        if (syscall(VMS_NR_move_mount, ktree[i], "", AT_FDCWD, r->keep[i], VMS_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(pipefd, "move-keep");
        if (close(ktree[i]) < 0) child_fail(pipefd, "close-keep");
    }
    if (use_storage) {
        const char *sp = r->storage_path;
        if (mkdir_p(sp) < 0) child_fail(pipefd, "mkdir-storage");
        if (syscall(VMS_NR_move_mount, stree, "", AT_FDCWD, sp, VMS_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(pipefd, "move-storage");
        if (close(stree) < 0) child_fail(pipefd, "close-storage");
        struct vms_mount_attr a = {.attr_set = r->storage_set, .attr_clr = r->storage_clr};
        if (syscall(VMS_NR_mount_setattr, AT_FDCWD, sp, 0, &a, sizeof a) < 0) child_fail(pipefd, "setattr-storage");
    } else if (r->storage_path && r->storage_hide) {
        struct stat st;
        if (stat(r->storage_path, &st) == 0 && mount("tmpfs", r->storage_path, "tmpfs", r->hide_flags, r->hide_data) < 0)
            child_fail(pipefd, "hide-storage");
    }
    if (r->view_path) apply_view(r, pipefd);

    /* Landlock ruleset, as the request gives it: built now, after the final mounts (rules follow
     * inodes), enforced last. */
    int ruleset = -1;
    if (r->landlock) {
        struct vms_landlock_ruleset_attr attr = {.handled_access_fs = r->ll_fs, .handled_access_net = r->ll_net, .scoped = r->ll_scope};
        ruleset = (int)syscall(VMS_NR_landlock_create_ruleset, &attr, ruleset_attr_size(&attr), 0);
        if (ruleset < 0) child_fail(pipefd, "landlock-create");
        for (int i = 0; i < r->nrules; i++)
            if (landlock_add_path(ruleset, &r->rules[i], r->ll_file) < 0) child_fail(pipefd, "landlock-rule");
        for (int i = 0; i < r->nports; i++) {
            struct vms_landlock_net_port_attr np = {.allowed_access = r->ports[i].access, .port = r->ports[i].port};
            if (syscall(VMS_NR_landlock_add_rule, ruleset, VMS_LANDLOCK_RULE_NET_PORT, &np, 0) < 0)
                child_fail(pipefd, "landlock-port");
        }
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
    /* A fresh, empty session keyring instead of the one inherited from the init (the manager's):
     * joined after the uid switch so it belongs to the service's uid (and its key quota), not
     * root's. It links nothing, not even the uid's user keyring. ENOSYS: a kernel without keys
     * has nothing to inherit. */
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS) child_fail(pipefd, "session-keyring");
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
        if (syscall(VMS_NR_landlock_restrict_self, ruleset, r->ll_flags) < 0) child_fail(pipefd, "landlock-restrict");
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
    /* seccomp last: after no_new_privs (which it needs) and every step above, so none of them can
     * be denied by it; only execve and, on failure, child_fail's write and _exit come after. */
    if (r->nsc > 0) {
        const char *step;
        if (seccomp_apply(r, &step) < 0) child_fail(pipefd, step);
    }
    execve(r->argv[0], r->argv, r->envp);
    child_fail(pipefd, "execve");
}

/* listen=<target fd>,<mode octal>,<gid>,<backlog>,<path> */
static int add_listen(struct spawn_req *r, char *v) {
    if (r->nlisten >= MAX_LISTEN) return -1;
    char *f[4];
    for (int i = 0; i < 4; i++) {
        char *c = strchr(v, ',');
        if (!c) return -1;
        *c = '\0';
        f[i] = v;
        v = c + 1;
    }
    unsigned long long fd, mode, gid, backlog;
    if (parse_ul(f[0], 10, &fd) < 0 || fd < 3 || fd > LISTEN_FD_MAX || parse_ul(f[1], 8, &mode) < 0 ||
        mode > 0777 || parse_ul(f[2], 10, &gid) < 0 || gid >= UINT32_MAX || parse_ul(f[3], 10, &backlog) < 0 ||
        backlog < 1 || backlog > 4096 || v[0] != '/')
        return -1;
    for (int i = 0; i < r->nlisten; i++)
        if (r->listen[i].target == (int)fd) return -1;
    struct listen_req *l = &r->listen[r->nlisten++];
    l->target = (int)fd;
    l->mode = (unsigned)mode;
    l->gid = (gid_t)gid;
    l->backlog = (int)backlog;
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
    /* The file gets its mode from the umask at bind (0777 & ~umask), not from a chmod(2) after
     * it, which would follow a symlink put at the path in between. umask(2) cannot fail, and the
     * init is single-threaded. */
    mode_t old = umask(~l->mode & 0777);
    int bound = bind(fd, (struct sockaddr *)&a, sizeof a);
    e = errno;
    umask(old);
    errno = e;
    if (bound < 0) failed = "listen-bind";
    else if (lchown(l->path, uid, l->gid) < 0) failed = "listen-chown";
    else if (listen(fd, l->backlog) < 0) failed = "listen";
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

/* rule=<allowed_access hex>,<path>: the path is everything after the first comma. */
static int add_rule(struct spawn_req *r, char *v) {
    if (r->nrules >= MAX_RULES) return -1;
    char *c = strchr(v, ',');
    if (!c) return -1;
    *c = '\0';
    unsigned long long access;
    if (parse_ul(v, 16, &access) < 0 || access == 0 || c[1] != '/') return -1;
    r->rules[r->nrules].access = access;
    r->rules[r->nrules].path = c + 1;
    r->nrules++;
    return 0;
}

/* sc=<name>,<errno>[,<arg>,ne,<value hex> | ,<arg>,me,<mask hex>,<value hex>]. The name must be a
 * syscall of this architecture: libseccomp's negative pseudo-numbers (a syscall another
 * architecture has, like socketcall) are refused too, since a rule on them would deny nothing. */
static int add_seccomp(struct spawn_req *r, char *v) {
    if (r->nsc >= MAX_SECCOMP) return -1;
    char *f[6] = {v};
    int n = 1;
    for (char *c = v; *c && n < 6; c++) {
        if (*c != ',') continue;
        *c = '\0';
        f[n++] = c + 1;
    }
    if (strchr(f[n - 1], ',')) return -1; /* more than 6 fields */
    struct sc_rule *sc = &r->sc[r->nsc];
    memset(sc, 0, sizeof *sc);
    if (n < 2 || f[0][0] == '\0') return -1;
    sc->nr = seccomp_syscall_resolve_name(f[0]);
    if (sc->nr < 0) return -1; /* __NR_SCMP_ERROR, or not a syscall of this architecture */
    unsigned long long u;
    if (parse_ul(f[1], 10, &u) < 0 || u < 1 || u > 4095) return -1;
    sc->err = (int)u;
    if (n > 2) {
        unsigned long long idx;
        if (n < 5 || parse_ul(f[2], 10, &idx) < 0 || idx > 5) return -1;
        sc->has_arg = 1;
        sc->arg = (unsigned)idx;
        if (strcmp(f[3], "ne") == 0) {
            if (n != 5 || parse_ul(f[4], 16, &u) < 0) return -1;
            sc->value = u;
        } else if (strcmp(f[3], "me") == 0) {
            unsigned long long m;
            if (n != 6 || parse_ul(f[4], 16, &m) < 0 || parse_ul(f[5], 16, &u) < 0 || (u & ~m)) return -1;
            sc->masked = 1;
            sc->mask = m;
            sc->value = u;
        } else {
            return -1;
        }
    }
    r->nsc++;
    return 0;
}

/* The mount(2) flags a tmpfs of the request may carry (MS_RDONLY, NOSUID, NODEV, NOEXEC). */
#define TMPFS_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* <flags hex>,<mount data>: the data is everything after the first comma. */
static int flags_data(char *v, unsigned long *flags, const char **data) {
    char *c = strchr(v, ',');
    if (!c) return -1;
    *c = '\0';
    unsigned long long f;
    if (parse_ul(v, 16, &f) < 0 || (f & ~(unsigned long long)TMPFS_FLAGS)) return -1;
    *flags = (unsigned long)f;
    *data = c + 1;
    return 0;
}

/* storagebind=<attr_set hex>,<attr_clr hex>: mount_setattr(2) attributes, disjoint. */
static int storage_attrs(struct spawn_req *r, char *v) {
    char *c = strchr(v, ',');
    if (!c || r->storage_bind) return -1;
    *c = '\0';
    unsigned long long set, clr;
    const unsigned long long known = VMS_MOUNT_ATTR_RDONLY | VMS_MOUNT_ATTR_NOSUID | VMS_MOUNT_ATTR_NODEV | VMS_MOUNT_ATTR_NOEXEC;
    if (parse_ul(v, 16, &set) < 0 || parse_ul(c + 1, 16, &clr) < 0 || ((set | clr) & ~known) || (set & clr)) return -1;
    r->storage_bind = 1;
    r->storage_set = set;
    r->storage_clr = clr;
    return 0;
}

/* The Landlock keys, a bit each: each at most once. */
enum { LLK_FS = 1, LLK_SCOPE = 2, LLK_FLAGS = 4, LLK_FILE = 8, LLK_RULE = 16, LLK_NET = 32, LLK_PORT = 64 };

/* port=<allowed_access hex>,<port decimal>: one LANDLOCK_RULE_NET_PORT rule. */
static int add_port(struct spawn_req *r, char *v) {
    if (r->nports >= MAX_PORTS) return -1;
    char *c = strchr(v, ',');
    if (!c) return -1;
    *c = '\0';
    unsigned long long access, port;
    if (parse_ul(v, 16, &access) < 0 || access == 0 || parse_ul(c + 1, 10, &port) < 0 || port > 65535) return -1;
    r->ports[r->nports].access = access;
    r->ports[r->nports].port = port;
    r->nports++;
    return 0;
}

/* A once-only hex field of a Landlock key, at most `max`. */
static int ll_hex(const char *v, int key, int *seen, unsigned long long max, unsigned long long *out) {
    if (*seen & key) return -1;
    *seen |= key;
    return parse_ul(v, 16, out) < 0 || *out > max ? -1 : 0;
}

int spawn_parse(struct spawn_req *r, char **tok, int n, const char **field) {
    memset(r, 0, sizeof *r);
    r->out_line = MAX_OUT_LINE; /* the manager always sends outline= (its policy) */
    r->out_rd[0] = r->out_rd[1] = r->out_wr[0] = r->out_wr[1] = -1;
    int ll_seen = 0;
    for (int i = 0; i < n; i++) {
        char *kv = tok[i];
        char *eq = strchr(kv, '=');
        if (!eq) {
            *field = "parse";
            return -1;
        }
        *eq = '\0';
        char *v = eq + 1;
        unsigned long long u = 0;
        int bad = 0;
        if (strcmp(kv, "name") == 0) r->name = v;
        else if (strcmp(kv, "leaf") == 0) r->leaf = v;
        else if (strcmp(kv, "uid") == 0) bad = parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX, r->uid = (uid_t)u;
        else if (strcmp(kv, "gid") == 0) bad = parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX, r->gid = (gid_t)u;
        else if (strcmp(kv, "group") == 0) {
            bad = r->ngroups >= MAX_GROUPS || parse_ul(v, 10, &u) < 0 || u >= UINT32_MAX;
            if (!bad) r->groups[r->ngroups++] = (gid_t)u;
        } else if (strcmp(kv, "cap") == 0) bad = add_cap_list(r, v) < 0;
        else if (strcmp(kv, "secbits") == 0) {
            bad = parse_ul(v, 10, &u) < 0 || u > 0xff;
            r->secbits = (unsigned)u;
        } else if (strcmp(kv, "listen") == 0) bad = add_listen(r, v) < 0;
        else if (strcmp(kv, "tmp") == 0) bad = r->tmp || flags_data(v, &r->tmp_flags, &r->tmp) < 0;
        else if (strcmp(kv, "shm") == 0) bad = r->shm || flags_data(v, &r->shm_flags, &r->shm) < 0;
        else if (strcmp(kv, "storagebind") == 0) bad = r->storage_hide || storage_attrs(r, v) < 0;
        else if (strcmp(kv, "storagehide") == 0) {
            bad = r->storage_bind || r->storage_hide || flags_data(v, &r->hide_flags, &r->hide_data) < 0;
            r->storage_hide = !bad;
        } else if (strcmp(kv, "storagepath") == 0) r->storage_path = v;
        else if (strcmp(kv, "keep") == 0) {
            bad = r->nkeep >= MAX_KEEP;
            if (!bad) r->keep[r->nkeep++] = v;
        } else if (strcmp(kv, "view") == 0) bad = r->view_data || flags_data(v, &r->view_flags, &r->view_data) < 0;
        else if (strcmp(kv, "viewpath") == 0) bad = r->view_path || v[0] != '/', r->view_path = v;
        else if (strcmp(kv, "show") == 0) {
            bad = r->nshow >= MAX_SHOW || v[0] != '/';
            if (!bad) r->show[r->nshow++] = v;
        } else if (strcmp(kv, "llfs") == 0) bad = ll_hex(v, LLK_FS, &ll_seen, UINT64_MAX, &u) < 0, r->ll_fs = u;
        else if (strcmp(kv, "llscope") == 0) bad = ll_hex(v, LLK_SCOPE, &ll_seen, UINT64_MAX, &u) < 0, r->ll_scope = u;
        else if (strcmp(kv, "llflags") == 0) bad = ll_hex(v, LLK_FLAGS, &ll_seen, UINT32_MAX, &u) < 0, r->ll_flags = (uint32_t)u;
        else if (strcmp(kv, "llfile") == 0) bad = ll_hex(v, LLK_FILE, &ll_seen, UINT64_MAX, &u) < 0, r->ll_file = u;
        else if (strcmp(kv, "llnet") == 0) bad = ll_hex(v, LLK_NET, &ll_seen, UINT64_MAX, &u) < 0 || u == 0, r->ll_net = u;
        else if (strcmp(kv, "port") == 0) {
            ll_seen |= LLK_PORT;
            bad = add_port(r, v) < 0;
        }
        else if (strcmp(kv, "rule") == 0) {
            ll_seen |= LLK_RULE;
            bad = add_rule(r, v) < 0;
        } else if (strcmp(kv, "sc") == 0) bad = add_seccomp(r, v) < 0;
        else if (strcmp(kv, "arg") == 0) {
            bad = r->argc >= MAX_ARGS - 1;
            if (!bad) r->argv[r->argc++] = v;
        } else if (strcmp(kv, "env") == 0) {
            bad = r->envc >= MAX_ARGS - 1;
            if (!bad) r->envp[r->envc++] = v;
        } else if (strcmp(kv, "cwd") == 0) r->cwd = v;
        else if (strcmp(kv, "outline") == 0) {
            bad = parse_ul(v, 10, &u) < 0 || u < 16 || u > MAX_OUT_LINE;
            r->out_line = (unsigned)u;
        } else bad = 1;
        if (bad) {
            *field = kv;
            return -1;
        }
    }
    r->argv[r->argc] = NULL;
    r->envp[r->envc] = NULL;
    if (!r->name || r->argc == 0) {
        *field = "parse";
        return -1;
    }
    /* A view is view= and viewpath= together; what it shows lies strictly under viewpath. */
    if (!r->view_data != !r->view_path || (r->nshow > 0 && !r->view_path)) { /* show= alone too */
        *field = r->view_path ? "viewpath" : "view";
        return -1;
    }
    for (int i = 0; i < r->nshow; i++)
        if (!under(r->show[i], r->view_path) || strcmp(r->show[i], r->view_path) == 0) {
            *field = "show";
            return -1;
        }
    /* Landlock is on iff llfs= came; the other keys mean nothing without it. */
    r->landlock = (ll_seen & LLK_FS) != 0;
    if (ll_seen && !r->landlock) {
        *field = "llfs";
        return -1;
    }
    /* A rule grants only handled rights (the kernel would refuse it after the clone). */
    for (int i = 0; i < r->nrules; i++) {
        if (r->rules[i].access & ~r->ll_fs) {
            *field = "rule";
            return -1;
        }
    }
    for (int i = 0; i < r->nports; i++) {
        if (r->ports[i].access & ~r->ll_net) {
            *field = "port";
            return -1;
        }
    }
    return 0;
}

static long start_failed(const char **step, const char *what, int err) {
    *step = what;
    errno = err;
    return -1;
}

static void close_pair(int fds[2], const char *what) {
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0) continue;
        close_or_warn(fds[i], what);
        fds[i] = -1;
    }
}

/* The service's stdout and stderr pipes: the write ends for the child (CLOEXEC: dup2 onto 1 and
 * 2 makes its own copies), the read ends non-blocking for PID 1's loop. */
static int open_output(struct spawn_req *r) {
    for (int i = 0; i < 2; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) return -1;
        r->out_rd[i] = p[0];
        r->out_wr[i] = p[1];
        if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) return -1;
    }
    return 0;
}

long spawn_start(struct spawn_req *r, int have_cgroup_fd, const char **step) {
    int cgfd = -1;
    if (r->leaf) {
        if (!have_cgroup_fd) return start_failed(step, "no-cgroup-fd", EBADF);
        if (strchr(r->leaf, '/') || strcmp(r->leaf, "..") == 0 || strcmp(r->leaf, ".") == 0)
            return start_failed(step, "leaf", EINVAL);
        cgfd = openat(VMS_CGROUP_FD, r->leaf, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (cgfd < 0) return start_failed(step, "open-leaf", errno);
    }
    for (int i = 0; i < r->nlisten; i++) {
        const char *failed;
        r->listen[i].fd = open_listener(&r->listen[i], r->uid, &failed);
        if (r->listen[i].fd < 0) {
            int e = errno;
            close_listeners(r);
            if (cgfd >= 0) close_or_warn(cgfd, "cgroup leaf");
            return start_failed(step, failed, e);
        }
    }
    int pipefd[2];
    if (open_output(r) < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
        int e = errno;
        close_listeners(r);
        close_pair(r->out_rd, "output pipe");
        close_pair(r->out_wr, "output pipe");
        if (cgfd >= 0) close_or_warn(cgfd, "cgroup leaf");
        return start_failed(step, "pipe", e);
    }
    /* clone3 places the child in its leaf atomically: it runs nothing outside it. */
    struct vms_clone_args ca = {.exit_signal = SIGCHLD};
    if (cgfd >= 0) {
        ca.flags = VMS_CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)cgfd;
    }
    long pid = syscall(VMS_NR_clone3, &ca, sizeof ca);
    if (pid == 0) {
        (void)close(pipefd[0]); /* CLOEXEC anyway; the child writes only to the other end */
        service_child(r, pipefd[1]);
    }
    int clone_errno = errno;
    /* The child holds its own copies now (or failed): the socket files stay for the clients. */
    close_listeners(r);
    if (cgfd >= 0) close_or_warn(cgfd, "cgroup leaf");
    close_or_warn(pipefd[1], "pipe");
    close_pair(r->out_wr, "output pipe");
    if (pid < 0) {
        close_or_warn(pipefd[0], "pipe");
        close_pair(r->out_rd, "output pipe");
        return start_failed(step, "clone3", clone_errno);
    }
    /* static: *step may point into it after the return. */
    static struct exec_failure f;
    ssize_t got;
    do got = read(pipefd[0], &f, sizeof f);
    while (got < 0 && errno == EINTR);
    int read_errno = errno;
    close_or_warn(pipefd[0], "pipe");
    if (got == 0) return pid; /* exec succeeded (the CLOEXEC pipe closed); out_rd are PID 1's now */
    close_pair(r->out_rd, "output pipe");
    /* The child failed before exec and exits 127: reap it now so it is never reported. */
    int st;
    while (waitpid((pid_t)pid, &st, 0) < 0) {
        if (errno == EINTR) continue;
        /* Cannot happen for our own child; PID 1's loop would reap it later, unreported. */
        fprintf(stderr, "vmsandbox-init: waitpid(failed child %ld): %s\n", pid, strerror(errno));
        break;
    }
    if (got < 0) return start_failed(step, "read-pipe", read_errno);
    if (got != (ssize_t)sizeof f) return start_failed(step, "short-report", EIO);
    f.step[sizeof f.step - 1] = '\0';
    return start_failed(step, f.step, f.err);
}
