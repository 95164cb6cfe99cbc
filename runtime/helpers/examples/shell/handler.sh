#!/bin/sh
# Example fnexec function in shell: echoes the event's bytes exactly.
#
#   fnexec run --lifecycle reuse IMAGE -- /bin/sh /handler.sh
#
# Test hooks (used by fnexec's own tests), by the event's first bytes: "raise:MSG" fails the event
# with errorType ValueError, "count" answers how many events this shell has seen, "remaining" the
# milliseconds left before the deadline. EXAMPLE_FAIL_INIT=1 makes init fail.

seen=0  # state that carries across events in `reuse`

init() {
  echo "init: output on stdout during init goes to the log"
  [ -z "${EXAMPLE_FAIL_INIT:-}" ] || { fnexec_fail InitError "EXAMPLE_FAIL_INIT is set"; return 1; }
}

handler() {
  seen=$((seen + 1))
  event=$(mktemp "${TMPDIR:-/tmp}/event.XXXXXX") || return 1
  cat >"$event"
  hook=$(dd bs=9 count=1 <"$event" 2>/dev/null | tr -d '\000')
  case $hook in
    raise:*) fnexec_fail ValueError "$(dd bs=6 skip=1 <"$event" 2>/dev/null)"; rm -f "$event"; return 1 ;;
    count) printf '%s' "$seen" ;;
    remaining) fnexec_remaining_ms | tr -d '\n' ;;
    *) cat "$event" ;;
  esac
  rm -f "$event"
}

. "${FNEXEC_RUNTIME_SH:-/opt/fnexec/fnexec_runtime.sh}"
