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
#   and the floors that bound what any implementation reaches here (built in BUILDDIR/bench):
#   mini sandbox   fnexec-bench-mini-sandbox: the kernel work of a default `fnexec run` (namespaces,
#                  the same mount plan, caps, seccomp) from one static process, no user-space work
#   C++ start (a)  an empty C++ program linked as fnexec is (libstdc++.so + libsimdjson.so),
#             (b)  with -static-libstdc++ -static-libgcc and no simdjson, (c) fully static
#   and prints p50, p90 and the ratios the goals name, and which goal each floor puts out of reach
#   (run floor for a start linked as (x): mini sandbox - (c) + (x), the mini sandbox being a static
#   C++ program itself).
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
mkdir "$work/mini"
python3 - "$runs" "$fnexec" "${layers[0]}" "$bwrap_bin" "${BASELINE:-}" "$(readlink -f "$builddir/bench")" "$work/mini" <<'PY'
import os, resource, statistics, subprocess, sys, time
runs, fnexec, rootfs, bwrap, baseline = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
benchdir, scratch = sys.argv[6], sys.argv[7]
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
floors = {
    "mini sandbox": ["fnexec-bench-mini-sandbox", rootfs, scratch, "/bin/true"],
    "C++ start (a) shared": ["fnexec-bench-cxx-shared"],
    "C++ start (b) static libstdc++": ["fnexec-bench-cxx-static-libstdcxx"],
    "C++ start (c) static": ["fnexec-bench-cxx-static"],
}
for name, argv in floors.items():
    path = os.path.join(benchdir, argv[0])
    if os.access(path, os.X_OK):
        commands[name] = [path] + argv[1:]
    else:
        print(f"{name}: {path} not built, left out")
print("load average at start:", open("/proc/loadavg").read().split()[:3])
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
print(f"{'command':30} {'p50_ms':>8} {'p90_ms':>8} {'cpu_p50_ms':>10}")
for name in commands:
    print(f"{name:30} {p50(name):8.2f} {p90(name):8.2f} {statistics.median(cpu[name]):10.2f}")
print("(cpu: user+sys per run; on a loaded host it is steadier than wall time)")
print("load average at end:", open("/proc/loadavg").read().split()[:3])
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

# Floors: a fnexec process cannot start faster than an empty C++ program linked like it, nor do its
# sandbox's kernel work faster than the mini sandbox. The mini sandbox is itself a static C++ program,
# as (c) is, so the run floor for a start linked as (x) is mini - (c) + (x).
if "mini sandbox" in samples and "bwrap" in samples:
    print("\nfloors (p50, this run):")
    mini, true, bw, run = p50("mini sandbox"), p50("/bin/true"), p50("bwrap"), p50("fnexec run")
    print(f"  mini sandbox / bwrap {mini / bw:5.2f}x   mini sandbox / fnexec run {mini / run:5.2f}x   "
          f"mini sandbox - /bin/true {mini - true:5.2f} ms")
    static = p50("C++ start (c) static") if "C++ start (c) static" in samples else None
    for tag, name in (("a", "C++ start (a) shared"), ("b", "C++ start (b) static libstdc++"),
                      ("c", "C++ start (c) static")):
        if name not in samples or static is None:
            continue
        start = p50(name)
        run_floor = mini - static + start
        def verdict(r, limit): return "goal out of reach" if r > limit else "leaves room"
        print(f"  ({tag}) --version floor: C++ start / /bin/true {start / true:5.2f}x "
              f"(goal 1.5x: {verdict(start / true, 1.5)})")
        print(f"      run floor: mini - (c) + C++ start = {run_floor:5.2f} ms, / bwrap {run_floor / bw:5.2f}x "
              f"(goal 0.6x: {verdict(run_floor / bw, 0.6)}), / fnexec run {run_floor / run:5.2f}x")
PY
