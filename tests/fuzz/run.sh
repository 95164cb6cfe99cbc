#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes one of them, seeded with images from mkimage.
#   tests/fuzz/run.sh [unpack|documents|frames|http] [SECONDS=60] [extra libFuzzer args...]
# Needs clang 16 (installed by scripts/install-deps.sh --fuzz): clang 14 lacks the conditionally
# trivial destructors libstdc++'s <expected> relies on. Findings land in build-fuzz/fuzz-<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:-unpack}
secs=${2:-60}
shift $(( $# > 2 ? 2 : $# ))
builddir=${FUZZ_BUILDDIR:-build-fuzz}
bash scripts/install-deps.sh --fuzz
[ -f "$builddir/build.ninja" ] || CXX=${CXX:-clang++-16} meson setup "$builddir" -Dfuzz=true >/dev/null
meson compile -C "$builddir" "fuzz_$target" >/dev/null

work="$builddir/fuzz-$target"
corpus="$work/corpus"
mkdir -p "$corpus"
if [ "$target" = http ] && [ -z "$(ls -A "$corpus")" ]; then
  cp tests/fuzz/corpus/http/* "$corpus/"
elif [ "$target" = frames ] && [ -z "$(ls -A "$corpus")" ]; then
  # Chunk-size and limit bytes, then a well-formed exchange and a few near misses.
  printf '\x05\x7fREADY fnexec/1\nOK 1 3\na\nb\nERROR e.2 2\n{}\n' >"$corpus/exchange"
  printf '\x01\xffINIT_ERROR 2\n{}\n' >"$corpus/init-error"
  printf '\x40\x10READY fnexec/1\nOK 01 1\nx\nOK a 20\n' >"$corpus/near-miss"
elif [ -z "$(ls -A "$corpus")" ]; then
  seed=$(mktemp -d)
  trap 'rm -rf "$seed"' EXIT
  mkdir -p "$seed/tree/d" && echo hi >"$seed/tree/d/f" && ln -s f "$seed/tree/d/l" && ln "$seed/tree/d/f" "$seed/tree/d/h"
  for comp in none gzip zstd; do
    rootfs-tools/mkimage --dir "$seed/tree" --layer --delete d/f --opaque d --compression "$comp" \
      --platform-index --mtime 0 -o "$seed/$comp" >/dev/null
  done
  if [ "$target" = unpack ]; then
    for comp in none gzip zstd; do
      for b in "$seed/$comp"/blobs/sha256/*; do file -b "$b" | grep -q JSON || cp "$b" "$corpus/"; done
    done
  else
    for b in "$seed"/*/blobs/sha256/* "$seed"/*/index.json; do file -b "$b" | grep -q JSON && cp "$b" "$corpus/"; done
    echo '[{"Config":"a.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]' >"$corpus/docker-manifest"
  fi
fi
cd "$work"
exec "../tests/fuzz/fuzz_$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 "$@" corpus
