#!/bin/sh
# Fetches Debian's stock kernel (the package linux-image-amd64 depends on) into a cache directory,
# unpacks it with dpkg -x (never installed into /boot) and extracts the uncompressed vmlinux,
# because booting the ELF with PVH skips the decompressor (~5 s under TCG).
# usage: fetch-kernel.sh CACHE_DIR   → CACHE_DIR/kver, CACHE_DIR/vmlinux, CACHE_DIR/kpkg/lib/modules/<kver>
# exit 77 (skip) when the package cannot be had, e.g. no apt source is reachable.
set -eu
CACHE=$1
mkdir -p "$CACHE"
cd "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # parallel test runs share the cache

PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$PKG" ]; then
    echo "fetch-kernel: apt-cache does not know linux-image-amd64 (run apt-get update?)" >&2
    exit 77
fi
KVER=${PKG#linux-image-}
if [ -s vmlinux ] && [ "$(cat kver 2>/dev/null)" = "$KVER" ] && [ -d "kpkg/lib/modules/$KVER" ]; then
    exit 0
fi
echo "fetch-kernel: fetching $PKG into $CACHE" >&2
rm -rf kpkg vmlinux vmlinux.tmp kver
if ! ls "${PKG}"_*.deb >/dev/null 2>&1; then
    # apt-get download writes into the current directory; _apt cannot write to root-owned dirs.
    if ! apt-get download -o APT::Sandbox::User=root "$PKG" >&2; then
        echo "fetch-kernel: apt-get download $PKG failed (no network or apt source?)" >&2
        exit 77
    fi
fi
rm -f linux-image-*.deb.old
for old in linux-image-*.deb; do case $old in "${PKG}"_*) ;; *) rm -f "$old" ;; esac; done
dpkg -x "${PKG}"_*.deb kpkg
# Debian's postinst runs depmod; the package alone ships no modules.dep.
depmod -b "$CACHE/kpkg" "$KVER"
# The bzImage is CONFIG_KERNEL_XZ: cut at the first xz magic and decompress (xz stops at the stream end).
off=$(LC_ALL=C grep -abo "$(printf '\3757zXZ')" "kpkg/boot/vmlinuz-$KVER" | head -1 | cut -d: -f1)
[ -n "$off" ] || { echo "fetch-kernel: no xz stream in vmlinuz-$KVER" >&2; exit 1; }
tail -c +$((off + 1)) "kpkg/boot/vmlinuz-$KVER" | xz -dc > vmlinux.tmp 2>/dev/null || true
head -c 4 vmlinux.tmp | grep -q ELF || { echo "fetch-kernel: extracted vmlinux is not ELF" >&2; exit 1; }
mv vmlinux.tmp vmlinux
echo "$KVER" > kver
