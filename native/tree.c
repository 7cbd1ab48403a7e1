/* Detached mount trees (tree.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto.h"
#include "tree.h"

/* Copy an absolute path into buf (PATH_MAX bytes); its length, or -1 with EINVAL. */
static long copy_path(char *buf, const char *path) {
    size_t n = strlen(path);
    if (n == 0 || n >= PATH_MAX || path[0] != '/') {
        errno = EINVAL;
        return -1;
    }
    memcpy(buf, path, n + 1);
    return (long)n;
}

int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    long len = copy_path(buf, path);
    if (len < 0) return -1;
    size_t n = (size_t)len;
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        buf[i] = c;
    }
    return 0;
}

int tree_clone(const char *path) {
    return (int)syscall(VMS_NR_open_tree, AT_FDCWD, path, VMS_OPEN_TREE_CLONE | VMS_AT_RECURSIVE | O_CLOEXEC);
}

/* Parents of path (not path itself). */
static int mkdir_parents(const char *path) {
    char buf[PATH_MAX];
    if (copy_path(buf, path) < 0) return -1;
    char *slash = strrchr(buf, '/');
    if (slash == buf) return 0;
    *slash = '\0';
    return mkdir_p(buf);
}

static int fail(int tree, const char **step, const char *what) {
    int e = errno;
    (void)close(tree); /* a detached tree: released whatever close says */
    errno = e;
    *step = what;
    return -1;
}

int tree_place(int tree, const char *path, const char **step) {
    struct stat st;
    if (fstat(tree, &st) < 0) return fail(tree, step, "tree-stat");
    if (mkdir_parents(path) < 0) return fail(tree, step, "tree-mkdir");
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST) return fail(tree, step, "tree-mkdir");
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) return fail(tree, step, "tree-mountpoint");
        if (close(fd) < 0) return fail(tree, step, "tree-mountpoint");
    }
    if (syscall(VMS_NR_move_mount, tree, "", AT_FDCWD, path, VMS_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail(tree, step, "tree-move");
    if (close(tree) < 0) {
        *step = "tree-close";
        return -1;
    }
    return 0;
}
