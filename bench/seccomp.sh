#!/usr/bin/env bash
# The default seccomp filter's cost: `fnexec run` cold start (`loop 0`) and a syscall-heavy loop
# (`loop N`: N x {getppid, fstat, clock_gettime syscall, openat+close}) under the allowlist
# (default), the old denylist (bench/seccomp-denylist.json: main's deny list, as a JSON profile)
# and no filter (unconfined), interleaved in one run so machine noise hits all three alike.
# Usage: bench/seccomp.sh [RUNS] [LOOPS] [BUILDDIR]    (root) → medians, p90 and ratios to unconfined
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
loops=${2:-200000}
builddir=${3:-build}
work=$(mktemp -d /tmp/fnexec-bench-seccomp-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cat >"$work/loop.c" <<'C'
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 0;
  struct stat st;
  struct timespec ts;
  for (long i = 0; i < n; ++i) {
    syscall(SYS_getppid);
    fstat(0, &st);
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    int fd = openat(AT_FDCWD, "/bin/loop", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) close(fd);
  }
  return 0;
}
C
gcc -O2 -static -o "$work/rootfs/bin/loop" "$work/loop.c"
profiles=(default bench/seccomp-denylist.json unconfined)
names=(allowlist denylist unconfined)
python3 - "$runs" "$loops" "$builddir/fnexec" "$work/rootfs" "${profiles[@]}" <<'PY'
import resource, statistics, subprocess, sys, time
runs, loops, fnexec, rootfs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
profiles = sys.argv[5:]
names = {"default": "allowlist (default)", "unconfined": "unconfined"}
samples = {(p, w): [] for p in profiles for w in ("cold", "loop")}
cpu = {(p, w): [] for p in profiles for w in ("cold", "loop")}  # user+sys of fnexec and the sandbox
for i in range(runs + 2):
    for p in profiles:
        for what, arg in (("cold", "0"), ("loop", loops)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([fnexec, "run", "--rootfs", "--seccomp", p, rootfs, "--", "/bin/loop", arg], check=True)
            wall = (time.perf_counter() - t) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i >= 2:  # two warmup rounds
                samples[(p, what)].append(wall)
                cpu[(p, what)].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
def p90(v): return sorted(v)[int(0.9 * (len(v) - 1))]
for what, title in (("cold", "cold start: fnexec run -- loop 0"), ("loop", f"syscall loop: {loops} x 5 syscalls")):
    for label, table in (("wall", samples), ("cpu (user+sys; the sandbox's process is reaped by fnexec)", cpu)):
        print(f"\n{title}: {label} ({runs} runs each, ms)")
        base = statistics.median(table[("unconfined", what)])
        for p in profiles:
            v = table[(p, what)]
            m = statistics.median(v)
            print(f"  {names.get(p, 'denylist (main)'):22} median {m:8.2f}  p90 {p90(v):8.2f}  ratio to unconfined {m / base:5.3f}")
PY
