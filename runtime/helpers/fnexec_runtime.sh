# fnexec function runtime for POSIX shells (busybox sh, dash, bash): the fnexec/1 frame protocol.
# Source it at the end of a script that defines `handler` (and optionally `init`):
#
#   init() { answer=42; }              # optional: runs once, before READY; non-zero status fails init
#   handler() { tr a-z A-Z; }          # the event on stdin, the result on stdout
#   . /opt/fnexec/fnexec_runtime.sh    # serves events; does not return
#
# Under fnexec with lifecycle fresh or reuse (FNEXEC_PROTOCOL=fnexec/1) it sends READY after init
# and runs handler once per EVENT until stdin closes. Without FNEXEC_PROTOCOL (lifecycle oneshot, or
# a terminal) it runs handler once with the script's stdin and stdout and exits with its status.
#
# handler runs in the script's own shell, so variables it sets carry across events in `reuse`. It
# sees FNEXEC_EVENT_ID and FNEXEC_DEADLINE_MS (unix epoch ms), and can call fnexec_remaining_ms.
# A non-zero status makes an ERROR frame; `fnexec_fail TYPE MESSAGE` (then return non-zero) sets its
# errorType and errorMessage. Anything handler or init write to stderr is the log; the frame channel
# is on private fds 8 (in) and 9 (out), which handler does not inherit. Events and results pass
# through temporary files under $TMPDIR (default /tmp). See fnexec-protocol(7).

fnexec_fail() {
  FNEXEC_ERROR_TYPE=$1
  FNEXEC_ERROR_MESSAGE=$2
  return 1
}

# Milliseconds left before the event's deadline (0 when past it); fails when none is known.
fnexec_remaining_ms() {
  [ -n "${FNEXEC_DEADLINE_MS:-}" ] || return 1
  fnexec_p_now=$(date +%s%3N 2>/dev/null)
  case $fnexec_p_now in
    '' | *[!0-9]*) fnexec_p_now=$(($(date +%s) * 1000)) ;;  # busybox date has no %N
  esac
  fnexec_p_left=$((FNEXEC_DEADLINE_MS - fnexec_p_now))
  [ "$fnexec_p_left" -gt 0 ] || fnexec_p_left=0
  echo "$fnexec_p_left"
}

fnexec_p_is_function() {
  case $(type "$1" 2>/dev/null) in
    *function*) return 0 ;;
  esac
  return 1
}

# A JSON string of $1: quotes and backslashes escaped, control characters as spaces.
fnexec_p_json_string() {
  printf '"'
  printf '%s' "$1" | tr '\n\t\r' '   ' | sed 's/[\\"]/\\&/g'
  printf '"'
}

# Writes the frame "$1 <len>\n<bytes of file $2>\n" to the channel.
fnexec_p_send_file() {
  fnexec_p_len=$(wc -c <"$2")
  printf '%s %s\n' "$1" $((fnexec_p_len)) >&9
  cat "$2" >&9
  printf '\n' >&9
}

# $1: header without length ("ERROR <id>" or "INIT_ERROR"); $2 errorType, $3 errorMessage.
fnexec_p_send_error() {
  {
    printf '{"errorType":'
    fnexec_p_json_string "$2"
    printf ',"errorMessage":'
    fnexec_p_json_string "$3"
    printf ',"stackTrace":[]}'
  } >"$fnexec_p_tmp/error"
  fnexec_p_send_file "$1" "$fnexec_p_tmp/error"
}

fnexec_p_protocol_error() {
  echo "fnexec_runtime.sh: protocol error from fnexec: $1" >&2
  exit 2
}

# Exactly $1 bytes from the channel into file $2. Not head -c: busybox's reads ahead on a pipe.
fnexec_p_read_exact() {
  fnexec_p_blocks=$(($1 / 65536))
  fnexec_p_rest=$(($1 % 65536))
  {
    if [ "$fnexec_p_blocks" -gt 0 ]; then dd bs=65536 count="$fnexec_p_blocks" iflag=fullblock 2>/dev/null; fi
    if [ "$fnexec_p_rest" -gt 0 ]; then dd bs="$fnexec_p_rest" count=1 iflag=fullblock 2>/dev/null; fi
  } <&8 >"$2"
  [ "$(($(wc -c <"$2")))" -eq "$1" ] || fnexec_p_protocol_error "input ended inside an event's $1 payload bytes"
}

