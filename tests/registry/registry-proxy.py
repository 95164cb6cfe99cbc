#!/usr/bin/env python3
"""An HTTP front for a test registry on 127.0.0.1: passes requests through to UPSTREAM, and can
play a bearer token server or inject one kind of fault, so the suite tests fnexec against a real
registry (Debian's docker-registry) with the failures real networks and registries have.

usage: registry-proxy.py UPSTREAM_PORT PORT_FILE MODE
  pass            pass everything through
  bearer          require "Bearer <token>" (401 + WWW-Authenticate Bearer realm=.../token otherwise);
                  GET /token checks basic auth user:secret and issues the token
  reset-once      the first blob GET is cut after 100 kB (connection closed); the retry resumes
  truncate-once   the first blob GET sends only half its Content-Length, then closes
  status-once=N   the first blob GET and the first manifest GET answer status N (429, 503)
  flip-byte       every blob GET has one byte of its body changed (a lying registry)
  big-manifest    manifests are answered with 5 MiB of JSON
  redirect-loop   blob GETs redirect to themselves
  wrong-type      manifests are answered with Content-Type and mediaType text/html
  schema1         manifests are answered as a signed Docker schema 1 manifest
  slow            blob bodies are sent in 64 kB pieces 50 ms apart (a pull that takes seconds)
  hang-once       the first large blob GET sends 100 kB, then nothing, without closing (until 120 s)
With PROXY_TLS_CERT and PROXY_TLS_KEY in the environment it speaks TLS (upstream stays plain).
Writes the port it listens on to PORT_FILE. Counts requests to blobs in PORT_FILE.log.
"""
import base64
import http.client
import http.server
import os
import ssl
import socketserver
import sys
import threading
import time

UPSTREAM = int(sys.argv[1])
PORT_FILE = sys.argv[2]
MODE = sys.argv[3]
TOKEN = "test-token-7f3a"
once_lock = threading.Lock()
fired = set()


def once(name):
    with once_lock:
        if name in fired:
            return False
        fired.add(name)
        return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_plain(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        port = self.server.server_address[1]
        is_blob = "/blobs/" in self.path
        is_manifest = "/manifests/" in self.path
        if is_blob:
            with open(PORT_FILE + ".log", "a") as f:
                f.write(self.path + " " + self.headers.get("Range", "-") + "\n")
        if MODE == "bearer":
            if self.path.startswith("/token"):
                auth = self.headers.get("Authorization", "")
                if auth != "Basic " + base64.b64encode(b"user:secret").decode():
                    return self.send_plain(401, b'{"details":"bad credentials"}')
                return self.send_plain(200, ('{"token":"%s","expires_in":300}' % TOKEN).encode(),
                                       [("Content-Type", "application/json")])
            if self.headers.get("Authorization", "") != "Bearer " + TOKEN:
                challenge = 'Bearer realm="http://127.0.0.1:%d/token",service="test-registry"' % port
                if self.path != "/v2/":
                    challenge += ',scope="repository:%s:pull"' % self.path.split("/")[2]
                return self.send_plain(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                                       [("WWW-Authenticate", challenge), ("Content-Type", "application/json")])
        if MODE.startswith("status-once=") and (is_blob or is_manifest) and once(self.path.split("/")[-2]):
            return self.send_plain(int(MODE.split("=")[1]), b"try later", [("Retry-After", "1")])
        if MODE == "redirect-loop" and is_blob:
            return self.send_plain(307, b"", [("Location", self.path)])
        if MODE == "big-manifest" and is_manifest:
            body = b'{"schemaVersion":2,"padding":"' + b"x" * (5 << 20) + b'"}'
            return self.send_plain(200, body, [("Content-Type", "application/vnd.oci.image.manifest.v1+json")])
        if MODE == "wrong-type" and is_manifest:
            return self.send_plain(200, b'{"schemaVersion":2,"mediaType":"text/html"}', [("Content-Type", "text/html")])
        if MODE == "schema1" and is_manifest:
            body = b'{"schemaVersion":1,"name":"test/bb","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}'
            return self.send_plain(200, body, [("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")])
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        conn.request(self.command, self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        if is_blob and resp.status in (200, 206) and self.command == "GET":
            if MODE == "flip-byte" and body:
                body = bytearray(body)
                body[len(body) // 2] ^= 0xFF
                body = bytes(body)
            if MODE == "hang-once" and len(body) > 200000 and once("hang"):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:100000])
                self.wfile.flush()
                time.sleep(120)
                self.close_connection = True
                return
            if MODE == "slow":
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for at in range(0, len(body), 65536):
                    self.wfile.write(body[at:at + 65536])
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            if MODE in ("reset-once", "truncate-once") and len(body) > 200000 and once("cut"):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: 100000 if MODE == "reset-once" else len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
if os.environ.get("PROXY_TLS_CERT"):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(os.environ["PROXY_TLS_CERT"], os.environ["PROXY_TLS_KEY"])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
