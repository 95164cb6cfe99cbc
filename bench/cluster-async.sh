#!/usr/bin/env bash
# Async invocations through NATS JetStream (issue 17) next to the local SQLite queue, in one run:
# each round runs three setups in turn, on the same binary and machine:
#   local     one daemon, no cluster_nats: the SQLite queue
#   nats-1    one daemon with cluster_nats (a nats-server -js started here on loopback)
#   nats-3    three daemons of one cluster on that nats-server (separate roots, sockets, cgroups)
# Two loads per setup, on kept-alive connections:
#   burst     N events queued at once by CLIENTS (default 4) curl -K connections, spread over the
#             daemons: events/s over first queued → last finished, and p50/p99 of enqueue →
#             completed, which there is mostly time spent waiting in the queue;
#   paced     PACED events at 200/s through the first daemon (below capacity, so no backlog): p50/p99 of enqueue → completed,
#             the queue's own latency, which is what the "added to p50" goal is about.
# enqueue → completed per event is from its record (finished_ms - queued_ms, this machine's clock).
# Every daemon lists the events it ran (GET /v1/invocations?function=echo); the script merges them.
# The function is `reuse` (tests/integration/programs/frame_probe, fnexec/1 echo), max_concurrency 2
# and 2 warm sandboxes per daemon.
# SETUPS="nats-1" runs only those setups (profiling one of them); the ratios need local.
# Usage: [PACED=400] [SETUPS=...] bench/cluster-async.sh [EVENTS] [ROUNDS] [BUILDDIR]   (root; needs nats-server)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
rounds=${2:-3}
builddir=${3:-build}
paced=${PACED:-400}
clients=${CLIENTS:-4}
setups=${SETUPS:-local nats-1 nats-3}
source bench/cluster-lib.sh
cluster_bench_init cluster-async.sh "$builddir"
for i in $(seq $((n / clients))); do printf 'url = "http://localhost/v1/functions/echo/invoke?mode=async"\noutput = "/dev/null"\n'; done > "$work/urls"
n=$((n / clients * clients))
# Starts daemon $1 (0-based) of setup $2 with extra config lines $3.
start_daemon() { start_daemon_in "$2-$1" "$3"; }

# Waits until the daemons (sockets: the arguments after $1 and $2) list $1 done events of function
# echo queued at or after $2 ms, into $work/lists.
collect() {
  local want=$1 since=$2
  shift 2
  while :; do
    : > "$work/lists"
    for s in "$@"; do
      curl -s --unix-socket "$s" "http://localhost/v1/invocations?function=echo&limit=$want&since=$since" >> "$work/lists"
      echo >> "$work/lists"
    done
    python3 - "$want" "$work/lists" <<'EOF' && break
import json, sys
ids = {r["id"] for l in open(sys.argv[2]) if l.strip() for r in json.loads(l)["invocations"] if r["status"] == "done"}
sys.exit(0 if len(ids) >= int(sys.argv[1]) else 1)
EOF
    sleep 0.2
  done
}

# "p50_ms p99_ms events_per_s" of the merged lists in $work/lists (an id listed twice: its last run).
stats() {
  python3 - "$work/lists" <<'EOF'
import json, sys
rows = {}
for l in open(sys.argv[1]):
    for r in json.loads(l)["invocations"] if l.strip() else []:
        if r["status"] == "done" and (r["id"] not in rows or r["finished_ms"] > rows[r["id"]]["finished_ms"]):
            rows[r["id"]] = r
rows = list(rows.values())
assert all(r["outcome"] == "success" for r in rows), "a failed event"
lat = sorted(r["finished_ms"] - r["queued_ms"] for r in rows)
span = max(r["finished_ms"] for r in rows) - min(r["queued_ms"] for r in rows)
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(pick(0.5), pick(0.99), round(len(rows) * 1000 / max(span, 1)))
EOF
}

# "setup daemon_cpu_ms nats_cpu_ms nats_msgs_in nats_msgs_out", each per event ($2 events), from
# /proc (user + system time of the daemons and nats-server, their start included) and nats-server's
# /varz (messages it received and sent: publishes, acks, pull requests, deliveries, replies).
cost() {
  local setup=$1 events=$2 nats=$3 mport=$4 daemon_ticks=0 nats_ticks=0 varz="{}"
  for p in "${pids[@]}"; do
    local t
    t=$(awk '{print $14 + $15}' "/proc/$p/stat")
    if [ "$p" = "$nats" ]; then nats_ticks=$t; else daemon_ticks=$((daemon_ticks + t)); fi
  done
  [ -n "$mport" ] && varz=$(curl -s "http://127.0.0.1:$mport/varz")
  python3 - "$setup" "$events" "$daemon_ticks" "$nats_ticks" "$(getconf CLK_TCK)" "$varz" <<'EOF'
import json, sys
setup, events, daemon, nats, hz, varz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
ms = lambda ticks: ticks * 1000 / hz / events
print(setup, f"{ms(daemon):.3f}", f"{ms(nats):.3f}", f"{varz.get('in_msgs', 0) / events:.1f}", f"{varz.get('out_msgs', 0) / events:.1f}")
EOF
}

