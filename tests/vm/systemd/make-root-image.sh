#!/bin/bash
# Makes the systemd suite's guest disk: an ext4 image of the cached Debian root (minbase + systemd,
# tests/support/debian-root.sh) with a hostname, and the units a test VM does not need masked.
# fnexec is not in it: the guest's initramfs copies a fresh `meson install --destdir` tree over it
# at every boot, and qemu's snapshot=on drops the writes.
# The Debian packages of fnexec's shared libraries that the root lacks are added with dpkg -x, as
# a package's Depends would pull them in.
# usage: make-root-image.sh DEBIAN_ROOT OUT.ext4 [PACKAGE...]   (DEBIAN_ROOT: the tarball, or a directory)
set -euo pipefail
SRC=$1 OUT=$2
shift 2
WORK=$(mktemp -d "$(dirname "$OUT")/root-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -d "$SRC" ]; then
    cp -a "$SRC/." "$WORK/root"
else
    mkdir "$WORK/root"
    tar -xpf "$SRC" -C "$WORK/root" --numeric-owner --xattrs
fi
mkdir "$WORK/debs"
for pkg in "$@"; do
    [ -e "$WORK/root/var/lib/dpkg/info/$pkg.list" ] || [ -e "$WORK/root/var/lib/dpkg/info/$pkg:$(dpkg --print-architecture).list" ] && continue
    # apt-get download writes into the current directory; _apt cannot write to root-owned dirs.
    ( cd "$WORK/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2 )
done
for deb in "$WORK"/debs/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" "$WORK/root"; done
ldconfig -r "$WORK/root"
echo fnexec-vm > "$WORK/root/etc/hostname"
# Units a VM without hardware or users has no use for, each seconds of boot under TCG (systemd-analyze
# blame): the root has no modules for modprobe@ to load, nothing for e2scrub, no one to log in.
for unit in e2scrub_reap.service modprobe@.service systemd-logind.service systemd-pstore.service \
            dev-hugepages.mount sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
            sys-fs-fuse-connections.mount apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            fstrim.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$WORK/root/etc/systemd/system/$unit"
done
# Room for the daemon's state (images, layers, database) beside the ~220 MB root; the file is sparse.
size_mb=$(( $(du -sm "$WORK/root" | cut -f1) + 768 ))
mke2fs -q -F -t ext4 -L fnexec-root -d "$WORK/root" "$WORK/root.ext4" "${size_mb}M"
mv "$WORK/root.ext4" "$OUT"
