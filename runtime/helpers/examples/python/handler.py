"""Example fnexec function: echoes a JSON event with a count of the events this process has seen.

    fnexec run --lifecycle reuse IMAGE -- python3 /opt/fnexec/fnexec_runtime.py handler.handler

Test hooks (used by fnexec's own tests): {"raw": true} returns the event's bytes as they came,
{"count": true} the number of events this process has seen, {"remaining": true} the milliseconds
left before the deadline, {"raise": "message"} raises ValueError, {"print": "text"} prints to
stdout and writes to fd 1 (both are the log).
Non-JSON events (bytes) are echoed unchanged.
"""

import os

# Init: runs once per process, before READY. State here carries across events in `reuse`.
seen = 0
if os.environ.get("EXAMPLE_FAIL_INIT"):
    raise ImportError("EXAMPLE_FAIL_INIT is set")


def handler(event, context):
    global seen
    seen += 1
    if not isinstance(event, dict):
        return context.raw_event  # bytes, empty or non-JSON: echoed exactly
    if "print" in event:
        print(event["print"])
        os.write(1, b"fd1: %s\n" % event["print"].encode())  # below print(): also the log
    if "raise" in event:
        raise ValueError(event["raise"])
    if event.get("raw"):
        return context.raw_event
    if event.get("count"):
        return seen
    if event.get("remaining"):
        return context.get_remaining_time_in_millis()
    return {
        "event": event,
        "seen": seen,
        "pid": os.getpid(),
        "invocation_id": context.invocation_id,
        "function_name": context.function_name,
        # No deadline is known when run without fnexec/1 (lifecycle oneshot).
        "remaining_ms": context.get_remaining_time_in_millis() if context.deadline_ms is not None else None,
    }
