#!/bin/busybox sh
# /init of the vmsandbox test guest (busybox-static in an initramfs). See docs/vm.md.
#   1. load the virtio/virtiofs/button/evdev modules listed in /modules.order (load order);
#   2. mount the virtiofs share (tag "shared") on /mnt and write the marker /mnt/guest-started;
#   3. arm the ACPI power button (busybox acpid, /etc/acpi/PWRF/00000080) and wait until acpid holds
#      the input devices open — a press sent before that is lost;
#   4. only then write /mnt/guest-booted;
#   5. on the button: write /mnt/guest-powerdown, unmount, power off (reboot(RB_POWER_OFF)).
# With "vmsandbox.ignore_powerbutton" on the kernel command line step 3 is skipped and the guest
# ignores the button (to test the forced stop).
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /mnt /tmp /var/log /etc/acpi/PWRF
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "vmsandbox-guest: $*" > /dev/console; }
up() { cut -d' ' -f1 /proc/uptime; }
while read -r m; do
  insmod "/lib/modules/$m" || log "insmod $m failed"
done < /modules.order
mount -t virtiofs shared /mnt || { log "virtiofs mount failed"; poweroff -f; }
echo "started $(up)" > /mnt/guest-started
if grep -q vmsandbox.ignore_powerbutton /proc/cmdline; then
  log "ignoring the power button"
else
  cat > /etc/acpi/PWRF/00000080 <<'H'
#!/bin/sh
echo "powerdown $(cut -d' ' -f1 /proc/uptime)" > /mnt/guest-powerdown
sync
umount /mnt
echo "vmsandbox-guest: power button: powering off" > /dev/console
poweroff -f
H
  chmod 0755 /etc/acpi/PWRF/00000080
  acpid -f -c /etc/acpi -l /var/log/acpid.log &
  apid=$!
  # Armed = acpid holds an input event device open.
  i=0
  until ls -l /proc/$apid/fd 2>/dev/null | grep -q /dev/input/event; do
    i=$((i + 1)); [ $i -gt 400 ] && { log "acpid did not open an input device"; break; }
    sleep 0.05
  done
  log "power button armed"
fi
echo "booted $(up)" > /mnt/guest-booted
sync
log "booted at $(up) s"
while :; do sleep 3600; done
