"""How long /healthz waits while a wave of refused stream requests arrives.

    .venv/bin/python bench/refusal_wave.py                       # this checkout's rawsse
    .venv/bin/python bench/refusal_wave.py --python ../other/.venv/bin/python

The server runs with a token secret, so a stream request without a token is refused
(401). WAVE connections are opened first, then each sends one such request, in one
burst. Meanwhile a probe in a process of its own (so the wave's client cannot delay it)
asks `GET /healthz` on a connection of its own, one request at a time, as fast as it is
answered, and times each answer. Printed: the wave's length, how many of its requests
were refused, and the probe's answer times (p50, p99, max) of the requests it sent
during the wave. Loopback only; it stops by itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import answers, free_port  # noqa: E402

SECRET = "a-secret-of-at-least-thirty-two-bytes!"
REQUEST = b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PROBE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def probe(port: int, stop: multiprocessing.connection.Connection) -> None:
    """In its own process: time /healthz answers until told to stop, then send them back."""
    sock = socket.create_connection(("127.0.0.1", port))
    times: list[tuple[float, float]] = []
    while not stop.poll():
        started = time.perf_counter()
        sock.sendall(PROBE)
        answer = b""
        while b"ok\n" not in answer:
            answer += sock.recv(4096)
        times.append((started, time.perf_counter() - started))
        if stop.poll():
            break
    stop.recv()
    stop.send(times)
    sock.close()


def wave(port: int, count: int) -> tuple[float, float, int]:
    """Connect `count` sockets (the server takes them, idle), then send every one its
    request in one burst and read the answers: (when the burst began, when the last
    answer came — perf_counter, one clock for every process of this machine — and how
    many were refused)."""
    sockets = []
    for n in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.1.{2 + n % 200}", 0))
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    started = time.perf_counter()
    for sock in sockets:
        sock.sendall(REQUEST)
    refused = 0
    for sock in sockets:
        sock.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        refused += head.startswith(b"HTTP/1.1 401")
    ended = time.perf_counter()
    for sock in sockets:
        sock.close()
    return started, ended, refused


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose rawsse is run")
    parser.add_argument("--wave", type=int, default=2000, help="refused stream requests at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for round_number in range(args.rounds):
        port = free_port()
        command = [args.python, "-m", "rawsse", "serve", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(
            command, env={"RAWSSE_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"}, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 30
            while not answers(port):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
            ours, theirs = multiprocessing.Pipe()
            prober = multiprocessing.Process(target=probe, args=(port, theirs))
            prober.start()
            time.sleep(0.3)  # the probe's own pace before the wave
            began, ended, count = wave(port, args.wave)
            ours.send("stop")
            probed: list[tuple[float, float]] = ours.recv()
            prober.join(30)
        finally:
            server.terminate()
            server.wait(30)
        times = sorted(took for sent, took in probed if began <= sent <= ended)
        p99 = times[max(int(len(times) * 0.99) - 1, 0)]
        print(
            f"round {round_number + 1}: {count} of {args.wave} refused in {(ended - began) * 1e3:.0f} ms; "
            f"/healthz answered {len(times)} times meanwhile, p50 {statistics.median(times) * 1e3:.3f} ms, "
            f"p99 {p99 * 1e3:.2f} ms, max {times[-1] * 1e3:.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
