/* Detached mount trees: what a view keeps. A path is cloned (open_tree OPEN_TREE_CLONE) before a
 * tmpfs covers it, and the clone placed back at the same path on the cover afterwards, onto a
 * mount point of its own type (a directory, or an empty file for a socket or a file). Used by the
 * init's `clone`/`place` requests (the VM's view) and by the spawner (a service's view). */
#ifndef VMSANDBOX_TREE_H
#define VMSANDBOX_TREE_H

/* mkdir -p for an absolute path (mode 0755); existing directories are fine. */
int mkdir_p(const char *path);

/* A detached recursive copy of the mount tree at path (CLOEXEC fd), or -1 with errno. */
int tree_clone(const char *path);

/* Create a mount point for tree at path (parents 0755, then a directory or an empty 0600 file,
 * as the tree's root is), attach tree there and close it. Returns 0, or -1 with errno set and
 * *step naming what failed; tree is closed either way. */
int tree_place(int tree, const char *path, const char **step);

#endif