now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

# One round of one setup: prints "burst_p50 burst_p99 burst_events_per_s paced_p50 paced_p99".
round() {
  local setup=$1 nodes=$2 nats_conf="" socks=() mport="" nats_pid=""
  rm -rf "$work/$setup"-*
  if [ "$setup" != local ]; then
    local port
    port=$(free_port)
    mport=$(free_port)
    nats-server -js -a 127.0.0.1 -p "$port" -m "$mport" -sd "$work/$setup-nats" -l "$work/$setup-nats.log" &
    pids+=($!)
    nats_pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
    nats_conf="cluster_nats = nats://127.0.0.1:$port"$'\n'
  fi
  for i in $(seq 0 $((nodes - 1))); do
    start_daemon "$i" "$setup" "${nats_conf}${nats_conf:+cluster_node = node$i$'\n'}"
    socks+=("$work/$setup-$i/fnexec.sock")
  done
  "$fnexec" fn create echo --socket "${socks[0]}" --image probe:1 --lifecycle reuse --min-warm 2 \
    --max-concurrency 2 -- /bin/frame_probe echo >/dev/null
  for s in "${socks[@]}"; do  # the registry reaches the other nodes by its watch
    until curl -s --unix-socket "$s" http://localhost/v1/functions/echo | grep -q '"warm":2'; do sleep 0.05; done
  done
  local senders=()
  for c in $(seq 0 $((clients - 1))); do
    curl -s --unix-socket "${socks[$((c % nodes))]}" -d event -K "$work/urls" &
    senders+=($!)
  done
  wait "${senders[@]}"
  collect "$n" 0 "${socks[@]}"
  local burst since
  burst=$(stats)
  sleep 0.01
  since=$(now_ms)  # the paced events are told from the burst's by their queued time
  python3 - "${socks[0]}" "$paced" <<'EOF'
import http.client, socket, sys, time
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
c = Unix("localhost")
start = time.monotonic()
for i in range(int(sys.argv[2])):
    time.sleep(max(0, start + i / 200 - time.monotonic()))
    c.request("POST", "/v1/functions/echo/invoke?mode=async", b"event")
    r = c.getresponse()
    r.read()
    assert r.status == 202, r.status
EOF
  collect "$paced" "$since" "${socks[@]}"
  cost "$setup" "$((n + paced))" "$nats_pid" "$mport" >> "$work/costs"
  stop_all
  echo "$burst $(stats | cut -d' ' -f1,2)"
}

echo "cluster async: burst $n events from $clients clients, paced $paced events at 200/s, $rounds rounds, $fnexec"
for r in $(seq "$rounds"); do
  for setup in $setups; do
    nodes=${setup#nats-}
    [ "$setup" = local ] && nodes=1
    echo "$setup $(round "$setup" "$nodes")" >> "$work/results"
    tail -1 "$work/results"
  done
done
python3 -c '
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
keys = [k for k in ("local", "nats-1", "nats-3") if any(r[0] == k for r in rows)]
med = {k: [statistics.median(float(r[i]) for r in rows if r[0] == k) for i in range(1, 6)] for k in keys}
print("median of rounds   burst: p50      p99  events/s | paced 200/s: p50     p99")
for k, m in med.items():
    print(f"{k:7}               {m[0]:5.0f} ms {m[1]:5.0f} ms {m[2]:6.0f}   |          {m[3]:5.1f} ms {m[4]:5.1f} ms")
L = med.get("local")
for k in keys[1:] if L else []:
    m = med[k]
    print(f"{k} vs local: paced p50 {m[3] - L[3]:+.1f} ms, p99 {m[4] - L[4]:+.1f} ms; burst events/s x{m[2] / max(L[2], 1):.2f}")
' "$work/results"
python3 -c '
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("per event (median of rounds): daemon CPU   nats-server CPU   msgs into nats-server   msgs out of it")
for k in dict.fromkeys(r[0] for r in rows):
    m = [statistics.median(float(r[i]) for r in rows if r[0] == k) for i in range(1, 5)]
    print(f"{k:7}                       {m[0]:6.3f} ms   {m[1]:6.3f} ms         {m[2]:5.1f}                   {m[3]:5.1f}")
' "$work/costs"
