"""What one publish costs each worker of `--workers N`, and the publish rate the workers
would reach on a machine with a core for each: the method for the cores this machine
lacks.

    .venv/bin/python bench/workers_model.py                     # 2 workers, 20,000 publishes a phase
    .venv/bin/python bench/workers_model.py --publishes 8000 --cores 8,16,32

Method. A server of one process and one of 2 workers are started in turn. Each gets
STREAMS streams, one topic each (a stream's `X-Rawsse-Worker` header says which worker
holds it), and one keep-alive connection that publishes one request at a time, as an
ordinary HTTP client does; the kernel hands that connection to one worker, the
publishing one. Each process's CPU time (user and system, from /proc) is read around
each phase:

- phase A: every event to a stream on the *other* worker. The publishing worker pays
  P (read, parse, check, number, append to the shared log, wake the others, answer);
  the other pays R + W (wake-up, read the record, encode, history, and the write to
  its stream).
- phase B: every event to a stream on the publishing worker: P + W and R.

So P, R and W come from the two phases, and the one process's cost per publish (with its
write) S from the same publishes to a single process. The model, for N workers with a
core each, publishes and streams spread evenly: each event costs P + W + (N - 1) R in
all, each core carries 1/N of it, so the rate is N / (P + W + (N - 1) R) against 1 / S
for one process. The appends are serialized by the log's lock: its hold time, measured
in-process, caps the rate at 1 / hold whatever N. The load client needs cores of its
own, not counted here.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import answers, free_port, publish_one, read_head  # noqa: E402
from rawsse.broker.ring import SharedLog  # noqa: E402
from rawsse.core.publish import PublishItem  # noqa: E402

PYTHON = sys.executable
STREAMS = 64
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """The worker processes of supervisor `pid`."""
    found = [int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [n for n in found if b"rawsse" in Path(f"/proc/{n}/cmdline").read_bytes()]


def worker_events(port: int) -> dict[str, int]:
    """Events each worker's clients published, from /metrics (as of each worker's sweep)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    found = re.findall(rb'rawsse_events_published_total\{worker="(\d+)"\} (\d+)', text)
    return {worker.decode(): int(count) for worker, count in found}


def measure(workers: int, publishes: int) -> dict[str, float]:
    """CPU seconds per publish of each role, for a server of `workers` workers (0: one
    process)."""
    port = free_port()
    command = [PYTHON, "-m", "rawsse", "serve", "--port", str(port), "--log-level", "warning"]
    if workers:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        streams: dict[str, list[str]] = {}
        held = []
        for n in range(STREAMS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"GET /events?topic=t{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = read_head(sock)
            match = re.search(rb"X-Rawsse-Worker: (\d+)", head)
            streams.setdefault(match.group(1).decode() if match else "-", []).append(f"t{n}")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            held.append(sock)
        publisher = socket.create_connection(("127.0.0.1", port))
        for n in range(200):  # warm up, and learn which worker took the connection
            publish_one(publisher, "nobody", n)
        processes = children(server.pid) if workers else [server.pid]
        if not workers:
            before = cpu_seconds(server.pid)
            for n in range(publishes):
                publish_one(publisher, streams["-"][n % STREAMS], n)
            return {"S": (cpu_seconds(server.pid) - before) / publishes}
        time.sleep(1.2)  # every worker has swept its counters into the log
        counts = worker_events(port)
        own = max(counts, key=lambda worker: counts[worker])
        other = next(worker for worker in streams if worker != own)
        first, second = processes
        spent = {}
        for phase, targets in (("A", streams[other]), ("B", streams[own])):
            before = cpu_seconds(first), cpu_seconds(second)
            for n in range(publishes):
                publish_one(publisher, targets[n % len(targets)], n)
            spent[phase] = (cpu_seconds(first) - before[0], cpu_seconds(second) - before[1])
        # Which process publishes: the one that spent more in phase A (P against R + W).
        mine = 0 if spent["A"][0] > spent["A"][1] else 1
        figures = {}
        for phase, (a, b) in spent.items():
            figures[f"{phase} publishing"] = (a, b)[mine] / publishes
            figures[f"{phase} other"] = (a, b)[1 - mine] / publishes
        return figures
    finally:
        server.terminate()
        server.wait(30)


def lock_hold(appends: int = 20000) -> float:
    """Seconds one append of one event holds the log's lock, at most (the whole append,
    measured in one process: the lock is held for most of it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "log")
        SharedLog.create(path, 64 << 20, readers=2)
        log = SharedLog(path)
        log.join(0)
        log.join(1)
        item = [PublishItem(("t1",), "event-00000000-" + "x" * 100)]
        began = time.perf_counter()
        for _ in range(appends):
            appended = log.append(item, 1.0)
            log.advance(0, appended.end)
            log.advance(1, appended.end)
        held = (time.perf_counter() - began) / appends
        log.close()
    return held


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--publishes", type=int, default=20000, help="publishes per phase")
    parser.add_argument("--cores", default="2,4,8,16", help="worker counts to project to")
    args = parser.parse_args()
    single = measure(0, args.publishes)["S"]
    two = measure(2, args.publishes)
    p = two["A publishing"]
    r = two["B other"]
    w = ((two["B publishing"] - p) + (two["A other"] - r)) / 2
    hold = lock_hold()
    us = 1e6
    print(f"one process, per publish with its write (S):   {single * us:7.1f} us CPU")
    for name, value in two.items():
        print(f"2 workers, phase {name:<14}               {value * us:7.1f} us CPU")
    print(f"publishing worker without the write (P):        {p * us:7.1f} us")
    print(f"each other worker, no stream of its own (R):    {r * us:7.1f} us")
    print(f"the write to one stream (W):                    {w * us:7.1f} us")
    print(f"the log's lock, held per append:                {hold * us:7.1f} us (caps {1 / hold:,.0f}/s)")
    print("workers  CPU per event in all  publishes/s per 1 s of CPU  x one process")
    for cores in (int(n) for n in args.cores.split(",")):
        total = p + w + (cores - 1) * r
        rate = min(cores / total, 1 / hold)
        print(f"{cores:>7}  {total * us:17.1f} us  {rate:26,.0f}  {rate * single:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
