#!/usr/bin/env bash
# The `fuzz` meson suite: one libFuzzer target for SECONDS (default 60) on the corpus committed under
# tests/fuzz/corpus/TARGET, in a clang build of its own next to the calling build (BUILD_ROOT).
#   tests/fuzz/ci.sh TARGET [SECONDS]
# A crash, leak or timeout fails the test; libFuzzer prints the input, and its file is kept in
# BUILD_ROOT/fuzz-ci/TARGET/ to be added as a regression test. tests/fuzz/run.sh fuzzes longer.
set -euo pipefail
target=$1
secs=${2:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
build_root=${FNEXEC_BUILD_ROOT:?FNEXEC_BUILD_ROOT is not set: run it with meson test --suite fuzz}
fuzzdir="$build_root/fuzz-build"
cxx=clang++-16
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx missing: scripts/install-deps.sh --all installs it" >&2; exit 1; }
# Several targets may start at once: one of them configures and builds, the others wait.
exec 9>"$build_root/fuzz-build.lock"
flock 9
if [ ! -f "$fuzzdir/build.ninja" ]; then
  launcher=$(command -v ccache || true)
  CC="${launcher:+$launcher }clang-16" CXX="${launcher:+$launcher }$cxx" meson setup "$fuzzdir" "$src" -Dfuzz=true >/dev/null
fi
ninja -C "$fuzzdir" "tests/fuzz/fuzz_$target" >/dev/null
flock -u 9

work="$build_root/fuzz-ci/$target"
rm -rf "$work"
mkdir -p "$work/corpus"
cp "$src/tests/fuzz/corpus/$target"/* "$work/corpus/"
cd "$work"
exec "$fuzzdir/tests/fuzz/fuzz_$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus
