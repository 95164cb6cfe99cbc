# Runtimes that break the Lambda Runtime API on purpose, one way per _HANDLER, with raw sockets so
# nothing fixes their bytes on the way. fnexec must answer each with a clear error, retire the
# sandbox and leave nothing behind.
import os
import socket
import time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")


def conn():
    return socket.create_connection((HOST, int(PORT)))


def request(s, method, path, body=b"", extra=""):
    s.sendall(f"{method} /2018-06-01/runtime/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)


def read_reply(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)
    headers = dict(l.decode().split(": ", 1) for l in head.split(b"\r\n")[1:])
    return head.split(b"\r\n")[0].decode(), headers, rest


mode = os.environ["_HANDLER"]
if mode == "never":  # never asks for an event
    time.sleep(3600)
if mode == "flood":  # more connections than a runtime needs, each with a header that never ends
    socks = []
    for _ in range(50):
        try:
            s = conn()
            s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n" + b"X-Flood: " + b"a" * 8192)
            socks.append(s)
        except OSError:
            pass
    time.sleep(3600)
s = conn()
if mode == "garbage":  # not HTTP at all
    s.sendall(b"\x16\x03\x01 hello, this is not HTTP\r\n\r\n")
    time.sleep(3600)
if mode == "init-error":
    request(s, "POST", "init/error", b'{"errorType":"Runtime.ImportModuleError","errorMessage":"no module app"}')
    print(read_reply(s)[0], flush=True)
    time.sleep(3600)
request(s, "GET", "invocation/next")
status, headers, event = read_reply(s)
rid = headers["Lambda-Runtime-Aws-Request-Id"]
if mode == "wrong-id":
    request(s, "POST", "invocation/00000000-0000-0000-0000-000000000000/response", b'"x"')
    print("wrong id:", read_reply(s)[0], flush=True)
elif mode == "double":  # answers twice in one write
    one = f"POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\nContent-Length: 7\r\n\r\n"
    s.sendall((one + '"first"' + one + '"again"').encode())
    print("double:", read_reply(s)[0], flush=True)
elif mode == "big-length":  # a Content-Length over the limit; the body is never sent
    s.sendall(f"POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\nContent-Length: {7 << 20}\r\n\r\n".encode())
    print("big-length:", read_reply(s)[0], flush=True)
elif mode == "expect-continue":  # not hostile: an HTTP client that waits for 100 Continue
    s.sendall(f"POST /2018-06-01/runtime/invocation/{rid}/response HTTP/1.1\r\nContent-Length: 4\r\n"
              "Expect: 100-continue\r\n\r\n".encode())
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += s.recv(1)
    if not interim.startswith(b"HTTP/1.1 100 "):
        os._exit(9)
    s.sendall(b'"ok"')
    print("expect-continue:", read_reply(s)[0], flush=True)
elif mode == "die":  # dies mid-event
    os._exit(7)
elif mode == "unknown-path":
    request(s, "GET", "invocation/../../2020-01-01/extension/register")
    print("unknown path:", read_reply(s)[0], flush=True)
time.sleep(3600)
