#!/bin/busybox sh
# /init of the kernel lab's guest (busybox-static in an initramfs; see docs/lab.md):
#   1. load the virtio/9p/overlay modules in /modules.order;
#   2. mount the host's root (9p tag "hostroot", read-only) with a tmpfs overlay on top, so the
#      guest runs the host's node, project and node_modules and may write anywhere (in guest RAM);
#   3. in it: fresh proc, sysfs, devtmpfs, devpts, tmpfs on /tmp /run /var/tmp /dev/shm, cgroup2
#      on /sys/fs/cgroup (cgroup_no_v1=all on the command line: every controller is in v2), and the
#      writable 9p tag "results" (the host's test-output/lab) on /run/lab/results;
#   4. switch_root into it; PID 1 then runs /run/lab/results/job.sh (written by lab/run.mjs), its
#      output to the console and results/output.log, and powers off (reboot(RB_POWER_OFF)).
# Anything that fails on the way is written to the console and the guest powers off: lab/run.mjs
# then finds no exit-code file and fails.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "lab-guest: $*" > /dev/console; }
die() { log "$*"; poweroff -f; sleep 10; }
up() { cut -d' ' -f1 /proc/uptime; }
while read -r m; do
  insmod "/lib/modules/$m" || log "insmod $m failed"
done < /modules.order
mkdir -p /host /upper /newroot
opts=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o "$opts,ro,cache=loose" hostroot /host || die "9p mount of hostroot failed"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/u /upper/w
if ! mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /newroot; then
  log "overlay failed: the host root read-only"
  mount --bind /host /newroot
fi
n=/newroot
mount -t proc proc $n/proc
mount -t sysfs sysfs $n/sys
mount -t devtmpfs devtmpfs $n/dev
mkdir -p $n/dev/pts $n/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $n/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $n/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 $n/sys/fs/cgroup || die "cgroup2 mount failed"
mount -t securityfs securityfs $n/sys/kernel/security 2>/dev/null
# The project may itself live under /tmp, /var/tmp or /run (a CI clone in /tmp): it is set aside
# before the fresh tmpfs cover those, and put back on them (vmsandbox.lab.repo= names it).
repo=$(sed -n 's/.*vmsandbox\.lab\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /keep
[ -n "$repo" ] && [ -d "$n$repo" ] && mount --bind "$n$repo" /keep
for d in tmp var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $n/$d; done
mount -t tmpfs -o mode=0755 tmpfs $n/run
if [ -n "$repo" ] && [ ! -e "$n$repo/package.json" ]; then
  mkdir -p "$n$repo" && mount --move /keep "$n$repo" || die "could not keep the project at $repo"
elif mountpoint -q /keep; then
  umount /keep
fi
mkdir -p $n/run/lab/results
mount -t 9p -o "$opts,cache=none" results $n/run/lab/results || die "9p mount of results failed"
cp /bin/busybox $n/run/lab/busybox
log "root ready at $(up) s; controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || cat $n/sys/fs/cgroup/cgroup.controllers)"
cat > $n/run/lab/stage2 <<'S'
# PID 1 after switch_root (busybox sh): run the job, keep its status, power off.
b=/run/lab/busybox
r=/run/lab/results
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
echo "lab-guest: job starting at $($b cut -d' ' -f1 /proc/uptime) s" > /dev/console
/bin/sh $r/job.sh 2>&1 | $b tee $r/output.log > /dev/console
echo "lab-guest: job done at $($b cut -d' ' -f1 /proc/uptime) s" > /dev/console
$b sync
$b umount $r
$b poweroff -f
S
exec switch_root /newroot /run/lab/busybox sh /run/lab/stage2
