#!/usr/bin/env bash
# Sync invocations answered locally vs forwarded to another node over NATS (issue 17), in one run:
# two daemons of one cluster on a nats-server -js started here on loopback. Node A has one invocation
# worker (invocation_workers = 1) and keeps it busy with one hanging call of function `hold`, so A
# has no slot and forwards every sync call to node B (Fnexec-Node: nodeb); node B answers its own.
# Both are the same `reuse` echo function (tests/integration/programs/frame_probe) run by node B's
# warm sandboxes, so the difference is the forwarding: request to the queue group, `running`, result.
# The calls alternate local / forwarded, one at a time on kept-alive connections, after WARMUP of each.
# Usage: bench/cluster-forward.sh [CALLS] [BUILDDIR]   (root; needs nats-server)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-1000}
builddir=${2:-build}
warmup=${WARMUP:-50}
source bench/cluster-lib.sh
cluster_bench_init cluster-forward.sh "$builddir"
port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/nats" -l "$work/nats.log" &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done

# Starts node $1 (a or b) with extra config lines $2.
start_daemon() {
  start_daemon_in "$1" "cluster_nats = nats://127.0.0.1:$port"$'\n'"cluster_node = node$1"$'\n'"$2"
}
start_daemon a $'invocation_workers = 1\n'
start_daemon b ""
a="$work/a/fnexec.sock" b="$work/b/fnexec.sock"
"$fnexec" fn create echo --socket "$a" --image probe:1 --lifecycle reuse --min-warm 2 --max-concurrency 2 \
  -- /bin/frame_probe echo >/dev/null
"$fnexec" fn create hold --socket "$a" --image probe:1 --lifecycle reuse --min-warm 0 --timeout 10m \
  -- /bin/frame_probe hang >/dev/null
for s in "$a" "$b"; do  # the registry reaches node B by its watch
  until curl -s --unix-socket "$s" http://localhost/v1/functions/echo | grep -q '"warm":2'; do sleep 0.05; done
done
curl -s --unix-socket "$a" -d hold http://localhost/v1/functions/hold/invoke >/dev/null &
pids+=($!)
until curl -s --unix-socket "$a" http://localhost/v1/functions/hold | grep -q '"busy":1'; do sleep 0.05; done

python3 - "$b" "$a" "$calls" "$warmup" <<'EOF' || { tail -5 "$work/b/daemon.log" "$work/a/daemon.log" >&2; exit 1; }
import http.client, socket, statistics, sys, time
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)
local, forwarded = Unix(sys.argv[1]), Unix(sys.argv[2])
calls, warmup = int(sys.argv[3]), int(sys.argv[4])
lat = {"local": [], "forwarded": []}
for i in range(warmup + calls):
    for name, c in (("local", local), ("forwarded", forwarded)):
        t = time.perf_counter()
        c.request("POST", "/v1/functions/echo/invoke", b"event")
        r = c.getresponse()
        body = r.read()
        dt = (time.perf_counter() - t) * 1000
        assert r.status == 200 and body == b"event", (i, name, r.status, body)
        assert r.getheader("Fnexec-Node", "") == ("nodeb" if name == "forwarded" else ""), (name, r.getheader("Fnexec-Node"))
        if i >= warmup:
            lat[name].append(dt)
pick = lambda l, q: sorted(l)[min(len(l) - 1, int(q * len(l)))]
print(f"cluster forward: {calls} sync calls each, alternating, after {warmup} warm-up calls each")
print("                  p50        p90        p99")
for name, l in lat.items():
    print(f"{name:10} {pick(l, .5):8.2f} ms {pick(l, .9):7.2f} ms {pick(l, .99):7.2f} ms")
L, F = lat["local"], lat["forwarded"]
print(f"forwarded - local: p50 {pick(F, .5) - pick(L, .5):+.2f} ms, p99 {pick(F, .99) - pick(L, .99):+.2f} ms; "
      f"p50 x{pick(F, .5) / pick(L, .5):.2f}")
EOF
