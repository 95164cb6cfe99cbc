# An ordinary Lambda handler; the events ask it to misbehave in the ways fnexec must survive.
import os
import sys
import time

count = 0


def handler(event, context):
    global count
    count += 1
    action = event.get("action") if isinstance(event, dict) else None
    print("handling", context.aws_request_id, "count", count, flush=True)
    if action == "fail":
        raise ValueError("asked to fail")
    if action == "exit":
        os._exit(3)
    if action == "sleep":
        time.sleep(60)
    if action == "big":
        return "x" * (7 << 20)
    if action == "env":
        return {k: os.environ.get(k) for k in ("_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME",
                                               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION", "TZ",
                                               "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_VERSION")} | {
                   "arn": context.invoked_function_arn, "cwd": os.getcwd()}
    if action == "context":
        return {"client_context": context.client_context, "identity": context.identity,
                "trace_id": os.environ.get("_X_AMZN_TRACE_ID")}
    return {"count": count, "echo": event, "remaining_ms": context.get_remaining_time_in_millis()}
