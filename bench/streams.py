"""The reactor benchmarks: memory per idle stream, and the cost of one broadcast per
subscriber against a bare os.write loop over the same sockets, in the same run.

    .venv/bin/python bench/streams.py idle --streams 15000
    .venv/bin/python bench/streams.py broadcast --streams 10000 --rounds 20
    .venv/bin/python bench/streams.py broadcast --streams 10000 --rounds 20 --transport ws
    .venv/bin/python bench/streams.py all --json bench/results/streams.json

`idle` runs `rawsse serve` as a separate process and reads its resident memory (VmRSS)
before and after the readers connect. `broadcast` embeds the server in this process so it
can time each fan-out pass from publish to completion, and then time `os.write` of the
same bytes to the same file descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import answers, free_port, tcp_kernel_memory
from readers import Readers

from rawsse.config import Config
from rawsse.core.slots import SlotState
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.server import Server


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def open_streams_of(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("rawsse_streams_open "):
                return int(line.split()[1])
    return 0


def bench_idle(streams: int, processes: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", str(port), "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: answers(port), 30, "server start")
        # One stream first, so lazily built state (the group, the poller) is in the baseline.
        warm = Readers(port, "/events?topic=idle", 1, 1)
        warm.wait_ready()
        wait_until(lambda: open_streams_of(port) == 1, 30, "warm-up stream")
        before = rss_bytes(server.pid)
        pages_before, slab_before = tcp_kernel_memory()
        readers = Readers(port, "/events?topic=idle", streams, processes)
        readers.wait_ready()
        wait_until(lambda: open_streams_of(port) == streams + 1, 120, "all streams open")
        time.sleep(2.5)  # the idle state: a sweep or two after the burst (see rawsse/reactor/allocator.py)
        after = rss_bytes(server.pid)
        pages_after, slab_after = tcp_kernel_memory()
        readers.stop()
        warm.stop()
    finally:
        server.terminate()
        server.wait(30)
    return {
        "streams": streams,
        "rss_before": before,
        "rss_after": after,
        "user_bytes_per_stream": (after - before) / streams,
        # Kernel figures cover both ends of each loopback connection (reader and server).
        "kernel_tcp_buffer_bytes_per_stream": (pages_after - pages_before)
        * os.sysconf("SC_PAGE_SIZE")
        / streams,
        "kernel_tcp_socket_bytes_per_stream": (slab_after - slab_before) / streams
        if slab_before >= 0
        else None,
    }


def bench_broadcast(
    streams: int, rounds: int, size: int, processes: int, transport: str = "sse"
) -> dict[str, Any]:
    import uvloop

    result: dict[str, Any] = {}

    async def main() -> None:
        server = Server(Config(port=0, log_level="warning", heartbeat=3600))
        await server.start()
        streams_ = server.streams
        assert isinstance(streams_.backend, FdBackend), "the broadcast bench measures the epoll reactor"
        websocket = transport == "ws"
        path = "/ws?topic=bench" if websocket else "/events?topic=bench"
        readers = Readers(server.port, path, streams, processes, websocket)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, readers.wait_ready)
        while server.metrics.streams_open < streams:
            await asyncio.sleep(0.05)
        state = server.streams.table.state
        fds = [fd for fd in range(len(state)) if state[fd] == SlotState.OPEN]
        assert len(fds) == streams
        payload = "x" * size
        ours: list[float] = []
        bare: list[float] = []

        async def time_rawsse() -> None:
            started = time.perf_counter()
            server.publish("bench", payload)
            await streams_.drain(60)
            ours.append(time.perf_counter() - started)

        def time_bare(data: bytes) -> None:
            started = time.perf_counter()
            write = os.write
            for fd in fds:
                write(fd, data)
            bare.append(time.perf_counter() - started)

        await time_rawsse()  # warm-up round, also gives us the encoded event
        event = server.hub.history.since({"bench": 0}, 10**9)[0][-1]
        data = event.frame if websocket else event.wire
        time_bare(data)
        ours.clear()
        bare.clear()
        for n in range(rounds):
            # Alternate which goes first: the readers are busiest right after a round.
            for first in (time_rawsse, time_bare) if n % 2 else (time_bare, time_rawsse):
                await asyncio.sleep(0.3)  # the readers drain the previous round
                if first is time_bare:
                    time_bare(data)
                else:
                    await time_rawsse()
        received = await loop.run_in_executor(None, readers.stop)
        await server.stop()
        ours_us = statistics.median(ours) / streams * 1e6
        bare_us = statistics.median(bare) / streams * 1e6
        result.update(
            transport=transport,
            streams=streams,
            rounds=rounds,
            event_bytes=len(data),
            rawsse_us_per_subscriber=ours_us,
            bare_write_us_per_subscriber=bare_us,
            ratio=ours_us / bare_us,
            bytes_received=received,
        )

    uvloop.run(main())
    return result


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["idle", "broadcast", "all"])
    parser.add_argument("--streams", type=int, default=0, help="default: 15000 idle, 10000 broadcast")
    parser.add_argument("--rounds", type=int, default=20, help="broadcast rounds (the first is warm-up)")
    parser.add_argument("--size", type=int, default=128, help="event data bytes")
    parser.add_argument("--processes", type=int, default=2, help="reader processes")
    parser.add_argument(
        "--transport", choices=["sse", "ws"], default="sse", help="broadcast over /events or /ws"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    if args.what in ("idle", "all"):
        idle = results["idle"] = bench_idle(args.streams or 15000, args.processes)
        per_stream = idle["user_bytes_per_stream"]
        buffers = idle["kernel_tcp_buffer_bytes_per_stream"]
        sockets = idle["kernel_tcp_socket_bytes_per_stream"]
        print(
            f"idle: {idle['streams']} streams, {per_stream:.0f} B of server RSS per stream; "
            f"kernel, both ends: TCP buffers {buffers:.0f} B (sockstat), "
            f"TCP socket objects {sockets if sockets is None else round(sockets)} B (slabinfo)"
        )
    if args.what in ("broadcast", "all"):
        cast = results["broadcast"] = bench_broadcast(
            args.streams or 10000, args.rounds, args.size, args.processes, args.transport
        )
        print(
            f"broadcast: {cast['streams']} {cast['transport']} readers, {cast['event_bytes']} B event: "
            f"rawsse {cast['rawsse_us_per_subscriber']:.2f} us/subscriber, "
            f"bare os.write {cast['bare_write_us_per_subscriber']:.2f} us/subscriber, "
            f"ratio {cast['ratio']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
