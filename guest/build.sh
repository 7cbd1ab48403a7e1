#!/bin/sh
# Build (or reuse) the vmsandbox test guest from Debian packages only: the kernel of
# linux-image-amd64 (downloaded and unpacked, never installed) as an uncompressed vmlinux (PVH
# entry), and an initramfs of busybox-static + guest/init.sh + the modules it needs, in load order.
#
#   guest/build.sh            prints the guest directory (…/current, a symlink to the version)
#
# Cache: $VMSANDBOX_GUEST_CACHE, else /var/cache/vmsandbox-guest (root) or
# ${XDG_CACHE_HOME:-~/.cache}/vmsandbox-guest. Idempotent: a guest whose stamp matches the kernel
# version and the hash of this script and init.sh is reused. Needs: apt-get, dpkg-deb, xz/zstd/gzip.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${VMSANDBOX_GUEST_CACHE:-}" ]; then cache=$VMSANDBOX_GUEST_CACHE
elif [ "$(id -u)" = 0 ]; then cache=/var/cache/vmsandbox-guest
else cache=${XDG_CACHE_HOME:-$HOME/.cache}/vmsandbox-guest; fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one builder at a time (tests may run concurrently)

say() { echo "guest/build.sh: $*" >&2; }
# The kernel package linux-image-amd64 currently points at.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || { say "cannot resolve linux-image-amd64 (run apt-get update)"; exit 1; }
kver=${kpkg#linux-image-}
kver=${kver%-unsigned}
stamp="$kver $(cat "$here/build.sh" "$here/init.sh" | sha256sum | cut -c1-16)"
out=$cache/$kver
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinux" ] && [ -f "$out/initrd.img" ]; then
  ln -sfn "$kver" "$cache/current"
  echo "$cache/current"
  exit 0
fi
say "building the guest for kernel $kver in $out"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download writes into the current directory; as root it may warn about the _apt sandbox.
apt-get download -q "$kpkg" busybox-static kmod >/dev/null 2>&1 || apt-get download "$kpkg" busybox-static kmod
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done
vmlinuz=$(ls root/boot/vmlinuz-* | head -n1)

# vmlinux: the package has only vmlinuz (bzImage). Find the compressed payload by its magic and
# decompress until an ELF comes out (the approach of the kernel's scripts/extract-vmlinux).
extract() { # magic-as-printf-escapes decompressor...
  magic=$1; shift
  for off in $(LC_ALL=C grep -aboF "$(printf "$magic")" "$vmlinuz" 2>/dev/null | cut -d: -f1); do
    tail -c +$((off + 1)) "$vmlinuz" | "$@" > vmlinux.try 2>/dev/null || true
    if [ "$(head -c4 vmlinux.try | od -An -c | tr -d ' ')" = "177ELF" ]; then mv vmlinux.try vmlinux; return 0; fi
  done
  return 1
}
extract '\375\067\172\130\132\000' xz -dc ||
  extract '\050\265\057\375' zstd -dc ||
  extract '\037\213\010' gzip -dc ||
  { say "could not extract vmlinux from $vmlinuz"; exit 1; }

# Modules and their load order, from kmod (depmod + modprobe --show-depends against the unpacked
# tree; the package ships no modules.dep and the host may have no kmod).
mroot=root/lib/modules/$kver
want="virtio_pci virtiofs button evdev"
# kmod dispatches on argv[0]: call it through depmod/modprobe links.
mkdir -p kbin
ln -sf "$work/root/bin/kmod" kbin/depmod
ln -sf "$work/root/bin/kmod" kbin/modprobe
order=""
if kbin/depmod -b root "$kver" 2>/dev/null; then
  # One module per call: modprobe reads further words as module parameters.
  order=$(for m in $want; do kbin/modprobe -d root -S "$kver" --show-depends "$m"; done 2>/dev/null | sed -n 's/^insmod \([^ ]*\).*/\1/p')
fi
if [ -z "$order" ]; then
  say "kmod unusable here: using the measured load order"
  order=""
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci fuse virtiofs button evdev; do
    f=$(find "$mroot" -name "$m.ko*" | head -n1)
    [ -n "$f" ] && order="$order $f"
  done
fi
mkdir -p initrd/bin initrd/lib/modules
: > initrd/modules.order
seen=""
for f in $order; do
  f=${f#"$work"/}; f=${f#/}
  [ -f "$f" ] || f=root/${f#root/}
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
mv vmlinux initrd.img "$out.new/"
cp initrd/modules.order "$out.new/"
echo "$stamp" > "$out.new/stamp"
rm -rf "$out"
mv "$out.new" "$out"
ln -sfn "$kver" "$cache/current"
say "guest ready: $(du -h "$out/vmlinux" | cut -f1) vmlinux, $(du -h "$out/initrd.img" | cut -f1) initrd; modules: $(tr '\n' ' ' < "$out/modules.order")"
echo "$cache/current"
