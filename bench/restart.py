"""A restart of a server with a durable log, measured end to end (issue 22's target).

    .venv/bin/python bench/restart.py --events 1000000 --streams 10000
    .venv/bin/python bench/restart.py --events 1000000,10000000 --streams 0   # memory only

For each log size: the log is filled with that many events (128 B of data each, over the
streams' topics, written with the store directly), then

1. `rawsse serve --data-dir` starts; one client process opens `--streams` SSE streams,
   one per user topic (`u<N>@bench`), and every stream receives an event published to its
   topic (E1, in batches of 500 per POST);
2. the clients go away; E2 is published to every topic (they miss it);
3. the server is stopped (SIGTERM, a deploy) and started again: the time from the start
   to "listening on" is the restart time;
4. every client reconnects with its Last-Event-ID (E1's id) and must receive E2 first,
   exactly, with no reset (memory history holds the newest 1 MiB of the log after a
   restart: the older E2s are replayed from disk); then E3, published live, reaches all.

It prints the restart time, how long the resumes took, the replays the log served, the
resets, and the server's resident memory two seconds after listening (with `--streams 0`
only that: RSS against the log's size). Exit status 1 if anything was lost or reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RAWSSE, free_port, rss_bytes, stop_process  # noqa: E402
from rawsse.core.ids import new_epoch  # noqa: E402
from rawsse.core.publish import PublishItem  # noqa: E402
from rawsse.store.directory import DataDirectory  # noqa: E402
from rawsse.store.events import EventStore, Fsync, StoredEvent  # noqa: E402

DATA = "x" * 128
BATCH = 500
"""Events per publish request (a JSON array) when every topic gets one."""
OPEN_WINDOW = 500
"""Streams being opened at once by the client."""


def topic(n: int) -> str:
    return f"u{n}@bench"


def fill(directory: str, events: int, topics: int) -> float:
    """Write `events` events round-robin over `topics` topics; returns the seconds it took."""
    began = time.monotonic()
    held = DataDirectory(directory)
    store = EventStore(held.database, Fsync.NEVER, new_epoch())
    now = time.time()
    chunk = 100_000
    for first in range(1, events + 1, chunk):
        last = min(first + chunk, events + 1)
        store.append(
            [StoredEvent(s, PublishItem((topic(s % topics),), DATA), now) for s in range(first, last)]
        )
        store.commit()
    store.close()
    held.release()
    return time.monotonic() - began


class Server:
    def __init__(self, data_dir: str, port: int) -> None:
        self.port = port
        began = time.monotonic()
        self.process = subprocess.Popen(
            [*RAWSSE, "serve", "--port", str(port), "--data-dir", data_dir, "--heartbeat", "30",
             "--no-dashboard"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stderr = self.process.stderr
        assert stderr is not None
        for line in stderr:
            if "listening on" in line:
                break
        else:
            self.stop()
            raise RuntimeError("the server did not start")
        self.started_in = time.monotonic() - began
        # Read on, or a full pipe would stop the server at its next log line.
        threading.Thread(target=stderr.read, daemon=True).start()

    def rss_mb(self) -> float:
        return rss_bytes(self.process.pid) / 1024 / 1024

    def stop(self) -> None:
        stop_process(self.process, 60)


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    body = await reader.readexactly(length)
    writer.close()
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"refused: {head[:80]!r} {body[:200]!r}")
    return body


async def publish_to_all(port: int, topics: int, label: str) -> list[str]:
    """One event to every topic, in batches; returns the ids in topic order."""
    ids: list[str] = []
    for first in range(0, topics, BATCH):
        items = [
            {"topic": topic(n), "data": f"{label} {DATA}"} for n in range(first, min(first + BATCH, topics))
        ]
        body = json.dumps(items).encode()
        raw = (
            b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        ids += json.loads(await request(port, raw))["ids"]
    return ids


class Stream:
    """An SSE client of one topic that keeps the events it read (id, event name)."""

    def __init__(self, number: int) -> None:
        self.topic = topic(number)
        self.events: list[tuple[str, str]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def open(self, port: int, last_id: str | None) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        writer.write(f"GET /events?topic={self.topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n{resume}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {head[:80]!r}")
        self._writer = writer
        self._reading = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        event_id, name = "", "message"
        async for line in reader:
            text = line.decode().rstrip("\n")
            if text.startswith("id: "):
                event_id = text[4:]
            elif text.startswith("event: "):
                name = text[7:]
            elif not text:
                if event_id or name != "message":
                    self.events.append((event_id, name))
                    self._arrived.set()
                event_id, name = "", "message"

    async def until(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.close()


async def open_all(streams: list[Stream], port: int, last_ids: list[str | None]) -> None:
    window = asyncio.Semaphore(OPEN_WINDOW)

    async def one(stream: Stream, last_id: str | None) -> None:
        async with window:
            await stream.open(port, last_id)

    await asyncio.gather(*(one(s, i) for s, i in zip(streams, last_ids, strict=True)))


def metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def restart_run(data_dir: str, count: int) -> bool:
    port = free_port()
    first = Server(data_dir, port)
    try:
        streams = [Stream(n) for n in range(count)]
        await open_all(streams, port, [None] * count)
        e1 = await publish_to_all(port, count, "E1")
        await asyncio.gather(*(s.until(1, 60) for s in streams))
        assert [s.events[0][0] for s in streams] == e1
        for stream in streams:
            stream.close()
        e2 = await publish_to_all(port, count, "E2")
    finally:
        first.stop()
    second = Server(data_dir, port)
    try:
        return await resumed_run(second, port, count, e1, e2)
    finally:
        second.stop()


async def resumed_run(second: Server, port: int, count: int, e1: list[str], e2: list[str]) -> bool:
    """The second server's part: every stream resumes from E1 and must get E2, then E3."""
    print(f"  restart: listening again {second.started_in:.2f} s after its start")
    began = time.monotonic()
    resumed = [Stream(n) for n in range(count)]
    await open_all(resumed, port, e1)
    await asyncio.gather(*(s.until(1, 120) for s in resumed))
    took = time.monotonic() - began
    e3 = await publish_to_all(port, count, "E3")
    await asyncio.gather(*(s.until(2, 60) for s in resumed))
    got = [s.events[:2] for s in resumed]
    expected = [[(a, "message"), (b, "message")] for a, b in zip(e2, e3, strict=True)]
    lost = sum(g != e for g, e in zip(got, expected, strict=True))
    resets = metric(port, "rawsse_resets_total")
    replays = metric(port, "rawsse_store_replays_total")
    print(f"  {count:,} streams resumed in {took:.2f} s (from reconnect to the missed event),"
          f" {int(replays):,} of them from disk; streams that lost or got another event first: {lost},"
          f" resets: {int(resets)}; server RSS {second.rss_mb():.1f} MB")  # fmt: skip
    for stream in resumed:
        stream.close()
    return lost == 0 and resets == 0


def memory_run(data_dir: str) -> None:
    port = free_port()
    server = Server(data_dir, port)
    try:
        time.sleep(2)  # what the process holds once settled, not while it starts
        print(f"  listening {server.started_in:.2f} s after its start; RSS {server.rss_mb():.1f} MB")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", default="1000000", help="log sizes, comma-separated")
    parser.add_argument("--streams", type=int, default=10_000, help="resuming streams (0: memory only)")
    parser.add_argument("--keep", help="a directory for the logs (default: a temporary one, removed)")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="rawsse-restart-")
    ok = True
    try:
        for events in (int(n) for n in args.events.split(",")):
            data_dir = os.path.join(root, f"log-{events}")
            if not os.path.exists(data_dir):
                took = fill(data_dir, events, max(args.streams, 10_000))
                size = os.path.getsize(os.path.join(data_dir, "events.db")) / 1e6
                print(f"{events:,} events written in {took:.0f} s ({size:.0f} MB on disk)")
            else:
                print(f"{events:,} events (kept from an earlier run)")
            if args.streams:
                ok = asyncio.run(restart_run(data_dir, args.streams)) and ok
            else:
                memory_run(data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
