"""Locust load for rawsse: publishers hitting POST /publish, and subscribers holding
/events streams or /ws WebSockets and counting events. Run headless for a bounded time:

    .venv/bin/locust -f bench/locustfile.py --headless -u 200 -r 50 -t 30s \\
        --host http://127.0.0.1:8080

Subscribers are 9 in 10 users (5 SSE, 4 WebSocket); each holds its stream for up to 20 s
and reports every event to Locust's statistics as an "SSE event" or a "WS event" with its
end-to-end latency (publish time in the payload to the moment its bytes arrive). A
WebSocket subscriber also subscribes to a second topic on its open connection, and
answers the server's keep-alive pings. They read the socket themselves: a requests-based
reader (`iter_lines`) waits for 512-byte chunks and would report the time events sat in
its buffer, not the server's latency.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from locust import FastHttpUser, User, between, events, task

TOPICS = [f"locust-{n}" for n in range(10)]

STREAM_SECONDS = 20.0
READ_SIZE = 65536


class Publisher(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.2)

    @task
    def publish(self) -> None:
        topic = random.choice(TOPICS)
        self.client.post(
            "/publish",
            data={"topic": topic, "data": f"{time.time_ns()}"},
            name="/publish",
        )


class Subscriber(User):
    weight = 5
    wait_time = between(1, 2)

    @task
    def listen(self) -> None:
        parts = urlsplit(self.host)
        topic = random.choice(TOPICS)
        request = (
            f"GET /events?topic={topic} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        hold(self.host, "/events", request, self._read)

    def _read(self, sock: socket.socket, started: float) -> None:
        """The head, then every `data:` line as soon as its bytes are in."""
        buffer = read_head(sock, b"200", "/events", started)
        for chunk, arrived_ns in chunks(sock, started):
            lines = (buffer + chunk).split(b"\n")
            buffer = lines.pop()  # an incomplete line waits for its end
            for line in lines:
                if line.startswith(b"data: ") and line[6:].isdigit():
                    report_event("SSE", arrived_ns - int(line[6:]), len(line))


WS_DATA = re.compile(rb'"data":"([0-9]+)"')


class WebSocketSubscriber(User):
    weight = 4
    wait_time = between(1, 2)

    @task
    def listen(self) -> None:
        parts = urlsplit(self.host)
        self.topics = random.sample(TOPICS, 2)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?topic={self.topics[0]} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        hold(self.host, "/ws", request, self._read)

    def _read(self, sock: socket.socket, started: float) -> None:
        """The 101, a second topic asked for on the open connection, then the frames."""
        buffer = read_head(sock, b"101", "/ws", started)
        sock.sendall(masked(0x1, json.dumps({"type": "subscribe", "topics": self.topics[1:]}).encode()))
        for chunk, arrived_ns in chunks(sock, started):
            buffer = self._frames(sock, buffer + chunk, arrived_ns)
        sock.sendall(masked(0x8, struct.pack("!H", 1000)))

    def _frames(self, sock: socket.socket, buffer: bytes, arrived_ns: int) -> bytes:
        """Handle the whole frames in `buffer` (server frames are never masked); return
        the rest."""
        while len(buffer) >= 2:
            opcode, size, head = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                size, head = struct.unpack("!H", buffer[2:4])[0], 4
            elif size == 127:
                size, head = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < head + size:
                break
            payload, buffer = buffer[head : head + size], buffer[head + size :]
            if opcode == 0x9:
                sock.sendall(masked(0xA, payload))
            elif opcode == 0x1 and (found := WS_DATA.search(payload)):
                report_event("WS", arrived_ns - int(found.group(1)), len(payload))
        return buffer


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (short payloads only: commands, pongs, close)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def hold(host: str, path: str, request: bytes, read: Callable[[socket.socket, float], None]) -> None:
    """Connect, send the stream request, and let `read` hold the stream; failures are
    reported as the request's."""
    parts = urlsplit(host)
    started = time.monotonic()
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
    except OSError as exc:
        report("GET", path, started, 0, exc)
        return
    try:
        sock.sendall(request)
        read(sock, started)
    except OSError as exc:
        report("GET", path, started, 0, exc)
    finally:
        sock.close()


def chunks(sock: socket.socket, started: float) -> Iterator[tuple[bytes, int]]:
    """(bytes, when they arrived in ns) until the server closes or the stream's time is
    up; the first is empty (for what came with the head)."""
    sock.settimeout(1.0)  # so the stream's time limit is checked while it is quiet
    yield b"", time.time_ns()
    while time.monotonic() - started <= STREAM_SECONDS:
        try:
            chunk = sock.recv(READ_SIZE)
        except TimeoutError:
            continue
        if not chunk:
            return
        yield chunk, time.time_ns()


def read_head(sock: socket.socket, status: bytes, path: str, started: float) -> bytes:
    """Read the response head, report it, and return what came after it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buffer += chunk
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    got = head.split(b" ", 2)[1]
    if got != status:
        raise ConnectionError(f"status {got.decode()}")
    report("GET", path, started, len(head), None)
    return buffer


def report_event(kind: str, latency_ns: int, length: int) -> None:
    """One event received, with its end-to-end latency, as a Locust "request"."""
    events.request.fire(
        request_type=kind, name="event", response_time=latency_ns / 1e6, response_length=length,
        exception=None, context={},
    )  # fmt: skip


def report(kind: str, name: str, started: float, length: int, error: Exception | None) -> None:
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=(time.monotonic() - started) * 1000,
        response_length=length,
        exception=error,
        context={},
    )
