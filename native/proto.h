/* Shared definitions for vmsandbox-init and the shim: raw syscall numbers and kernel structs that
 * Debian 12's headers (Landlock ABI 2, no mount_setattr in older glibc) do not provide. x86_64 and
 * aarch64 share these syscall numbers (the "generic" table after 424). */
#ifndef VMSANDBOX_PROTO_H
#define VMSANDBOX_PROTO_H

#include <stdint.h>

#define VMS_NR_pidfd_send_signal 424
#define VMS_NR_open_tree 428
#define VMS_NR_move_mount 429
#define VMS_NR_pidfd_open 434
#define VMS_NR_clone3 435
#define VMS_NR_close_range 436
#define VMS_NR_mount_setattr 442
#define VMS_NR_landlock_create_ruleset 444
#define VMS_NR_landlock_add_rule 445
#define VMS_NR_landlock_restrict_self 446

#define VMS_CLONE_PIDFD 0x00001000ULL
#define VMS_CLONE_NEWNS 0x00020000ULL
#define VMS_CLONE_NEWPID 0x20000000ULL
#define VMS_CLONE_NEWIPC 0x08000000ULL
#define VMS_CLONE_NEWNET 0x40000000ULL
#define VMS_CLONE_INTO_CGROUP 0x200000000ULL

/* clone_args as of Linux 5.7 (CLONE_ARGS_SIZE_VER2): 88 bytes, needed for the cgroup field. */
struct vms_clone_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
};
_Static_assert(sizeof(struct vms_clone_args) == 88, "clone_args must be 88 bytes");

/* mount_setattr(2) */
struct vms_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
#define VMS_AT_RECURSIVE 0x8000
#define VMS_MOUNT_ATTR_RDONLY 0x1
#define VMS_MOUNT_ATTR_NOSUID 0x2
#define VMS_MOUNT_ATTR_NODEV 0x4
#define VMS_MOUNT_ATTR_NOEXEC 0x8
#define VMS_OPEN_TREE_CLONE 1
#define VMS_MOVE_MOUNT_F_EMPTY_PATH 0x4

/* Landlock's structs, up to ABI 7. The init sets only what a spawn request gives it: the masks
 * and flags (which rights, which scopes) are the manager's (plan/landlock.ts names every bit). The
 * attr is passed with the size of its last non-zero field (spawn.c, ruleset_attr_size): a size
 * that stops short of `scoped` makes the kernel ignore it. */
struct vms_landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};
_Static_assert(sizeof(struct vms_landlock_ruleset_attr) == 24, "ruleset attr must be 24 bytes");

struct vms_landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define VMS_LANDLOCK_RULE_PATH_BENEATH 1

/* landlock_net_port_attr (ABI 4) */
struct vms_landlock_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
} __attribute__((packed));

#define VMS_LANDLOCK_RULE_NET_PORT 2

/* The control socket is passed to vmsandbox-init at this fd, the VM's cgroup directory (O_PATH)
 * at VMS_CGROUP_FD (or not at all: then services are not placed in cgroups). */
#define VMS_CONTROL_FD 3
#define VMS_CGROUP_FD 4

#endif
