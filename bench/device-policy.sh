#!/usr/bin/env bash
# Cold-start cost of the device policy: `fnexec run --report` (which always makes a sandbox cgroup)
# of a busybox rootfs with the build under test against a peer build without the policy (main),
# alternating run by run so both see the same machine load.
# Usage: bench/device-policy.sh PEER_FNEXEC [RUNS] [BUILDDIR]     (root)
set -euo pipefail
cd "$(dirname "$0")/.."
peer=$1
runs=${2:-100}
builddir=${3:-build}
work=$(mktemp -d /tmp/fnexec-bench-devices-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/state"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/true"
cp "$peer" "$work/peer"
cp "$builddir/fnexec" "$work/new"
one() {  # prints wall microseconds of one run
  local t0 t1
  t0=$(date +%s%N)
  "$1" --root "$work/state" run --rootfs --report /dev/null "$work/rootfs" -- /bin/true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
for _ in 1 2 3 4 5; do one "$work/peer" >/dev/null; one "$work/new" >/dev/null; done  # warm-up
for ((i = 0; i < runs; i++)); do
  echo "peer $(one "$work/peer")"
  echo "new $(one "$work/new")"
done >"$work/samples"
python3 - "$work/samples" <<'PY'
import statistics, sys
s = {"peer": [], "new": []}
for line in open(sys.argv[1]):
    k, v = line.split(); s[k].append(int(v))
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]
for k in ("peer", "new"):
    print(f"{k:5} n={len(s[k])} p50={pct(s[k],50)/1000:.2f} ms p90={pct(s[k],90)/1000:.2f} ms mean={statistics.mean(s[k])/1000:.2f} ms")
print(f"ratio new/peer p50={pct(s['new'],50)/pct(s['peer'],50):.3f}")
PY
