#!/usr/bin/env bash
# The async queue end to end: N events queued at once (?mode=async, one kept-alive curl connection),
# enqueue → completed per event from its record (finished_ms - queued_ms), p50/p99 and events/s,
# for two fnexec binaries alternated in the same run (A B A B ...): e.g. main's build against this
# one, to show what the retry bookkeeping (delivery, next_attempt_ms, dead letters) costs.
# The function is `reuse` (tests/integration/programs/frame_probe, fnexec/1 echo), 2 warm sandboxes.
# Usage: bench/async-queue.sh FNEXEC_A FNEXEC_B [EVENTS] [ROUNDS] [BUILDDIR]   (root: namespaces, cgroups)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,7p "$0" >&2; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2")
n=${3:-1000}
rounds=${4:-3}
builddir=${5:-build}
[ -x "$builddir/tests/integration/frame_probe" ] || { echo "async-queue.sh: build first: meson compile -C $builddir" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "async-queue.sh: run as root (namespaces, cgroups)" >&2; exit 2; }
work=$(mktemp -d /tmp/fnexec-bench-async.XXXXXX)
prefix="fnexec-bench-async-$$"
daemon=
stop_daemon() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  daemon=
}
cleanup() {
  stop_daemon
  rm -rf "$work"
  # The daemon removes its sandboxes' cgroups, not its prefix directory: that is ours to remove.
  find /sys/fs/cgroup -maxdepth 3 -type d -name "$prefix" -prune -print 2>/dev/null |
    while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}
trap cleanup EXIT
rootfs-tools/mkimage --busybox --file "$builddir/tests/integration/frame_probe=/bin/frame_probe" \
  --oci-archive "$work/probe.tar" >/dev/null
printf 'cgroup_prefix = %s\nlog_level = warn\ndefault_userns = false\n' "$prefix" > "$work/fnexec.conf"
chmod 600 "$work/fnexec.conf"
for i in $(seq "$n"); do printf 'url = "http://localhost/v1/functions/echo/invoke?mode=async"\noutput = "/dev/null"\n'; done > "$work/urls"

# One round of one binary: a fresh state dir, a daemon, N events; prints "p50_ms p99_ms events_per_s".
round() {
  local fnexec=$1 state="$work/state-$2"
  rm -rf "$state"
  "$fnexec" --root "$state" image import "$work/probe.tar" --name probe:1 >/dev/null
  "$fnexec" serve --config "$work/fnexec.conf" --socket "$work/fnexec.sock" --state-dir "$state" \
    2>"$work/daemon-$2.log" &
  daemon=$!
  for _ in $(seq 200); do [ -S "$work/fnexec.sock" ] && break; sleep 0.05; done
  "$fnexec" fn create echo --socket "$work/fnexec.sock" --image probe:1 --lifecycle reuse --min-warm 2 \
    --max-concurrency 2 -- /bin/frame_probe echo >/dev/null
  until curl -s --unix-socket "$work/fnexec.sock" http://localhost/v1/functions/echo | grep -q '"warm":2'; do
    sleep 0.05
  done
  curl -s --unix-socket "$work/fnexec.sock" -d event -K "$work/urls"
  local list
  while :; do
    list=$(curl -s --unix-socket "$work/fnexec.sock" "http://localhost/v1/invocations?function=echo&limit=$n")
    [ "$(grep -o '"status":"done"' <<<"$list" | wc -l)" -ge "$n" ] && break
    sleep 0.1
  done
  stop_daemon
  rm -f "$work/fnexec.sock"
  python3 -c '
import json, sys
rows = json.load(sys.stdin)["invocations"]
assert all(r["outcome"] == "success" for r in rows), "a failed event"
lat = sorted(r["finished_ms"] - r["queued_ms"] for r in rows)
span = max(r["finished_ms"] for r in rows) - min(r["queued_ms"] for r in rows)
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(pick(0.5), pick(0.99), round(len(rows) * 1000 / max(span, 1)))
' <<<"$list"
}

echo "async queue: $n events per round, $rounds rounds, A=$a B=$b"
for r in $(seq "$rounds"); do
  echo "A $(round "$a" "a$r")" >> "$work/results"
  echo "B $(round "$b" "b$r")" >> "$work/results"
  tail -2 "$work/results"
done
python3 -c '
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {k: [statistics.median(float(r[i]) for r in rows if r[0] == k) for i in (1, 2, 3)] for k in "AB"}
for k in "AB":
    print(f"{k}: median of rounds: p50 {med[k][0]:.0f} ms  p99 {med[k][1]:.0f} ms  {med[k][2]:.0f} events/s")
A, B = med["A"], med["B"]
print(f"B/A: p50 {B[0] / max(A[0], 1):.2f}  p99 {B[1] / max(A[1], 1):.2f}  events/s {B[2] / max(A[2], 1):.2f}")
' "$work/results"
