/* vmsandbox-stop-exec CGROUP_DIR MANAGER_PID FILE [ARG...]: how the manager runs the `command` stop
 * method on the host (effects/linux/stop.ts). The command runs as root outside the sandbox, so it
 * must not outlive the manager's VM: before the command's own code runs, this
 *   1. asks for SIGKILL when the manager dies (PR_SET_PDEATHSIG; the manager spawns it from its
 *      main thread), then checks the manager is still its parent (it may have died before the
 *      prctl, which then never fires);
 *   2. moves itself into CGROUP_DIR (a leaf of the VM's cgroup): everything the command starts is
 *      born there, and a process group or session can be left (setsid) but a cgroup cannot, so the
 *      VM's cgroup.kill (teardown, or `vmsandbox finish` after the manager was SIGKILLed) takes it;
 *   3. execvp's FILE with the environment it was given.
 * A failed step writes "<errno> <step>\n" to fd 3 (close-on-exec, so its EOF without data means the
 * exec worked) and exits 127: the manager turns that into the request's error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define ERR_FD 3

static void fail(const char *step) {
    int e = errno;
    if (dprintf(ERR_FD, "%d %s\n", e, step) < 0) dprintf(2, "vmsandbox-stop-exec: %s: %s\n", step, strerror(e));
    _exit(127);
}

int main(int argc, char **argv) {
    if (fcntl(ERR_FD, F_SETFD, FD_CLOEXEC) < 0) {
        dprintf(2, "vmsandbox-stop-exec: fd %d (the error channel) is not open: %s\n", ERR_FD, strerror(errno));
        _exit(127);
    }
    if (argc < 4) {
        errno = EINVAL;
        fail("usage: vmsandbox-stop-exec CGROUP_DIR MANAGER_PID FILE [ARG...]");
    }
    char *end;
    errno = 0;
    long manager = strtol(argv[2], &end, 10);
    if (errno || *end || manager <= 1) {
        errno = EINVAL;
        fail("manager-pid");
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) fail("pdeathsig");
    if (getppid() != (pid_t)manager) {
        errno = ESRCH;
        fail("manager-gone");
    }
    int dir = open(argv[1], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0) fail("open-cgroup");
    int procs = openat(dir, "cgroup.procs", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (procs < 0) fail("open-cgroup.procs");
    /* "0" moves the writing process. */
    if (write(procs, "0", 1) != 1) fail("move-into-cgroup");
    close(procs);
    close(dir);
    execvp(argv[3], argv + 3);
    fail("execve");
    return 127;
}
