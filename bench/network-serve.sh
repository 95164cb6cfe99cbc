#!/usr/bin/env bash
# Warm and cold invocations through `fnexec serve` of a network none function against the same
# function with network bridge, interleaved (none, bridge, none, ...) in one run, over one kept-alive
# connection to the daemon's unix socket; prints p50/p90/p99 per series and the bridge/none ratios
# (issue 14's goals: warm bridge p50 <= 1.1x warm none, cold bridge <= 1.5x cold none). The daemon
# runs in a private network namespace the script makes, so its bridge, nftables table and
# ip_forward never touch the host's own namespace.
# Usage: bench/network-serve.sh [RUNS] [BUILDDIR]      (root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
builddir=$(realpath "${2:-build}")
id=nwserve$$
scratch=$(mktemp -d /tmp/fnexec-network-serve-XXXXXX)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  ip netns del "$id" 2>/dev/null || true
  rm -rf "$scratch" "/run/fnexec/net/$id"
  remove_cgroup_prefix "fnexec-bench-$id"
}
source bench/cgroup-prefix.sh
trap cleanup EXIT
ip netns add "$id"
ip -n "$id" link set lo up
rootfs-tools/mkimage --busybox --ref bb:1 --oci-archive "$scratch/bb.tar" >/dev/null
"$builddir/fnexec" --root "$scratch/state" image import "$scratch/bb.tar" --name bb:1 >/dev/null
printf 'bridge = %s\nbridge_subnet = 10.234.0.0/24\ncgroup_prefix = fnexec-bench-%s\ndefault_userns = false\n' "$id" "$id" >"$scratch/fnexec.conf"
nsenter --net=/run/netns/"$id" "$builddir/fnexec" serve --config "$scratch/fnexec.conf" \
  --socket "$scratch/sock" --state-dir "$scratch/state" 2>"$scratch/daemon.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$scratch/sock" ] && break; sleep 0.1; done
python3 - "$runs" "$scratch/sock" <<'PY'
import http.client, json, socket, statistics, sys, time
runs, sock = int(sys.argv[1]), sys.argv[2]
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
c = Conn("localhost")
def req(method, path, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); return r.status, data, r
for net in ("none", "bridge"):
    for kind, warm in (("warm", 1), ("cold", 0)):
        doc = {"image": "bb:1", "cmd": ["/bin/true"], "min_warm": warm, "network": net}
        st, data, _ = req("PUT", f"/v1/functions/{kind}-{net}", json.dumps(doc))
        assert st in (200, 201), data
time.sleep(2)
samples = {}
for i in range(runs + 5):
    for kind in ("warm", "cold"):
        for net in ("none", "bridge"):
            name = f"{kind}-{net}"
            # Each warm sample takes a parked sandbox from a settled daemon: both warm pools refilled
            # and no launch running. (Waiting for the measured pool only let warm-bridge run during
            # warm-none's refill, which starts at the hit when the pool runs dry, and never the reverse.)
            if kind == "warm":
                for _ in range(200):
                    pools = [json.loads(req("GET", f"/v1/functions/warm-{n}")[1])["pool"] for n in ("none", "bridge")]
                    if all(p["warm"] >= 1 and p["starting"] == 0 for p in pools): break
                    time.sleep(0.01)
            t = time.perf_counter(); st, data, r = req("POST", f"/v1/functions/{name}/invoke", b"")
            dt = (time.perf_counter() - t) * 1e3
            assert st == 200, (name, st, data)
            assert r.getheader("Fnexec-Start") == kind, (name, r.getheader("Fnexec-Start"))
            if i >= 5: samples.setdefault(name, []).append(dt)
def row(name, xs):
    q = statistics.quantiles(xs, n=100)
    print(f"{name:12} p50 {statistics.median(xs):7.2f} ms  p90 {q[89]:7.2f} ms  p99 {q[98]:7.2f} ms  mean {statistics.mean(xs):7.2f} ms  n={len(xs)}")
for name in ("warm-none", "warm-bridge", "cold-none", "cold-bridge"): row(name, samples[name])
p50 = {k: statistics.median(v) for k, v in samples.items()}
print(f"warm bridge/none p50 ratio: {p50['warm-bridge'] / p50['warm-none']:.2f} (goal <= 1.1)")
print(f"cold bridge/none p50 ratio: {p50['cold-bridge'] / p50['cold-none']:.2f} (goal <= 1.5)")
PY
