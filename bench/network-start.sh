#!/usr/bin/env bash
# Cold start of `fnexec run --rootfs ROOTFS -- true` with --network none against --network bridge
# (veth, lease, egress chain, /etc files, teardown), interleaved (none, bridge, none, ...) in one
# run; prints p50/p90/mean per mode and the bridge/none ratio (issue 14's goal: cold bridge <= 1.5x
# none). fnexec runs in a private network namespace the script makes, so the bridge, its nftables
# table and ip_forward never touch the host's own namespace.
# podman run --network bridge is not measured: podman 4.3 (Debian 12) fails rootful here with
# "crun: setrlimit RLIMIT_NOFILE/RLIMIT_NPROC: Operation not permitted".
# Usage: bench/network-start.sh [RUNS] [BUILDDIR]      (root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
builddir=$(realpath "${2:-build}")
id=nwbench$$
scratch=$(mktemp -d /tmp/fnexec-network-bench-XXXXXX)
cleanup() {
  ip netns del "$id" 2>/dev/null || true
  rm -rf "$scratch" "/run/fnexec/net/$id"
}
trap cleanup EXIT
mkdir -p "$scratch/rootfs/bin" "$scratch/state"
cp /bin/busybox "$scratch/rootfs/bin/"
ln -s busybox "$scratch/rootfs/bin/true"
ip netns add "$id"
ip -n "$id" link set lo up
python3 - "$runs" "$builddir/fnexec" "$id" "$scratch" <<'PY'
import statistics, subprocess, sys, time
runs, fnexec, ns, scratch = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def cmd(net):
    extra = ["--bridge", ns, "--bridge-subnet", "10.233.0.0/24"] if net == "bridge" else []
    return ["nsenter", f"--net=/run/netns/{ns}", fnexec, "--root", f"{scratch}/state", "run", "--rootfs",
            "--network", net, *extra, f"{scratch}/rootfs", "--", "true"]
samples = {"none": [], "bridge": []}
floor = []
for i in range(runs + 5):
    for net in ("none", "bridge"):
        t = time.perf_counter(); subprocess.run(cmd(net), check=True); dt = (time.perf_counter() - t) * 1e3
        if i >= 5: samples[net].append(dt)
    # nsenter + fork/exec alone, so the ratio can be read without it too
    t = time.perf_counter(); subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "/bin/true"], check=True)
    if i >= 5: floor.append((time.perf_counter() - t) * 1e3)
def row(name, xs):
    q = statistics.quantiles(xs, n=10)
    print(f"{name:8} p50 {statistics.median(xs):7.2f} ms  p90 {q[8]:7.2f} ms  mean {statistics.mean(xs):7.2f} ms  n={len(xs)}")
row("none", samples["none"]); row("bridge", samples["bridge"]); row("nsenter", floor)
print(f"cold bridge/none p50 ratio: {statistics.median(samples['bridge']) / statistics.median(samples['none']):.2f} (goal <= 1.5)")
PY
