#!/bin/bash
# Runs inside the systemd suite's VM (tests/vm/run-systemd-suite.sh) as fnexec-vm-test.service: checks
# fnexec.service through systemctl, journalctl and the socket. One PASS or FAIL line per check goes to
# the console and to /mnt/fnexec-vm/results/log; results/done marks a run that got to the end.
set -u
SHARE=/mnt/fnexec-vm
RESULTS=$SHARE/results
. "$SHARE/expect.env"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SOCK=/run/fnexec/fnexec.sock
CG=/sys/fs/cgroup/system.slice/fnexec.service
STATE=/var/lib/fnexec

say() { echo "$*" | tee -a "$RESULTS/log"; }
pass() { say "PASS: $*"; }
fail() { say "FAIL: $*"; }
check() {   # check DESCRIPTION COMMAND...: PASS when the command succeeds
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
# Waits for a condition that follows an action without a completion signal of its own (a journal
# line being flushed, a process appearing); the deadline only bounds a failure.
wait_until() {
    local deadline=$((SECONDS + 60))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
api() { curl -sS --unix-socket "$SOCK" "$@"; }
prop() { systemctl show -P "$1" fnexec; }
journal_has() { journalctl -u fnexec -q --no-pager -o cat "${@:2}" | grep -q -- "$1"; }
# Every process whose cgroup is below fnexec.service, one pid a line.
service_pids() { grep -l '^0::/system.slice/fnexec.service/' /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3; }
# A function's process, by a pattern of one of its arguments that does not match itself ('slee[p] 8').
# (No pgrep: procps is not in a minimal Debian.)
running() { grep -qsz -- "$1" /proc/[0-9]*/cmdline; }
not_running() { ! running "$1"; }
sandbox_cgroups() { find "$CG" -mindepth 1 -type d -path '*/sandboxes/*' 2>/dev/null; }
finish() {
    journalctl -b --no-pager -o short-monotonic > "$RESULTS/journal.txt" 2>&1
    touch "$RESULTS/done"
    sync
}
trap finish EXIT

say "boot: multi-user.target reached $(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target) us after kernel start; test starts at uptime $(cut -d' ' -f1 /proc/uptime) s"
say "cgroup: $(stat -fc %T /sys/fs/cgroup) controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"

# --- the unit is installed where systemd looks, and names the installed binary
# FragmentPath may name /usr/lib for /lib: Debian 12's / is merged-usr.
check "systemd loads the unit from $EXPECT_UNIT ($(prop FragmentPath))" \
    [ "$(realpath "$(prop FragmentPath)")" = "$(realpath "$EXPECT_UNIT")" ]
check "ExecStart runs $EXPECT_FNEXEC --config $EXPECT_CONFIG" \
    sh -c 'systemctl show -P ExecStart fnexec | grep -q "path=$1 ; argv\[\]=$1 serve --config $2 ;"' _ "$EXPECT_FNEXEC" "$EXPECT_CONFIG"
check "the installed binary runs" "$EXPECT_FNEXEC" --version
check "the config file is installed" [ -f "$EXPECT_CONFIG" ]
# The administrator's step fnexec-serve(8) names: a subordinate-id line the daemon slices into
# per-function user namespaces (daemon functions get one by default).
check "subid lines for fnexec" sh -c 'echo fnexec:1000000000:1073741824 >> /etc/subuid &&
    echo fnexec:1000000000:1073741824 >> /etc/subgid'
check "systemctl enable fnexec" systemctl enable --quiet fnexec
check "is-enabled says enabled" [ "$(systemctl is-enabled fnexec)" = enabled ]
check "enable linked it into multi-user.target.wants" [ -L /etc/systemd/system/multi-user.target.wants/fnexec.service ]
for d in ProtectHostname RestrictSUIDSGID; do
    check "$d is off" [ "$(prop $d)" = no ]
done
check "UMask is the default 0022" [ "$(prop UMask)" = 0022 ]
# The hardening the unit keeps is in force for everything below (each sandbox inherits it).
for kv in ProtectHome=read-only ProtectClock=yes ProtectKernelLogs=yes ProtectKernelModules=yes \
          LockPersonality=yes RestrictRealtime=yes; do
    check "$kv is on" [ "$(prop "${kv%%=*}")" = "${kv#*=}" ]
done
check "RestrictAddressFamilies is on ($(prop RestrictAddressFamilies))" \
    [ "$(prop RestrictAddressFamilies | wc -w)" = 4 ]

# --- start: Type=notify, active only after READY=1 (which carries STATUS=serving)
check "Type=notify" [ "$(prop Type)" = notify ]
# Room to drain an invocation that is still running when stop comes (the default is 10 s).
echo "shutdown_grace = 60s" >> "$EXPECT_CONFIG"
if ! systemctl start fnexec; then
    fail "systemctl start fnexec"; systemctl status --no-pager fnexec; exit 1
fi
pass "systemctl start fnexec"
check "active after start" [ "$(systemctl is-active fnexec)" = active ]
check "StatusText=serving: the daemon's READY=1 message made it active" [ "$(prop StatusText)" = serving ]
check "the socket answers /healthz" api -f -o /dev/null http://localhost/healthz

# --- an image with a setuid file and a 0750 directory, imported by the daemon through the socket
code=$(api -o "$RESULTS/import.json" -w '%{http_code}' -X POST --data-binary @"$SHARE/images/suid.tar" \
    'http://localhost/v1/images?name=suid:1')
check "image with a setuid file imports through the socket (HTTP $code)" [ "$code" = 201 ]
probe=$(ls -d $STATE/layers/sha256/*/opt/suid-probe 2>/dev/null | head -1)
layer=${probe%/opt/suid-probe}
check "setuid file kept mode 4755" [ "$(stat -c %a "$probe" 2>/dev/null)" = 4755 ]
check "0750 directory kept its mode" [ "$(stat -c %a "$layer/opt/private" 2>/dev/null)" = 750 ]
check "0640 file kept its mode" [ "$(stat -c %a "$layer/opt/private/file" 2>/dev/null)" = 640 ]
check "layer root and /opt are 0755, not the umask's 0700" \
    [ "$(stat -c %a "$layer" 2>/dev/null)/$(stat -c %a "$layer/opt" 2>/dev/null)" = 755/755 ]

# --- invocations through the client and through the socket; each sandbox sets its hostname
check "fn create echo" fnexec fn create echo --image suid:1 --min-warm 1 -- /bin/cat
check "fnexec invoke echo" sh -c '[ "$(echo hello-client | fnexec invoke echo)" = hello-client ]'
out=$(api -X POST --data-binary hello-curl http://localhost/v1/functions/echo/invoke)
check "curl --unix-socket invoke (got '$out')" [ "$out" = hello-curl ]
check "fn create host" fnexec fn create host --image suid:1 --min-warm 0 -- /bin/hostname
out=$(echo | fnexec invoke host)
check "a sandbox sets its own hostname (got '$out', VM is '$(hostname)')" [ -n "$out" -a "$out" != "$(hostname)" ]

# --- delegation: sandboxes live below fnexec.service
check "Delegate=yes" [ "$(prop Delegate)" = yes ]
main=$(prop MainPID)
has_sandbox_procs() { [ -n "$(service_pids | grep -vx "$main")" ]; }
wait_until has_sandbox_procs   # the echo pool's parked sandbox (min-warm 1)
others=$(service_pids | grep -vx "$main" | wc -l)
check "sandbox processes are in cgroups below fnexec.service ($others besides the daemon)" [ "$others" -gt 0 ]
check "sandbox cgroups exist below fnexec.service" [ -n "$(sandbox_cgroups)" ]
check "no sandbox cgroup outside fnexec.service" \
    [ -z "$(find /sys/fs/cgroup -type d -name sandboxes -not -path "$CG/*" 2>/dev/null)" ]

# --- fnexec run on the same host, in a delegated scope of its own
check "fnexec image import (CLI)" fnexec --root /var/lib/fnexec-cli image import "oci-archive:$SHARE/images/suid.tar"
out=$(systemd-run --quiet --scope -p Delegate=yes fnexec --root /var/lib/fnexec-cli run suid:1 -- /bin/echo run-ok 2>&1)
check "fnexec run in a delegated scope (got '$out')" [ "$out" = run-ok ]

# --- log priorities in the journal: info 6, warning 4, error 3, without the "<N>" prefix in MESSAGE
check "the 'ready' line is in journalctl -u fnexec" wait_until journal_has "fnexec info: ready"
# "PRIORITY":"N" of the first journal entry of fnexec.service whose MESSAGE holds $1.
prio_of() { journalctl -u fnexec -q --no-pager -o json --output-fields=MESSAGE,PRIORITY | grep -F -- "$1" |
    head -1 | grep -o '"PRIORITY":"[0-9]"' | tr -cd 0-9; }
check "info line has PRIORITY 6" [ "$(prio_of 'fnexec info: ready')" = 6 ]

# --- reload applies a changed config: max_event_bytes (reloadable)
cp "$EXPECT_CONFIG" /tmp/fnexec.conf.orig
big=$(head -c 300 /dev/zero | tr '\0' x)
code=$(api -o /dev/null -w '%{http_code}' -X POST --data-binary "$big" http://localhost/v1/functions/echo/invoke)
check "a 300-byte event is accepted before reload (HTTP $code)" [ "$code" = 200 ]
echo "max_event_bytes = 100" >> "$EXPECT_CONFIG"
check "systemctl reload fnexec" systemctl reload fnexec
check "active after reload" [ "$(systemctl is-active fnexec)" = active ]
code=$(api -o /dev/null -w '%{http_code}' -X POST --data-binary "$big" http://localhost/v1/functions/echo/invoke)
check "after reload the 300-byte event is over max_event_bytes=100 (HTTP $code)" [ "$code" = 413 ]
echo "socket = /run/fnexec/other.sock" >> "$EXPECT_CONFIG"
systemctl reload fnexec
check "a restart-only key logs a warning" wait_until journal_has "reload: socket changed"
check "warning line has PRIORITY 4" [ "$(prio_of 'reload: socket changed')" = 4 ]
echo "no_such_key = 1" >> "$EXPECT_CONFIG"
systemctl reload fnexec
check "a broken config logs an error, shown by journalctl -p err" \
    wait_until sh -c 'journalctl -u fnexec -p err -q --no-pager -o cat | grep -q "reload failed"'
check "error line has PRIORITY 3" [ "$(prio_of 'reload failed')" = 3 ]
check "no '<N>' prefix reached the journal's MESSAGE" \
    sh -c '! journalctl -u fnexec -q --no-pager -o cat | grep -q "^<[0-9]>"'
cp /tmp/fnexec.conf.orig "$EXPECT_CONFIG"
systemctl reload fnexec
code=$(api -o /dev/null -w '%{http_code}' -X POST --data-binary "$big" http://localhost/v1/functions/echo/invoke)
check "the restored config applies again (HTTP $code)" [ "$code" = 200 ]

# --- stop drains an in-flight invocation, then leaves nothing behind
check "fn create slow" fnexec fn create slow --image suid:1 --min-warm 1 --timeout 60s -- \
    /bin/sh -c 'read x; sleep 8; echo "slow-done $x"'
api -X POST --data-binary drain http://localhost/v1/functions/slow/invoke > /tmp/slow.out 2>&1 &
curl_pid=$!
wait_until running 'slee[p] 8'
stop_while_running() { running "$1" && systemctl stop fnexec; }
check "systemctl stop fnexec while the invocation runs" stop_while_running 'slee[p] 8'
wait $curl_pid
check "the in-flight invocation finished during stop (got '$(cat /tmp/slow.out)')" [ "$(cat /tmp/slow.out)" = "slow-done drain" ]
check "the daemon drained on SIGTERM" journal_has "signal=15 shutting down"
check "inactive after stop" [ "$(systemctl is-active fnexec)" = inactive ]
check "no process left in fnexec.service after stop" [ -z "$(service_pids)" ]
check "no sandbox cgroup left after stop" [ -z "$(sandbox_cgroups)" ]
check "no fnexec overlay mount left after stop" sh -c '! grep -q /var/lib/fnexec /proc/mounts'

# --- SIGKILL to every process of the unit, then start: the lost invocation is marked, no orphans
check "start again" systemctl start fnexec
check "fn create stuck" fnexec fn create stuck --image suid:1 --min-warm 1 --timeout 600s -- \
    /bin/sh -c 'sleep 300; echo never'
api -X POST --data-binary lost http://localhost/v1/functions/stuck/invoke > /tmp/lost.out 2>&1 &
curl_pid=$!
check "the stuck invocation runs" wait_until running 'slee[p] 300'
before=$(service_pids | sort)
old_cgroups=$(sandbox_cgroups | sort)
check "systemctl kill -s KILL fnexec" systemctl kill -s KILL fnexec
wait $curl_pid
check "systemctl start fnexec after the kill" systemctl start fnexec
check "active after recovery" [ "$(systemctl is-active fnexec)" = active ]
survivors=$(comm -12 <(echo "$before") <(service_pids | sort) | grep -c .)
check "no process of the killed instance survived ($survivors)" [ "$survivors" = 0 ]
check "no orphan: the killed sandbox's function is gone" not_running 'slee[p] 300'
stale=$(comm -12 <(echo "$old_cgroups") <(sandbox_cgroups | sort) | grep -c .)
check "the killed instance's sandbox cgroups are gone ($stale left)" [ "$stale" = 0 ]
check "the interrupted invocation is marked lost" \
    sh -c 'curl -sS --unix-socket '"$SOCK"' "http://localhost/v1/invocations?function=stuck" | grep -q "\"status\":\"lost\""'
check "start logged the recovery" wait_until journal_has "recovered lost=1"
out=$(echo again | fnexec invoke echo)
check "invocations work after recovery (got '$out')" [ "$out" = again ]
check "final stop" systemctl stop fnexec
check "nothing left after the final stop" [ -z "$(service_pids)" ]
say "wall: guest test took $SECONDS s"
