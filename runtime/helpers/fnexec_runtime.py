"""fnexec function runtime for Python (stdlib only): speaks the fnexec/1 frame protocol.

    python3 fnexec_runtime.py MODULE.HANDLER      (or: python3 -m fnexec_runtime MODULE.HANDLER)

imports MODULE (from the working directory or sys.path) and calls HANDLER(event, context) for
each event. Under `fnexec` with lifecycle fresh or reuse (FNEXEC_PROTOCOL=fnexec/1) it sends READY
after the import and answers EVENT frames until stdin closes; without FNEXEC_PROTOCOL (lifecycle
oneshot, or a shell) it runs the handler once on all of stdin and writes the result to stdout.

event: the payload parsed as JSON when it is valid UTF-8 JSON, None when empty, else bytes.
context: function_name, invocation_id, deadline_ms, raw_event, get_remaining_time_in_millis().
result: bytes as is, str as UTF-8, anything else as JSON. An exception becomes an ERROR frame
{"errorType", "errorMessage", "stackTrace"}; an exception during the import an INIT_ERROR, then
exit 1. print() and sys.stdout go to stderr, the function's log. See fnexec-protocol(7).
"""

import importlib
import json
import os
import sys
import time

PROTOCOL = "fnexec/1"
MAX_HEADER = 256
MAX_LENGTH = 1 << 40


class ProtocolError(Exception):
    pass


class Context:
    """What the handler knows about the current event besides its payload."""

    __slots__ = ("function_name", "invocation_id", "deadline_ms", "raw_event")

    def __init__(self, function_name, invocation_id, deadline_ms, raw_event):
        self.function_name = function_name
        self.invocation_id = invocation_id
        self.deadline_ms = deadline_ms  # unix epoch ms; None when no deadline is known (oneshot)
        self.raw_event = raw_event

    def get_remaining_time_in_millis(self):
        if self.deadline_ms is None:
            return float("inf")
        return max(0, self.deadline_ms - int(time.time() * 1000))


def decode_event(raw):
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return raw


def encode_result(result):
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    return json.dumps(result, separators=(",", ":")).encode("utf-8")


def error_body(exc, error_type=None):
    import traceback  # only on failures: it costs milliseconds and memory at every start
    # The function's frames only: not this runtime's, nor the import machinery's.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and not f.filename.startswith("<frozen")]
    return json.dumps({
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": [line.rstrip("\n") for line in traceback.format_list(frames)],
    }, separators=(",", ":")).encode("utf-8")


def _log_exception():
    import traceback
    traceback.print_exc()


def _flush_logs():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class Channel:
    """The private frame channel: dups of the original stdin/stdout; fd 1 becomes stderr, fd 0 /dev/null."""

    def __init__(self):
        sys.stdout.flush()
        in_fd = os.dup(0)   # os.dup gives non-inheritable fds: child processes never see the channel
        out_fd = os.dup(1)
        # The function's pipe ends are its own: blocking I/O on them cannot stall fnexec's side.
        os.set_blocking(in_fd, True)
        os.set_blocking(out_fd, True)
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        # Line-buffered, so that a print() reaches the log before the event's reply.
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stdin = open(0, "r", closefd=False)
        self.reader = open(in_fd, "rb", buffering=1 << 16)
        self.writer = open(out_fd, "wb", buffering=0)

    def send(self, header, payload=b"", trailer=b"\n"):
        _flush_logs()
        # One write for small frames; a large payload is written without a copy.
        if len(payload) <= 65536:
            self._write_all(header + payload + trailer)
        else:
            self._write_all(header)
            self._write_all(payload)
            self._write_all(trailer)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            view = view[self.writer.write(view):]

    def read_event(self):
        """(id, deadline_ms, payload), or None at end of input."""
        line = self.reader.readline(MAX_HEADER)
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise ProtocolError("event header %r has no newline within %d bytes" % (line[:80], MAX_HEADER))
        fields = line[:-1].decode("ascii", "replace").split(" ")
        if len(fields) != 4 or fields[0] != "EVENT":
            raise ProtocolError("expected 'EVENT <id> <deadline_ms> <len>', got %r" % line[:80])
        _, event_id, deadline, length = fields
        if not (_is_number(deadline) and _is_number(length)) or int(length) > MAX_LENGTH:
            raise ProtocolError("bad number in event header %r" % line[:80])
        length = int(length)
        payload = self.reader.read(length) if length else b""
        if len(payload) != length or self.reader.read(1) != b"\n":
            raise ProtocolError("event %s: input ended or no newline after %d payload bytes" % (event_id, length))
        return event_id, int(deadline), payload


def _is_number(text):
    return text.isdigit() and text.isascii() and (text == "0" or not text.startswith("0"))


def load_handler(spec):
    """'pkg.module.handler' → the function; the working directory is importable."""
    module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError("handler %r is not MODULE.FUNCTION" % spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise AttributeError("module %r has no function %r" % (module_name, attr))
    return handler


def serve(handler):
    """For a script that imports this module: answers events with handler (see the module doc)."""
    _start(lambda: handler)


def main(argv):
    if len(argv) != 2:
        print("usage: fnexec_runtime.py MODULE.HANDLER", file=sys.stderr)
        return 2
    _start(lambda: load_handler(argv[1]))
    return 0


def _start(load):
    protocol = os.environ.get("FNEXEC_PROTOCOL", "")
    function_name = os.environ.get("FNEXEC_FUNCTION_NAME", "")
    # Take the channel before the import, so that output during init goes to the log as well.
    channel = Channel()
    try:
        handler = load()
    except Exception as e:
        _log_exception()
        if not protocol:
            sys.exit(1)
        _fail_init(channel, error_body(e))
    if not protocol:
        return _serve_once(channel, handler, function_name)
    if protocol != PROTOCOL:
        message = "FNEXEC_PROTOCOL is %r, this runtime speaks %s" % (protocol, PROTOCOL)
        _fail_init(channel, json.dumps({"errorType": "Runtime.ProtocolError", "errorMessage": message}, separators=(",", ":")).encode())
    channel.send(b"READY " + PROTOCOL.encode() + b"\n", trailer=b"")
    while True:
        try:
            event = channel.read_event()
        except ProtocolError as e:
            print("fnexec_runtime.py: protocol error from fnexec: %s" % e, file=sys.stderr)
            sys.exit(2)
        if event is None:
            return
        event_id, deadline_ms, raw = event
        kind, body = _handle(handler, raw, Context(function_name, event_id, deadline_ms, raw))
        channel.send(kind + b" " + event_id.encode() + b" %d\n" % len(body), body)


def _handle(handler, raw, context):
    """(b"OK", result bytes) or (b"ERROR", error json)."""
    try:
        result = handler(decode_event(raw), context)
        if hasattr(result, "__await__"):
            import asyncio  # only for async handlers: the import costs milliseconds
            result = asyncio.run(_await(result))
    except Exception as e:
        _log_exception()
        return b"ERROR", error_body(e)
    try:
        return b"OK", encode_result(result)
    except Exception as e:
        return b"ERROR", error_body(e, "Runtime.MarshalError")


async def _await(awaitable):
    return await awaitable


def _serve_once(channel, handler, function_name):
    raw = channel.reader.read()
    kind, body = _handle(handler, raw, Context(function_name, "oneshot", None, raw))
    if kind == b"ERROR":
        sys.stderr.write(body.decode() + "\n")
        sys.exit(1)
    channel.send(b"", body, trailer=b"")


def _fail_init(channel, body):
    channel.send(b"INIT_ERROR %d\n" % len(body), body)
    sys.exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
