#!/usr/bin/env bash
# Cold start of a whole process, the goals of issue 16 with their peers measured in the same run.
# Part 1 (`fnexec bench`): `fnexec run IMG -- true` (mode run) and a fresh in-process sandbox (mode
#   cold) against fork+exec of the same binary (floor), bwrap --unshare-all, crun run and runc run,
#   on the same busybox rootfs, interleaved. crun runs in a private mount namespace with
#   /sys/fs/cgroup/unified unmounted (crun refuses hybrid cgroup hosts); fnexec bench says so.
# Part 2 (this script, interleaved round by round so machine noise hits every command alike):
#   fnexec run IMG -- /bin/true            default options: every namespace incl. net, overlay, seccomp, caps
#   fnexec run --memory 64m IMG -- /bin/true   the same plus a cgroup
#   bwrap --unshare-all --ro-bind ROOTFS / --proc /proc --dev /dev /bin/true   (ROOTFS: the image's layer)
#   fnexec --version  against  /bin/true
#   and prints p50, p90 and the ratios the goals name.
# Usage: bench/run-start.sh [RUNS] [BUILDDIR]      (root; env BENCH_JSON=FILE keeps part 1's samples,
#        PART=1 or PART=2 runs one part only, BASELINE=OTHER_FNEXEC adds that binary's run and
#        --version to part 2, e.g. main's build, for a before/after in the same run)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
builddir=${2:-build}
fnexec=$(readlink -f "$builddir/fnexec")

if [ "${PART:-1}" != 2 ]; then
  args=(bench -n "$runs" --warmup 5 --mode run,cold --function true --concurrency 1)
  [ -n "${BENCH_JSON:-}" ] && args+=(--json "$BENCH_JSON")
  "$fnexec" "${args[@]}"
fi
[ "${PART:-2}" = 1 ] && exit 0

work=$(mktemp -d /tmp/fnexec-bench-run-start-XXXXXX)
trap 'rm -rf "$work"' EXIT
export FNEXEC_ROOT=$work/store
rootfs-tools/mkimage --busybox --ref bench:busybox --compression none --mtime 0 --oci-archive "$work/busybox.tar" >/dev/null
"$fnexec" image import -q "oci-archive:$work/busybox.tar" >/dev/null 2>&1 || "$fnexec" image import "oci-archive:$work/busybox.tar" >/dev/null
layers=("$FNEXEC_ROOT"/layers/sha256/*)
[ "${#layers[@]}" = 1 ] || { echo "run-start.sh: expected one layer in the busybox image" >&2; exit 1; }
bwrap_bin=$(command -v bwrap || true)
echo
echo "part 2: whole processes, interleaved, $runs runs each after 5 warm-up rounds"
python3 - "$runs" "$fnexec" "${layers[0]}" "$bwrap_bin" "${BASELINE:-}" <<'PY'
import resource, statistics, subprocess, sys, time
runs, fnexec, rootfs, bwrap, baseline = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
commands = {
    "fnexec run": [fnexec, "run", "bench:busybox", "--", "/bin/true"],
    "fnexec run --memory": [fnexec, "run", "--memory", "64m", "bench:busybox", "--", "/bin/true"],
    "fnexec --version": [fnexec, "--version"],
    "/bin/true": ["/bin/true"],
}
if baseline:
    commands["baseline run"] = [baseline, "run", "bench:busybox", "--", "/bin/true"]
    commands["baseline --version"] = [baseline, "--version"]
if bwrap:
    commands["bwrap"] = [bwrap, "--unshare-all", "--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]
samples = {name: [] for name in commands}
cpu = {name: [] for name in commands}  # user+sys of the command and its children (the sandbox)
for i in range(runs + 5):
    for name, argv in commands.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        wall = (time.perf_counter() - t) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i >= 5:
            samples[name].append(wall)
            cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
def p50(name): return statistics.median(samples[name])
def p90(name): return sorted(samples[name])[int(0.9 * (len(samples[name]) - 1))]
print(f"{'command':24} {'p50_ms':>8} {'p90_ms':>8} {'cpu_p50_ms':>10}")
for name in commands:
    print(f"{name:24} {p50(name):8.2f} {p90(name):8.2f} {statistics.median(cpu[name]):10.2f}")
print("(cpu: user+sys per run; on a loaded host it is steadier than wall time)")
print("\ngoals (p50 ratios, this run):")
def goal(label, a, b, limit):
    if b not in samples:
        print(f"  {label:40} <= {limit:.2f}x   not measured ({b} missing)")
        return
    r = p50(a) / p50(b)
    print(f"  {label:40} <= {limit:.2f}x   {r:5.2f}x  {'met' if r <= limit else 'MISSED'}")
goal("fnexec run / bwrap", "fnexec run", "bwrap", 0.6)
goal("fnexec run --memory / bwrap", "fnexec run --memory", "bwrap", 0.8)
goal("fnexec --version / /bin/true", "fnexec --version", "/bin/true", 1.5)
if baseline:
    goal("baseline run / bwrap", "baseline run", "bwrap", 0.6)
    goal("baseline --version / /bin/true", "baseline --version", "/bin/true", 1.5)
print("  (fnexec run / crun: part 1, goal 'run p50, true: fnexec run / crun')")
PY
