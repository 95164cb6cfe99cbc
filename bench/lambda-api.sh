#!/usr/bin/env bash
# Lambda's Invoke API against fnexec's /v1 invoke on one daemon of its own (bench/lambda_api.cc):
# a `reuse` function (tests/integration/programs/frame_probe, fnexec/1 echo) with warm sandboxes,
# requests alternated on one kept-alive unix-socket connection, p50/p90/p99 and the ratio.
# Usage: bench/lambda-api.sh [REQUESTS_EACH] [BUILDDIR]        (root: namespaces, cgroups)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
builddir=${2:-build}
for f in fnexec bench/fnexec-bench-lambda tests/integration/frame_probe; do
  [ -x "$builddir/$f" ] || { echo "lambda-api.sh: build first: meson compile -C $builddir" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "lambda-api.sh: run as root (namespaces, cgroups)" >&2; exit 2; }
fnexec=$(realpath "$builddir/fnexec")
work=$(mktemp -d /tmp/fnexec-bench-lambda.XXXXXX)
daemon=
cleanup() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
  # The daemon removes its sandboxes' cgroups, not its prefix directory: that is ours to remove.
  find /sys/fs/cgroup -maxdepth 3 -type d -name "fnexec-bench-lambda-$$" -prune -print 2>/dev/null |
    while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}
trap cleanup EXIT
rootfs-tools/mkimage --busybox --file "$builddir/tests/integration/frame_probe=/bin/frame_probe" \
  --oci-archive "$work/probe.tar" >/dev/null
"$fnexec" --root "$work/state" image import "$work/probe.tar" --name probe:1 >/dev/null
printf 'cgroup_prefix = fnexec-bench-lambda-%s\nlog_level = warn\ndefault_userns = false\n' "$$" > "$work/fnexec.conf"
chmod 600 "$work/fnexec.conf"
"$fnexec" serve --config "$work/fnexec.conf" --socket "$work/fnexec.sock" --state-dir "$work/state" \
  2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$work/fnexec.sock" ] && break; sleep 0.1; done
"$fnexec" fn create echo --socket "$work/fnexec.sock" --image probe:1 --lifecycle reuse --min-warm 2 \
  -- /bin/frame_probe echo >/dev/null
"$builddir/bench/fnexec-bench-lambda" --socket "$work/fnexec.sock" --function echo -n "$n"
