#!/usr/bin/env python3
"""Round trip of one small event through each runtime helper (runtime/helpers/) as a plain host
process over pipes, fnexec/1 framing, one event at a time as a `reuse` sandbox gets them; the peer
is the floor: a Python process echoing lines over the same pipes, no framing. The driver is Python,
so every figure includes its ~10-20 us. Run by hand:

    bench/helpers-roundtrip.py [EVENTS=2000] [C_EXAMPLE=build/runtime/helpers/fnexec-example-c-echo]
"""
import os
import statistics
import subprocess
import sys
import time

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
helpers = os.path.join(root, "runtime", "helpers")
events = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
c_example = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "build", "runtime", "helpers", "fnexec-example-c-echo")

FLOOR = "import sys\nfor line in sys.stdin.buffer:\n    sys.stdout.buffer.write(line); sys.stdout.buffer.flush()\n"
RUNTIMES = [
    ("floor: python line echo", ["python3", "-c", FLOOR], {}, False),
    ("python helper", ["python3", os.path.join(helpers, "fnexec_runtime.py"), "handler.handler"],
     {"PYTHONPATH": os.path.join(helpers, "examples", "python")}, True),
    ("node helper", ["node", os.path.join(helpers, "fnexec_runtime.js"), os.path.join(helpers, "examples", "node", "index") + ".handler"], {}, True),
    ("c helper", [c_example], {}, True),
    ("bash helper", ["bash", os.path.join(helpers, "examples", "shell", "handler.sh")],
     {"FNEXEC_RUNTIME_SH": os.path.join(helpers, "fnexec_runtime.sh")}, True),
]


def read_frame(out):
    header = out.readline()
    n = int(header.split()[-1])
    body = b""
    while len(body) < n + 1:  # unbuffered: a read may return part of what was asked
        chunk = out.read(n + 1 - len(body))
        assert chunk, "end of output inside a frame"
        body += chunk
    return header, body[:-1]


def measure(argv, env, framed, n):
    env = {**os.environ, **env, **({"FNEXEC_PROTOCOL": "fnexec/1"} if framed else {})}
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
    out = p.stdout
    if framed:
        assert out.readline() == b"READY fnexec/1\n"
    payload = b'{"k": "v"}'
    samples = []
    for i in range(n):
        deadline = int(time.time() * 1000) + 60000
        msg = b"EVENT %d %d %d\n%s\n" % (i, deadline, len(payload), payload) if framed else payload + b"\n"
        t = time.perf_counter_ns()
        p.stdin.write(msg)
        if framed:
            header, _ = read_frame(out)
            assert header.startswith(b"OK "), header
        else:
            out.readline()
        samples.append((time.perf_counter_ns() - t) / 1000)
    p.stdin.close()
    p.wait()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


print(f"{'runtime':28} {'p50 us':>8} {'p99 us':>8}   ({events} events of 10 bytes)")
for name, argv, env, framed in RUNTIMES:
    try:
        n = events if "bash" not in name else max(events // 10, 50)  # bash forks per event
        p50, p99 = measure(argv, env, framed, n)
        print(f"{name:28} {p50:8.0f} {p99:8.0f}")
    except (FileNotFoundError, AssertionError) as e:
        print(f"{name:28} skipped: {e}")
