"""Locust load for rawsse: publishers hitting POST /publish, and subscribers holding
/events streams and counting events. Run headless for a bounded time:

    .venv/bin/locust -f bench/locustfile.py --headless -u 200 -r 50 -t 30s \\
        --host http://127.0.0.1:8080

Subscribers are 9 in 10 users; each holds its stream for up to 20 s and reports every
event to Locust's statistics as an "SSE event" with its end-to-end latency (publish time
in the payload to the moment its bytes arrive). They read the socket themselves: a
requests-based reader (`iter_lines`) waits for 512-byte chunks and would report the time
events sat in its buffer, not the server's latency.
"""

from __future__ import annotations

import random
import socket
import time
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
    weight = 9
    wait_time = between(1, 2)

    @task
    def listen(self) -> None:
        parts = urlsplit(self.host)
        topic = random.choice(TOPICS)
        started = time.monotonic()
        request = (
            f"GET /events?topic={topic} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        try:
            sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
        except OSError as exc:
            report("GET", "/events", started, 0, exc)
            return
        try:
            sock.sendall(request)
            self._read(sock, started)
        except OSError as exc:
            report("GET", "/events", started, 0, exc)
        finally:
            sock.close()

    def _read(self, sock: socket.socket, started: float) -> None:
        """The head, then every `data:` line as soon as its bytes are in."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionError("closed before the response head")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise ConnectionError(f"status {status.decode()}")
        report("GET", "/events", started, len(head), None)
        sock.settimeout(1.0)  # so the stream's time limit is checked while it is quiet
        arrived_ns = time.time_ns()
        while True:
            lines = buffer.split(b"\n")
            buffer = lines.pop()  # an incomplete line waits for its end
            for line in lines:
                if line.startswith(b"data: ") and line[6:].isdigit():
                    events.request.fire(
                        request_type="SSE",
                        name="event",
                        response_time=(arrived_ns - int(line[6:])) / 1e6,
                        response_length=len(line),
                        exception=None,
                        context={},
                    )
            if time.monotonic() - started > STREAM_SECONDS:
                return
            try:
                chunk = sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            arrived_ns = time.time_ns()
            if not chunk:
                return
            buffer += chunk


def report(kind: str, name: str, started: float, length: int, error: Exception | None) -> None:
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=(time.monotonic() - started) * 1000,
        response_length=length,
        exception=error,
        context={},
    )
