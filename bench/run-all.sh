#!/usr/bin/env bash
# The full suite: `fnexec bench` (modes cold, warm, run, and with --via-api cold-api and warm-api
# over a daemon of its own; functions true and cat; concurrency 1, 4 and 16; every installed peer),
# then the layer unpack bench. Writes
#   bench/results/<date>-<host>.json   every sample, host context, goals
#   bench/results/<date>-<host>.md     tables, goals, and the unpack numbers
#   bench/results/<date>-<host>.svg    latency CDF at concurrency 1
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
{
  echo
  echo "## layer unpack"
  echo
  echo '```'
  BUILDDIR=$builddir JSON="$out-unpack.json" bench/unpack.sh "${UNPACK_REPS:-5}"
  echo '```'
} >>"$out.md"
echo "results: $out.{json,md,svg} and $out-unpack.json"
