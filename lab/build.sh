#!/bin/sh
# Build (or reuse) the kernel lab's guest: the same Debian kernel as the test guest (guest/build.sh
# builds it; its vmlinux is reused) with an initramfs of busybox-static + lab/init.sh + the modules
# the lab needs: virtio_pci, the 9p client over virtio (9p, 9pnet_virtio) and overlay, in the load
# order kmod computes. See docs/lab.md.
#
#   lab/build.sh            prints the lab directory (vmlinux, initrd.img, modules.order, stamp)
#
# Cache: next to the test guest's (guest/build.sh's cache), in lab-<kernel version>. Idempotent: a
# stamp of the kernel version and the hash of this script and lab/init.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "lab/build.sh: $*" >&2; }
guest=$(sh "$here/../guest/build.sh")
guest=$(cd "$guest" && pwd -P)
cache=$(dirname "$guest")
kver=$(basename "$guest")
exec 9>"$cache/.lab-lock"
flock 9
stamp="$kver $(cat "$here/build.sh" "$here/init.sh" | sha256sum | cut -c1-16)"
out=$cache/lab-$kver
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/initrd.img" ]; then
  echo "$out"
  exit 0
fi
say "building the lab guest for kernel $kver in $out"
work=$(mktemp -d "$cache/.lab-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
apt-get download -q "$kpkg" busybox-static kmod >/dev/null 2>&1 || apt-get download "$kpkg" busybox-static kmod
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done
mkdir -p kbin
ln -sf "$work/root/bin/kmod" kbin/depmod
ln -sf "$work/root/bin/kmod" kbin/modprobe
kbin/depmod -b root "$kver"
want="virtio_pci 9pnet_virtio 9p overlay"
order=$(for m in $want; do kbin/modprobe -d root -S "$kver" --show-depends "$m"; done | sed -n 's/^insmod \([^ ]*\).*/\1/p')
[ -n "$order" ] || { say "modprobe --show-depends found nothing"; exit 1; }
mkdir -p initrd/bin initrd/lib/modules
: > initrd/modules.order
seen=""
for f in $order; do
  base=$(basename "$f")
  case " $seen " in *" $base "*) continue ;; esac
  seen="$seen $base"
  case "$f" in
    *.ko.xz) xz -dc "$f" > "initrd/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -dcq "$f" > "initrd/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *) cp "$f" "initrd/lib/modules/$base" ;;
  esac
  echo "$base" >> initrd/modules.order
done
cp root/bin/busybox initrd/bin/busybox
cp "$here/init.sh" initrd/init
chmod 0755 initrd/init initrd/bin/busybox
(cd initrd && find . | sort | "$work/root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > initrd.img
rm -rf "$out.new"
mkdir -p "$out.new"
mv initrd.img "$out.new/"
ln -s "$guest/vmlinux" "$out.new/vmlinux"
cp initrd/modules.order "$out.new/"
echo "$stamp" > "$out.new/stamp"
rm -rf "$out"
mv "$out.new" "$out"
say "lab guest ready: $(du -h "$out/initrd.img" | cut -f1) initrd; modules: $(tr '\n' ' ' < "$out/modules.order")"
echo "$out"
