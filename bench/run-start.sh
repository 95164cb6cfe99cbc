#!/usr/bin/env bash
# Cold start, whole process and in-process: `fnexec run IMG -- true` (mode run) and a fresh
# in-process sandbox (mode cold) against fork+exec of the same binary (floor), bwrap --unshare-all,
# crun run and runc run, on the same busybox rootfs, interleaved in one run by `fnexec bench`.
# crun runs in a private mount namespace with /sys/fs/cgroup/unified unmounted (crun refuses hybrid
# cgroup hosts); fnexec bench sets that up and says so in its output.
# Usage: bench/run-start.sh [RUNS] [BUILDDIR]      (root; env BENCH_JSON=FILE keeps every sample)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
builddir=${2:-build}
args=(bench -n "$runs" --warmup 5 --mode run,cold --function true --concurrency 1)
[ -n "${BENCH_JSON:-}" ] && args+=(--json "$BENCH_JSON")
exec "$builddir/fnexec" "${args[@]}"
