#!/usr/bin/env bash
# Layer unpack throughput, side by side in one run: `fnexec image import` (verifying the blob digest
# and the diff_id while unpacking) vs `tar -xzf` / `tar --zstd -xf` (no verification) and, when
# installed, `umoci raw unpack`. Everything lives on one tmpfs. Prints medians and ratios.
#
#   sudo bench/unpack.sh [REPS]         (env: BUILDDIR=build, SRC="dirs to pack", JSON=out.json)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
builddir=${BUILDDIR:-build}
fnexec=$PWD/$builddir/fnexec
mkimage=$PWD/rootfs-tools/mkimage
# ~210 MB of real files: many small (python stdlib, boost headers) and some large (.so).
src=${SRC:-"/usr/lib/python3.11 /usr/include/boost"}
[ -x "$fnexec" ] || { echo "unpack.sh: build first: meson compile -C $builddir" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "unpack.sh: run as root (tmpfs mount, file owners)" >&2; exit 2; }

t=$(mktemp -d /tmp/fnexec-unpack-XXXXXX)
mount -t tmpfs -o size=4g fnexec-bench "$t"
cleanup() { umount -l "$t"; rmdir "$t"; }
trap cleanup EXIT

files=()
for d in $src; do files+=(--file "$d=${d#/}"); done
for comp in gzip zstd; do
  TMPDIR=$t "$mkimage" --layer "${files[@]}" --compression "$comp" --ref bench:1 --mtime 0 -o "$t/$comp" >/dev/null
done
# The one layer blob is the largest file of the layout.
layer_blob() { ls -S "$t/$1/blobs/sha256/"* | head -1; }
raw_mb=$(gzip -dc "$(layer_blob gzip)" | wc -c | awk '{printf "%.1f", $1/1e6}')
echo "layer: $raw_mb MB uncompressed; gzip blob $(du -m "$(layer_blob gzip)" | cut -f1) MB, zstd blob $(du -m "$(layer_blob zstd)" | cut -f1) MB; $reps repetitions"

now() { date +%s%N; }
declare -A times
measure() {  # name, command...; the output dir $t/out is fresh for every run
  local name=$1; shift
  rm -rf "$t/out" "$t/store"; mkdir -p "$t/out"; sync
  local s; s=$(now)
  "$@" >/dev/null 2>&1
  times[$name]+="$(( ($(now) - s) / 1000 )) "
}

has_umoci=0; command -v umoci >/dev/null && has_umoci=1
for ((i = 0; i < reps; i++)); do
  measure fnexec-gzip "$fnexec" --root "$t/store" image import "oci:$t/gzip"
  measure tar-xzf tar -xzf "$(layer_blob gzip)" -C "$t/out"
  measure fnexec-zstd "$fnexec" --root "$t/store" image import "oci:$t/zstd"
  measure tar-zstd tar --zstd -xf "$(layer_blob zstd)" -C "$t/out"
  if ((has_umoci)); then
    measure umoci-gzip umoci raw unpack --image "$t/gzip:1" "$t/out/rootfs"
  fi
done
rm -rf "$t/out" "$t/store"

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
declare -A med
printf '%-12s %10s %10s\n' tool median_ms MB/s
for name in fnexec-gzip tar-xzf umoci-gzip fnexec-zstd tar-zstd; do
  [ -n "${times[$name]:-}" ] || continue
  med[$name]=$(echo "${times[$name]}" | median)
  awk -v n="$name" -v us="${med[$name]}" -v mb="$raw_mb" 'BEGIN {printf "%-12s %10.1f %10.1f\n", n, us/1000, mb/(us/1e6)}'
done
ratio() { awk -v a="${med[$1]}" -v b="${med[$2]}" 'BEGIN {printf "%.2f", b/a}'; }
echo "speed ratio fnexec-gzip vs tar -xzf: $(ratio fnexec-gzip tar-xzf)x (>1 = fnexec faster)"
echo "speed ratio fnexec-zstd vs tar --zstd: $(ratio fnexec-zstd tar-zstd)x"
((has_umoci)) && echo "speed ratio fnexec-gzip vs umoci: $(ratio fnexec-gzip umoci-gzip)x"
if [ -n "${JSON:-}" ]; then
  {
    printf '{"uncompressed_mb": %s, "reps": %d, "median_us": {' "$raw_mb" "$reps"
    sep=""
    for k in "${!med[@]}"; do printf '%s"%s": %s' "$sep" "$k" "${med[$k]}"; sep=", "; done
    printf '}}\n'
  } >"$JSON"
fi
