"""Instructions per un-pipelined publish, counted by callgrind: the steadiest figure of
the request path on a shared machine (seconds swing between runs; instructions do not).

    .venv/bin/python bench/instructions.py                      # rawsse and the sketch
    .venv/bin/python bench/instructions.py --servers rawsse --publishes 1000,3000

For each server it runs the server under `valgrind --tool=callgrind` twice: each run opens
SUBSCRIBERS streams, each on a topic of its own, then publishes N events one request at a
time on one keep-alive connection (the next sent once the last is answered, as ordinary
HTTP clients do), each to one subscriber, reads every event, and stops the server. The
difference of the two runs' totals, divided by the difference of their N, is what one
publish costs end to end — wake-up, read, parse, route, check, number, history, encode,
the write to its subscriber, the answer — without the start, the streams' opening or
the stop, which both runs share. The load client runs outside valgrind. With workers
(`rawsse-2workers`) every process is counted: the figure is what the server as a whole
spends on one publish, its worker's and the others'.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import answers, free_port, publish_one, read_head, stop_process  # noqa: E402

PYTHON = sys.executable
SUBSCRIBERS = 100
START_TIMEOUT = 300.0
"""Seconds a server may take to start under valgrind (about 50 times slower)."""

SERVERS = {
    "rawsse": lambda port: [PYTHON, "-m", "rawsse", "serve", "--port", str(port), "--log-level", "warning"],
    "rawsse-2workers": lambda port: [
        *[PYTHON, "-m", "rawsse", "serve", "--port", str(port), "--log-level", "warning"],
        *["--workers", "2"],
    ],
    "handoff-sketch": lambda port: [PYTHON, str(ROOT / "bench" / "peers" / "handoff.py"), str(port)],
}


def run_once(server: str, publishes: int, workdir: Path) -> int:
    """Total instructions of one run of `server` that publishes `publishes` events."""
    port = free_port()
    out = workdir / f"{server}-{publishes}.out"
    # Every process of the server is counted (the workers are forked, the supervisor's
    # helpers exec'd): one file each, summed; what both runs share cancels out.
    trace = ["--trace-children=yes", f"--callgrind-out-file={out}.%p"]
    command = ["valgrind", "--tool=callgrind", *trace, *SERVERS[server](port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start under valgrind")
            time.sleep(0.5)
        streams = []
        for n in range(SUBSCRIBERS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"GET /events?topic=t{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            read_head(sock)
            streams.append(sock)
        publisher = socket.create_connection(("127.0.0.1", port))
        for n in range(publishes):
            publish_one(publisher, f"t{n % SUBSCRIBERS}", n)
        for n, sock in enumerate(streams):  # every event arrived
            expected = len(range(n, publishes, SUBSCRIBERS))
            seen = 0
            buffer = b""
            sock.settimeout(60)
            while seen < expected:
                buffer += sock.recv(65536)
                seen = buffer.count(b"data: event-")
        publisher.close()
        for sock in streams:
            sock.close()
    finally:
        stop_process(process, 120, signal.SIGINT)
    total = 0
    for part in out.parent.glob(f"{out.name}.*"):
        text = part.read_text()
        totals = re.findall(r"^summary: (\d+)", text, re.M) or re.findall(r"^totals: (\d+)", text, re.M)
        total += int(totals[-1]) if totals else 0
    return total


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--servers", default="rawsse,handoff-sketch", help=f"of: {', '.join(SERVERS)}")
    parser.add_argument("--publishes", default="500,2500", help="the two runs' publish counts")
    parser.add_argument("--keep", help="a folder to keep callgrind's files in, for callgrind_annotate")
    args = parser.parse_args()
    low, high = (int(n) for n in args.publishes.split(","))
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.keep or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        for server in args.servers.split(","):
            first = run_once(server, low, workdir)
            second = run_once(server, high, workdir)
            per_publish = (second - first) / (high - low)
            print(f"{server:<16} {per_publish:>12,.0f} instructions per un-pipelined publish", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
