# A Lambda custom runtime in stdlib Python, written as AWS documents custom runtimes: it finds the
# Runtime API in AWS_LAMBDA_RUNTIME_API and the handler in _HANDLER, and speaks HTTP with urllib
# (a new connection per request). fnexec's tests run it unmodified inside a sandbox.
import importlib
import json
import os
import sys
import time
import traceback
import urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"


def post(path, body, headers=None):
    req = urllib.request.Request(API + path, data=body, method="POST", headers=headers or {})
    with urllib.request.urlopen(req) as r:
        r.read()


def error_doc(e):
    return json.dumps({"errorType": type(e).__name__, "errorMessage": str(e),
                       "stackTrace": traceback.format_tb(e.__traceback__)}).encode()


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers["Lambda-Runtime-Invoked-Function-Arn"]
        self.deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        # JSON when the caller gave them, as Lambda sends them; absent otherwise.
        self.client_context = json.loads(headers.get("Lambda-Runtime-Client-Context") or "null")
        self.identity = json.loads(headers.get("Lambda-Runtime-Cognito-Identity") or "null")

    def get_remaining_time_in_millis(self):
        return self.deadline_ms - int(time.time() * 1000)


def main():
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    module, _, name = os.environ["_HANDLER"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module), name)
    except Exception as e:
        post("/init/error", error_doc(e), {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    while True:
        with urllib.request.urlopen(API + "/invocation/next") as r:
            event = json.loads(r.read() or b"null")
            ctx = Context(r.headers)
            os.environ["_X_AMZN_TRACE_ID"] = r.headers.get("Lambda-Runtime-Trace-Id", "")
        try:
            result = json.dumps(handler(event, ctx)).encode()
        except Exception as e:
            post("/invocation/" + ctx.aws_request_id + "/error", error_doc(e),
                 {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        post("/invocation/" + ctx.aws_request_id + "/response", result)


main()