fnexec_p_is_number() {
  case $1 in
    '' | *[!0-9]* | 0?*) return 1 ;;
  esac
  return 0
}

fnexec_p_serve() {
  set +e
  # The frame channel moves to fds 8 and 9; fd 1 becomes the log and fd 0 /dev/null.
  exec 8<&0 9>&1 1>&2 0</dev/null
  if [ -z "${FNEXEC_PROTOCOL:-}" ]; then
    fnexec_p_is_function init && { init 8<&- 9>&- || exit 1; }
    handler <&8 >&9 8<&- 9>&-
    exit $?
  fi
  fnexec_p_tmp=$(mktemp -d "${TMPDIR:-/tmp}/fnexec.XXXXXX") || exit 1
  trap 'rm -rf "$fnexec_p_tmp"' EXIT
  trap 'exit 143' TERM
  if [ "$FNEXEC_PROTOCOL" != fnexec/1 ]; then
    fnexec_p_send_error INIT_ERROR Runtime.ProtocolError "FNEXEC_PROTOCOL is $FNEXEC_PROTOCOL, this runtime speaks fnexec/1"
    exit 1
  fi
  if ! fnexec_p_is_function handler; then
    fnexec_p_send_error INIT_ERROR Runtime.HandlerNotFound "the script defines no shell function 'handler'"
    exit 1
  fi
  if fnexec_p_is_function init; then
    init 8<&- 9>&-
    fnexec_p_status=$?
    if [ "$fnexec_p_status" -ne 0 ]; then
      fnexec_p_send_error INIT_ERROR "${FNEXEC_ERROR_TYPE:-InitError}" \
        "${FNEXEC_ERROR_MESSAGE:-init returned status $fnexec_p_status}"
      exit 1
    fi
  fi
  printf 'READY fnexec/1\n' >&9
  while IFS= read -r fnexec_p_line <&8; do
    # EVENT <id> <deadline_ms> <len>
    fnexec_p_rest=${fnexec_p_line#EVENT }
    [ "$fnexec_p_rest" != "$fnexec_p_line" ] || fnexec_p_protocol_error "expected an EVENT header"
    fnexec_p_id=${fnexec_p_rest%% *}
    fnexec_p_rest=${fnexec_p_rest#* }
    fnexec_p_deadline=${fnexec_p_rest%% *}
    fnexec_p_len=${fnexec_p_rest#* }
    case $fnexec_p_id in
      '' | *[!A-Za-z0-9._-]*) fnexec_p_protocol_error "bad event id in '$fnexec_p_line'" ;;
    esac
    fnexec_p_is_number "$fnexec_p_deadline" && fnexec_p_is_number "$fnexec_p_len" ||
      fnexec_p_protocol_error "bad number in '$fnexec_p_line'"
    fnexec_p_read_exact "$fnexec_p_len" "$fnexec_p_tmp/event"
    IFS= read -r fnexec_p_nl <&8 && [ -z "$fnexec_p_nl" ] ||
      fnexec_p_protocol_error "no newline after the payload of event $fnexec_p_id"

    FNEXEC_EVENT_ID=$fnexec_p_id
    FNEXEC_DEADLINE_MS=$fnexec_p_deadline
    export FNEXEC_EVENT_ID FNEXEC_DEADLINE_MS
    unset FNEXEC_ERROR_TYPE FNEXEC_ERROR_MESSAGE
    handler <"$fnexec_p_tmp/event" >"$fnexec_p_tmp/result" 8<&- 9>&-
    fnexec_p_status=$?
    if [ "$fnexec_p_status" -eq 0 ]; then
      fnexec_p_send_file "OK $fnexec_p_id" "$fnexec_p_tmp/result"
    else
      fnexec_p_send_error "ERROR $fnexec_p_id" "${FNEXEC_ERROR_TYPE:-HandlerError}" \
        "${FNEXEC_ERROR_MESSAGE:-handler returned status $fnexec_p_status}"
    fi
  done
  exit 0
}

fnexec_p_serve
