#!/bin/bash
# Builds the VM's initramfs: busybox-static, tests/vm/init, and the virtio/9p/ext4 modules (with their
# dependencies) from the unpacked kernel package. Uncompressed: the guest unpacks it fastest.
# usage: build-initramfs.sh CACHE_DIR OUT.cpio
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=$1 OUT=$2
KVER=$(cat "$CACHE/kver")
KMOD=$CACHE/kpkg/lib/modules/$KVER
ROOT=$(mktemp -d "$CACHE/initramfs.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,mnt,lib/modules/$KVER}
cp /bin/busybox "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done
install -m 0755 "$HERE/init" "$ROOT/init"

declare -A copied=()
add_module() {   # add_module NAME: the module and everything modules.dep says it needs
    local name=${1//-/_} rel dep
    rel=$(awk -F: -v want="$name" '{ n = $1; sub(".*/", "", n); sub("\\.ko(\\.[a-z]+)?$", "", n);
              gsub("-", "_", n); if (n == want) { print $1; exit } }' "$KMOD/modules.dep")
    [ -n "$rel" ] || { echo "build-initramfs: module $name not in modules.dep (built in?)" >&2; return 0; }
    [ -z "${copied[$rel]:-}" ] || return 0
    copied[$rel]=1
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
    cp "$KMOD/$rel" "$ROOT/lib/modules/$KVER/$rel"
    for dep in $(grep "^$rel:" "$KMOD/modules.dep" | cut -d: -f2); do
        dep=${dep##*/}
        add_module "${dep%%.ko*}"
    done
}
# overlay and veth: the sandbox tests that may run here mount overlay roots and create veth pairs;
# virtio_blk, ext4 and crc32c_generic (ext4 asks the crypto API for it): the systemd suite's root disk;
# bridge and the nf_tables expressions of fnexec's `inet fnexec` table (ct state, fib, masquerade,
# the nat hook): the network suite's bridge sandboxes.
for m in virtio_pci 9pnet_virtio 9p overlay veth virtio_blk crc32c_generic ext4 \
    bridge nf_tables nft_ct nft_fib_inet nft_chain_nat nft_masq; do add_module "$m"; done
cp "$KMOD"/modules.builtin "$KMOD"/modules.builtin.modinfo "$KMOD"/modules.order "$ROOT/lib/modules/$KVER/"
depmod -b "$ROOT" "$KVER"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
