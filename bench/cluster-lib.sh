# What bench/cluster-async.sh and bench/cluster-forward.sh share, sourced from the project root:
#   cluster_bench_init NAME BUILDDIR   checks (built, root, nats-server), the scratch dir $work, the
#                                      cgroup prefix $prefix, $fnexec, the probe image $work/probe.tar
#                                      and the EXIT trap that stops every pid in $pids and cleans up
#   stop_all                           kills and reaps the daemons and servers started so far
#   free_port                          an unused TCP port on 127.0.0.1
#   start_daemon_in LABEL CONFIG       a daemon in $work/LABEL (socket fnexec.sock there, cgroup
#                                      prefix $prefix-LABEL, the probe image imported) with the extra
#                                      fnexec.conf lines CONFIG; returns when its socket is there

source bench/cgroup-prefix.sh

cluster_bench_init() {
  bench_name=$1
  local builddir=$2
  fnexec=$(realpath "$builddir/fnexec")
  [ -x "$builddir/tests/integration/frame_probe" ] || { echo "$bench_name: build first: meson compile -C $builddir" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "$bench_name: run as root (namespaces, cgroups)" >&2; exit 2; }
  command -v nats-server >/dev/null || { echo "$bench_name: needs nats-server (scripts/install-deps.sh)" >&2; exit 2; }
  work=$(mktemp -d "/tmp/fnexec-bench-${bench_name%.sh}.XXXXXX")
  prefix="fnexec-bench-${bench_name%.sh}-$$"
  pids=()
  trap cluster_bench_cleanup EXIT
  rootfs-tools/mkimage --busybox --file "$builddir/tests/integration/frame_probe=/bin/frame_probe" \
    --oci-archive "$work/probe.tar" >/dev/null
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

cluster_bench_cleanup() {
  stop_all
  rm -rf "$work"
  remove_cgroup_prefix "$prefix-"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_daemon_in() {
  local label=$1 extra=$2 dir="$work/$1"
  mkdir -p "$dir"
  printf 'cgroup_prefix = %s-%s\nlog_level = warn\ndefault_userns = false\n%s' "$prefix" "$label" "$extra" \
    > "$dir/fnexec.conf"
  chmod 600 "$dir/fnexec.conf"
  "$fnexec" --root "$dir/state" image import "$work/probe.tar" --name probe:1 >/dev/null
  "$fnexec" serve --config "$dir/fnexec.conf" --socket "$dir/fnexec.sock" --state-dir "$dir/state" \
    2>"$dir/daemon.log" &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$dir/fnexec.sock" ] && break; sleep 0.05; done
  [ -S "$dir/fnexec.sock" ] || { echo "$bench_name: daemon $label did not start:" >&2; cat "$dir/daemon.log" >&2; exit 1; }
}
