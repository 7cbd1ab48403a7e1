/* The spawner of vmsandbox-init: a `spawn` request's key=value fields parsed and checked
 * (spawn_parse), and the service started from them (spawn_start). No policy: uid, caps, tmpfs
 * data, Landlock masks and flags all come from the request (effects/linux/spawnRequest.ts encodes
 * the manager's plan, plan/service.ts). PID 1's registry of services, its replies and its reaping
 * stay in vmsandbox-init.c. */
#ifndef VMSANDBOX_SPAWN_H
#define VMSANDBOX_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

#define MAX_LISTEN 8
#define MAX_KEEP 16
#define MAX_SHOW 32
#define MAX_GROUPS 64
#define MAX_RULES 512
#define MAX_PORTS 64
#define MAX_ARGS 1024 /* argv and envp each, with their NULL */
#define MAX_SECCOMP 128
/* The longest output line the init forwards (outline= may ask for less): the capacity of each
 * output stream's buffer in the init. */
#define MAX_OUT_LINE 16384

/* A listening unix socket handed to the service at fd `target`. */
struct listen_req {
    int target;
    unsigned mode;
    gid_t gid;
    int backlog;
    const char *path;
    int fd; /* in the init; -1 = not created */
};

/* One landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH). */
struct ll_rule {
    uint64_t access; /* allowed_access; on a non-directory, & spawn_req.ll_file */
    const char *path;
};

/* One seccomp rule (sc=): the syscall answers -errno when its condition holds (always without one). */
struct sc_rule {
    int nr;       /* resolved by libseccomp for the native architecture */
    int err;      /* 1..4095 */
    int has_arg;  /* 0: unconditional */
    unsigned arg; /* argument index 0..5 */
    int masked;   /* 1: (arg & mask) == value; 0: arg != value */
    uint64_t mask, value;
};

/* The strings point into the request line (valid until the next request). */
struct spawn_req {
    const char *name;
    const char *leaf;
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    int ngroups;
    uint64_t keep_caps; /* bit mask of capabilities kept (bounding, permitted, effective, ambient) */
    unsigned secbits;   /* securebits set before the uid switch (e.g. SECBIT_NO_SETUID_FIXUP) */
    struct listen_req listen[MAX_LISTEN];
    int nlisten;
    /* Every flag, mode and size below is the manager's (plan/service.ts): the init applies them. */
    const char *tmp;         /* tmpfs mount data for a private /tmp, NULL = none */
    unsigned long tmp_flags; /* its mount(2) flags */
    const char *shm;         /* the same for a private /dev/shm */
    unsigned long shm_flags;
    const char *storage_path; /* NULL = no storage */
    int storage_bind;         /* storagebind=: the storage bound in, with these mount attributes */
    uint64_t storage_set, storage_clr;
    int storage_hide;         /* storagehide=: an empty tmpfs over the storage path */
    unsigned long hide_flags;
    const char *hide_data;
    const char *keep[MAX_KEEP]; /* paths kept reachable under a private /tmp or /dev/shm */
    int nkeep;
    /* The service's view of the runtime dir (view=, viewpath=, show=*): an empty tmpfs (these
     * flags and data) covers viewpath, and only the show= paths under it are placed back. */
    const char *view_path; /* NULL = no view */
    unsigned long view_flags;
    const char *view_data;
    const char *show[MAX_SHOW];
    int nshow;
    /* Landlock, applied as given: on when llfs= was sent. */
    int landlock;
    uint64_t ll_fs;    /* landlock_ruleset_attr.handled_access_fs */
    uint64_t ll_scope; /* landlock_ruleset_attr.scoped */
    uint32_t ll_flags; /* landlock_restrict_self() flags */
    uint64_t ll_file;  /* the rights a rule keeps on a non-directory */
    uint64_t ll_net;   /* landlock_ruleset_attr.handled_access_net (0: TCP not handled) */
    struct {
        uint64_t access, port;
    } ports[MAX_PORTS]; /* LANDLOCK_RULE_NET_PORT rules */
    int nports;
    struct ll_rule rules[MAX_RULES];
    int nrules;
    /* seccomp, applied as given: allow by default, these rules deny; on when nsc > 0. */
    struct sc_rule sc[MAX_SECCOMP];
    int nsc;
    char *argv[MAX_ARGS];
    int argc;
    char *envp[MAX_ARGS];
    int envc;
    const char *cwd;
    /* stdout and stderr are pipes to the init, never the manager's own fds (outline=: a line
     * longer than this is cut). spawn_start leaves the read ends (O_NONBLOCK, CLOEXEC) in out_rd
     * once execve has succeeded; out_wr are the write ends, the child's fds 1 and 2. */
    unsigned out_line;
    int out_rd[2];
    int out_wr[2];
};

/* Fill *r from the request's key=value tokens (tok[0..n-1], decoded; the keys are cut at their
 * '=' in place). Returns 0, or -1 with *field naming the key that is malformed, out of bounds or
 * missing ("parse" when there is no name or no arg). */
int spawn_parse(struct spawn_req *r, char **tok, int n, const char **field);

/* Start the service: its handed-over sockets, clone3 into its cgroup leaf (under fd 4, which
 * exists when have_cgroup_fd), the child's setup and execve. Returns the pid once execve has
 * succeeded, or -1 with errno set and *step naming what failed (the child's own step if it got
 * that far; it is reaped here and never reported as an exit). */
long spawn_start(struct spawn_req *r, int have_cgroup_fd, const char **step);

#endif
