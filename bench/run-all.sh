#!/usr/bin/env bash
# The full suite: `fnexec bench` (modes cold, warm, run, and with --via-api cold-api and warm-api
# over a daemon of its own; functions true and cat; concurrency 1, 4 and 16; every installed peer),
# then the lifecycle run (functions python and c, lifecycles oneshot, fresh and reuse, in-process and
# over the daemon's socket, concurrency 1 and 8, peers floor and pipe), then the layer unpack bench.
# Writes
#   bench/results/<date>-<host>.json   every sample, host context, goals
#   bench/results/<date>-<host>.md     tables, goals, and the unpack numbers
#   bench/results/<date>-<host>.svg    latency CDF at concurrency 1
#   bench/results/<date>-<host>-lifecycle.{json,md,svg}   the same for the lifecycle run
#   bench/results/<date>-<host>-throughput.{json,md}       reuse at concurrency 8, 4000 events
# Results are not committed unless they document a change (.gitignore).
# Usage: bench/run-all.sh [RUNS] [BUILDDIR]        (root; env UNPACK_REPS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-500}
builddir=${2:-build}
[ -x "$builddir/fnexec" ] || { echo "run-all.sh: build first: meson compile -C $builddir" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run-all.sh: run as root (namespaces, tmpfs, cgroups)" >&2; exit 2; }
mkdir -p bench/results
out=bench/results/$(date +%Y-%m-%d-%H%M)-$(hostname -s)

"$builddir/fnexec" bench -n "$runs" --warmup 20 --mode cold,warm,run --via-api --concurrency 1,4,16 \
  --json "$out.json" --markdown "$out.md" --svg "$out.svg"
# Warm functions (issue 11): a runtime's init before the event (fresh) or kept across events (reuse),
# against the same handler as a plain host process per event and a long-lived one over a pipe.
"$builddir/fnexec" bench -n "$runs" --warmup 20 --mode warm --via-api --concurrency 1,8 \
  --function python,c --lifecycle oneshot,fresh,reuse --peers floor,pipe \
  --json "$out-lifecycle.json" --markdown "$out-lifecycle.md" --svg "$out-lifecycle.svg"
# Throughput of reuse at concurrency 8 needs many events per batch: with few, the batch's thread
# start and pool check dominate its wall time.
"$builddir/fnexec" bench -n 4000 --warmup 50 --mode warm --via-api --concurrency 8 \
  --function python,c --lifecycle reuse --peers pipe \
  --json "$out-throughput.json" --markdown "$out-throughput.md"
{
  echo
  echo "## layer unpack"
  echo
  echo '```'
  BUILDDIR=$builddir JSON="$out-unpack.json" bench/unpack.sh "${UNPACK_REPS:-5}"
  echo '```'
} >>"$out.md"
echo "results: $out.{json,md,svg}, $out-lifecycle.{json,md,svg}, $out-throughput.{json,md} and $out-unpack.json"
