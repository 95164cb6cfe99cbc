#!/bin/bash
# The systemd VM suite: boots Debian's kernel under qemu with systemd as PID 1 on a cgroup-v2-only
# userland (a Debian 12 root made by mmdebstrap, on a virtio disk), installs this build into it with
# `meson install --destdir`, and runs systemd/guest-test.sh as a unit after multi-user.target: it
# drives fnexec.service through systemctl, journalctl and the socket and prints PASS/FAIL lines.
#
# usage: run-systemd-suite.sh BUILD_DIR
# exit: 0 when every check passed; 77 (meson: skipped) when qemu, mmdebstrap or the kernel cannot be had.
# env:  FNEXEC_VM_CACHE, FNEXEC_VM_ACCEL as for run-vm-suite.sh; FNEXEC_VM_TIMEOUT (default 480 s);
#       FNEXEC_VM_KEEP=DIR keeps the results and the guest's journal there when the suite fails.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE_ROOT=$(cd "$HERE/../.." && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[ $# = 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
BUILD=$(realpath "$1")

T0=$(date +%s%N)
. "$HERE/vm-common.sh"
vm_prepare mke2fs mmdebstrap python3 meson

DEBIAN_ROOT=$("$SOURCE_ROOT/tests/support/debian-root.sh" "$CACHE")
rc=$?
[ $rc = 77 ] && skip "the Debian root cannot be built (see above)"
[ $rc = 0 ] || { echo "FAIL: tests/support/debian-root.sh failed ($rc)"; exit 1; }
# fnexec links simdjson, spdlog and fmt dynamically: the packages of its shared libraries go in the disk.
FNEXEC_BIN=$(meson introspect "$BUILD" --targets | python3 -c '
import json, sys
print(next(f for t in json.load(sys.stdin) if t["name"] == "fnexec" and t["type"] == "executable" for f in t["filename"]))')
RUNTIME_PKGS=$(for lib in $(ldd "$FNEXEC_BIN" | awk '/=> \//{print $3}'); do
    dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib"; done | cut -d: -f1 | sort -u)
[ -n "$RUNTIME_PKGS" ] || { echo "FAIL: cannot find the packages of $FNEXEC_BIN's libraries"; exit 1; }
# The disk depends on the Debian root (its name carries its own key), the script that makes it and
# those packages.
KEY=$( { echo "$DEBIAN_ROOT" $RUNTIME_PKGS; cat "$HERE/systemd/make-root-image.sh"; } | sha256sum | cut -c1-16)
DISK=$CACHE/systemd-root-$KEY.ext4
if [ ! -s "$DISK" ]; then
    ( flock 9
      if [ ! -s "$DISK" ]; then
          echo "fnexec-vm: making $DISK" >&2
          "$HERE/systemd/make-root-image.sh" "$DEBIAN_ROOT" "$DISK" $RUNTIME_PKGS || exit 1
          for old in "$CACHE"/systemd-root-*.ext4; do [ "$old" = "$DISK" ] || rm -f "$old"; done
      fi ) 9>"$CACHE/.lock" || { echo "FAIL: making the guest disk failed"; exit 1; }
fi

# The 9p share: root/ is copied over the guest's / by the initramfs; results/ comes back.
SHARE=$(mktemp -d /tmp/fnexec-systemd-vm.XXXXXX)
trap 'rm -rf "$SHARE"' EXIT
mkdir -p "$SHARE/root" "$SHARE/results" "$SHARE/images"
if ! DESTDIR="$SHARE/root" meson install -C "$BUILD" --no-rebuild --quiet >"$SHARE/install.log" 2>&1; then
    cat "$SHARE/install.log"; echo "FAIL: meson install --destdir failed"; exit 1
fi
# What the install plan says: the binary, the config and the unit, as absolute guest paths.
read -r EXPECT_FNEXEC EXPECT_CONFIG EXPECT_UNIT < <(meson introspect "$BUILD" --installed | python3 -c '
import json, os, sys
dest = {os.path.basename(d): d for d in json.load(sys.stdin).values()}
print(dest.get("fnexec", "-"), dest.get("fnexec.conf", "-"), dest.get("fnexec.service", "-"))')
for f in "$EXPECT_FNEXEC" "$EXPECT_CONFIG" "$EXPECT_UNIT"; do
    [ -e "$SHARE/root$f" ] || { echo "FAIL: meson install did not install $f"; exit 1; }
done
case $EXPECT_UNIT in */systemd/system/fnexec.service) ;; *) echo "FAIL: unit installed as $EXPECT_UNIT"; exit 1 ;; esac
# Debian 12's / is merged-usr (/lib -> usr/lib): a real lib/ in the tree would not copy over the link.
for d in bin sbin lib; do
    if [ -d "$SHARE/root/$d" ] && [ ! -L "$SHARE/root/$d" ]; then
        mkdir -p "$SHARE/root/usr/$d" && cp -a "$SHARE/root/$d/." "$SHARE/root/usr/$d/" && rm -rf "${SHARE:?}/root/$d"
    fi
done
cat > "$SHARE/expect.env" <<ENV
EXPECT_FNEXEC=$EXPECT_FNEXEC
EXPECT_UNIT=$EXPECT_UNIT
EXPECT_CONFIG=$EXPECT_CONFIG
ENV
# The test itself runs as a unit once multi-user.target is reached.
install -D -m 0644 "$HERE/systemd/fnexec-vm-test.service" "$SHARE/root/etc/systemd/system/fnexec-vm-test.service"
mkdir -p "$SHARE/root/etc/systemd/system/multi-user.target.wants"
ln -sf ../fnexec-vm-test.service "$SHARE/root/etc/systemd/system/multi-user.target.wants/"
cp "$HERE/systemd/guest-test.sh" "$SHARE/guest-test.sh"

# One image, built on the host: busybox plus a setuid binary and a 0750 directory, whose modes
# must survive an import by the daemon under the unit's hardening.
TREE=$SHARE/images/tree
mkdir -p "$TREE/opt/private"
cp /bin/busybox "$TREE/opt/suid-probe"
chmod 4755 "$TREE/opt/suid-probe"
chmod 0750 "$TREE/opt/private"
echo secret > "$TREE/opt/private/file"
chmod 0640 "$TREE/opt/private/file"
if ! "$SOURCE_ROOT/rootfs-tools/mkimage" --busybox --file "$TREE/opt=/opt" --owner 0:0 \
        --oci-archive "$SHARE/images/suid.tar" --ref suid:1 >"$SHARE/mkimage.log" 2>&1; then
    cat "$SHARE/mkimage.log"; echo "FAIL: mkimage failed"; exit 1
fi
rm -rf "$TREE"

TIMEOUT=${FNEXEC_VM_TIMEOUT:-480}
# Kernel command line: cgroup v2 only, systemd told so too; no gettys (the console is the log).
timeout "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -display none \
    -serial stdio -no-reboot -machine pc "${ACC[@]}" -m 1024 -smp 1 \
    -kernel "$CACHE/vmlinux" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 systemd.getty_auto=0 systemd.show_status=error fnexec.boot=systemd" \
    -drive file="$DISK",if=virtio,format=raw,snapshot=on \
    -virtfs local,path="$SHARE",mount_tag=out,security_model=none \
    < /dev/null 2>&1 | tr -d '\r' > "$SHARE/console.log"
QEMU_RC=${PIPESTATUS[0]}
WALL_MS=$(( ($(date +%s%N) - T0) / 1000000 ))
grep -a '^fnexec-vm:' "$SHARE/console.log"
cat "$SHARE/results/log" 2>/dev/null
passed=$(grep -c '^PASS' "$SHARE/results/log" 2>/dev/null)
failed=$(grep -c '^FAIL' "$SHARE/results/log" 2>/dev/null)
echo "fnexec-vm: kernel=$KVER accel=$ACCEL qemu_rc=$QEMU_RC passed=${passed:-0} failed=${failed:-0} wall_ms=$WALL_MS"
if [ "$QEMU_RC" = 124 ] || [ ! -f "$SHARE/results/done" ] || [ "${failed:-0}" != 0 ] || [ "${passed:-0}" = 0 ]; then
    [ "$QEMU_RC" = 124 ] && echo "FAIL: the VM timed out after ${TIMEOUT}s"
    [ -f "$SHARE/results/done" ] || echo "FAIL: the guest test did not finish"
    echo "--- console (last 60 lines)"; tail -60 "$SHARE/console.log"
    [ -f "$SHARE/results/journal.txt" ] && { echo "--- journal (last 80 lines)"; tail -80 "$SHARE/results/journal.txt"; }
    if [ -n "${FNEXEC_VM_KEEP:-}" ]; then
        mkdir -p "$FNEXEC_VM_KEEP" && cp -a "$SHARE/results" "$SHARE/console.log" "$FNEXEC_VM_KEEP/"
        echo "kept the results and the whole guest journal in $FNEXEC_VM_KEEP"
    fi
    exit 1
fi
exit 0
