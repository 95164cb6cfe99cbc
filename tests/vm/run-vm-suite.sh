#!/bin/bash
# The cgroup-v2 VM suite: boots Debian's own kernel under qemu with cgroup_no_v1=all, so v2 with every
# controller is the only hierarchy, and runs the host-built integration tests inside it. The guest sees
# the host's / read-only over 9p and chroots into it, so the binaries run unchanged from the build tree.
#
# usage: run-vm-suite.sh TEST_BINARY FNEXEC_BINARY [test arguments...]
# exit: the test binary's status; 77 (meson: skipped) when qemu, busybox or the kernel cannot be had.
# env:  FNEXEC_VM_CACHE  kernel and initramfs cache (default $XDG_CACHE_HOME/fnexec-vm, as root /var/cache/fnexec-vm)
#       FNEXEC_VM_ACCEL  auto (default) | tcg | kvm
#       FNEXEC_VM_TIMEOUT seconds before the VM is killed (default 420)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[ $# -ge 2 ] || { echo "usage: $0 TEST_BINARY FNEXEC_BINARY [test arguments...]" >&2; exit 2; }
TEST_BIN=$(realpath "$1") FNEXEC_BIN=$(realpath "$2"); shift 2

case $TEST_BIN in /proc/*|/sys/*|/dev/*) echo "test binary must not live under /proc, /sys or /dev" >&2; exit 2 ;; esac

T0=$(date +%s%N)
. "$HERE/vm-common.sh"
vm_prepare

OUT=$(mktemp -d /tmp/fnexec-vm.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
BUILD_ROOT=${FNEXEC_BUILD_ROOT:-$(dirname "$(dirname "$TEST_BIN")")}
{
    echo "R=/mnt/host"
    echo 'mount --bind /proc $R/proc && mount --rbind /sys $R/sys && mount --bind /dev $R/dev || exit 10'
    # A writable scratch tmpfs for the tests (TMPDIR): /tmp, or /var/tmp when the build tree is
    # under /tmp (a tmpfs over it would hide it; the rest of the shared host root is read-only).
    case $BUILD_ROOT/ in /tmp/*) SCRATCH=/var/tmp ;; *) SCRATCH=/tmp ;; esac
    printf 'mount -t tmpfs tmpfs $R%q || exit 11\n' "$SCRATCH"
    # /run writable too: `ip netns add` (the network suite's lab) and fnexec's bridge leases live there.
    echo 'mount -t tmpfs tmpfs $R/run || exit 11'
    printf 'run() { chroot $R /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=%q FNEXEC_IN_VM=1 FNEXEC_BIN=%q FNEXEC_BUILD_ROOT=%q FNEXEC_SOURCE_ROOT=%q "$@"; }\n' \
        "$SCRATCH" "$FNEXEC_BIN" "$BUILD_ROOT" "${FNEXEC_SOURCE_ROOT:-$(dirname "$BUILD_ROOT")}"
    printf 'echo "== fnexec info"; run %q info || exit 12\n' "$FNEXEC_BIN"
    printf 'echo "== fnexec info --json"; run %q info --json || exit 12\n' "$FNEXEC_BIN"
    printf 'echo "== tests"; run %q' "$TEST_BIN"
    printf ' %q' "$@"
    echo
} > "$OUT/guest.sh"

# PVH boot of the uncompressed vmlinux; -machine pc (microvm hung in 2 of 3 boots when measured).
timeout "${FNEXEC_VM_TIMEOUT:-420}" qemu-system-x86_64 -nodefaults -no-user-config -display none \
    -serial stdio -no-reboot -machine pc "${ACC[@]}" -m 768 -smp 1 \
    -kernel "$CACHE/vmlinux" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 cgroup_no_v1=all mitigations=off" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$OUT",mount_tag=out,security_model=none \
    < /dev/null 2>&1 | tr -d '\r' | grep -a '^fnexec-vm:'
QEMU_RC=${PIPESTATUS[0]}
WALL_MS=$(( ($(date +%s%N) - T0) / 1000000 ))
[ -f "$OUT/guest.log" ] && cat "$OUT/guest.log"
STATUS=$(cat "$OUT/status" 2>/dev/null || echo none)
echo "fnexec-vm: kernel=$KVER accel=$ACCEL qemu_rc=$QEMU_RC guest_status=$STATUS wall_ms=$WALL_MS"
[ "$QEMU_RC" = 124 ] && { echo "FAIL: the VM timed out"; exit 1; }
[ "$STATUS" = 0 ] && exit 0
echo "FAIL: guest status $STATUS"
exit 1
