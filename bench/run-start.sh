#!/usr/bin/env bash
# Cold start, whole process: `fnexec run IMG -- true` against fork+exec of the same binary (floor),
# bwrap --unshare-all, crun run and runc run, on the same busybox rootfs, interleaved in one run.
# crun refuses hybrid-cgroup hosts, so every system runs in a private mount namespace with
# /sys/fs/cgroup/unified unmounted (fnexec-bench-start --hide-cgroup2); fnexec is unaffected on v1.
# Usage: bench/run-start.sh [RUNS] [BUILDDIR]      (root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
builddir=${2:-build}
fnexec=$(realpath "$builddir/fnexec")
timer=$(realpath "$builddir/bench/fnexec-bench-start")

work=$(mktemp -d /tmp/fnexec-bench-XXXXXX)
mount -t tmpfs -o size=512m fnexec-bench "$work"
cleanup() { umount "$work/bundle/rootfs" 2>/dev/null || true; umount -l "$work" 2>/dev/null || true; rmdir "$work" 2>/dev/null || true; }
trap cleanup EXIT

rootfs-tools/mkimage --busybox --ref bench:1 --compression none -o "$work/layout" >/dev/null
"$fnexec" --root "$work/store" image import "oci:$work/layout" --name bench:1 >/dev/null
# The peers get the same bytes: the image's single unpacked layer, read-only.
rootfs=$(find "$work/store/layers/sha256" -mindepth 1 -maxdepth 1 -type d | head -1)
mkdir -p "$work/bundle"
mkdir "$work/bundle/rootfs" && mount --bind "$rootfs" "$work/bundle/rootfs"  # runc refuses a symlinked rootfs
(cd "$work/bundle" && crun spec 2>/dev/null || runc spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"] = {"path": "rootfs", "readonly": True}
json.dump(c, open(p, "w"))
PY

systems=(
  "floor=$rootfs/bin/busybox true"
  "fnexec=$fnexec --root $work/store run bench:1 -- /bin/true"
)
command -v bwrap >/dev/null && systems+=("bwrap=bwrap --unshare-all --ro-bind $rootfs / --proc /proc --dev /dev --tmpfs /tmp /bin/true")
command -v crun >/dev/null && systems+=("crun=crun run --bundle $work/bundle fnexec-bench-crun-{i}")
command -v runc >/dev/null && systems+=("runc=runc run --bundle $work/bundle fnexec-bench-runc-{i}")

echo "host: $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $runs runs each, interleaved"
"$timer" -n "$runs" --warmup 5 --hide-cgroup2 --json "${BENCH_JSON:-/dev/null}" "${systems[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
