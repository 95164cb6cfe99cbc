#!/usr/bin/env bash
# Cold start of `fnexec run --rootfs ROOTFS -- true` with --network none against --network bridge
# (veth, lease, egress chain, /etc files, teardown), and the peer users know, `podman run --rm
# --network bridge` (and none) of the same rootfs, interleaved in one run; prints p50/p90/p99 per
# series and the ratios (issue 14's goal: cold bridge <= 1.5x none). fnexec and podman run in a
# private network namespace the script makes, so their bridges, nftables/iptables rules and
# ip_forward live and die with it; podman's store is in the scratch directory.
# podman (Debian 12: 4.3, CNI) needs three settings on this machine: --runtime runc (crun refuses
# hybrid cgroup hierarchies), --cgroup-manager cgroupfs (no systemd), and rlimits it may set
# (its defaults, nofile 1048576 and the host's nproc, fail with EPERM: no CAP_SYS_RESOURCE here).
# PODMAN=0 skips the podman series. "cpu" is user+sys of the processes the command forked and reaped
# (not a sandbox PID 1 left to the host's reaper, nor the kernel's own namespace clean-up work).
# Usage: bench/network-start.sh [RUNS] [BUILDDIR]      (root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
builddir=$(realpath "${2:-build}")
id=nwbench$$
scratch=$(mktemp -d /tmp/fnexec-network-bench-XXXXXX)
cleanup() {
  findmnt -rn -o TARGET | grep "^$scratch/" | sort -r | xargs -r umount 2>/dev/null || true
  ip netns del "$id" 2>/dev/null || true
  # podman's cgroupfs manager leaves libpod_parent/conmon behind, empty (rmdir fails on a busy one).
  rmdir /sys/fs/cgroup/*/libpod_parent/conmon /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true
  rm -rf "$scratch" "/run/fnexec/net/$id"
}
trap cleanup EXIT
mkdir -p "$scratch/rootfs/bin" "$scratch/state"
cp /bin/busybox "$scratch/rootfs/bin/"
ln -s busybox "$scratch/rootfs/bin/true"
ip netns add "$id"
ip -n "$id" link set lo up
podman=
if [ "${PODMAN:-1}" != 0 ]; then
  podman=$(command -v podman || true)
  [ -n "$podman" ] || echo "podman not found (scripts/install-deps.sh --all installs it): its series are skipped" >&2
fi
python3 - "$runs" "$builddir/fnexec" "$id" "$scratch" "$podman" <<'PY'
import resource, statistics, subprocess, sys, time
runs, fnexec, ns, scratch, podman = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
enter = ["nsenter", f"--net=/run/netns/{ns}"]
def fnexec_cmd(net):
    extra = ["--bridge", ns, "--bridge-subnet", "10.233.0.0/24"] if net == "bridge" else []
    return [*enter, fnexec, "--root", f"{scratch}/state", "run", "--rootfs", "--network", net, *extra,
            f"{scratch}/rootfs", "--", "true"]
def podman_cmd(net):
    return [*enter, podman, "--root", f"{scratch}/podman", "--runroot", f"{scratch}/podman-run",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "run", "--rm", "--runtime", "runc",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--network", net,
            "--rootfs", f"{scratch}/rootfs", "/bin/true"]
series = {"none": fnexec_cmd("none"), "bridge": fnexec_cmd("bridge")}
if podman:
    series["podman-none"] = podman_cmd("none")
    series["podman-bridge"] = podman_cmd("bridge")
series["nsenter"] = [*enter, "/bin/true"]  # nsenter + fork/exec alone, the floor under every series
samples = {name: [] for name in series}
cpu = {name: [] for name in series}  # user+sys of the command's reaped processes, ms
def children_cpu_ms():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1e3
for i in range(runs + 5):
    for name, argv in series.items():
        c = children_cpu_ms(); t = time.perf_counter()
        subprocess.run(argv, check=True)
        dt = (time.perf_counter() - t) * 1e3
        if i >= 5: samples[name].append(dt); cpu[name].append(children_cpu_ms() - c)
def row(name, xs):
    q = statistics.quantiles(xs, n=100)
    print(f"{name:14} p50 {statistics.median(xs):8.2f} ms  p90 {q[89]:8.2f} ms  p99 {q[98]:8.2f} ms  mean {statistics.mean(xs):8.2f} ms  "
          f"cpu p50 {statistics.median(cpu[name]):7.2f} ms  n={len(xs)}")
for name, xs in samples.items(): row(name, xs)
p50 = {name: statistics.median(xs) for name, xs in samples.items()}
print(f"cold bridge/none p50 ratio: {p50['bridge'] / p50['none']:.2f} (goal <= 1.5)")
if podman:
    print(f"podman-bridge/bridge p50 ratio: {p50['podman-bridge'] / p50['bridge']:.2f}; "
          f"podman bridge/none: {p50['podman-bridge'] / p50['podman-none']:.2f}")
PY
