"""Running a server inside a test and talking to it over real loopback sockets."""

from __future__ import annotations

import asyncio
import codecs
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from rawsse.config import Config
from rawsse.process.single import loop_factory
from rawsse.reactor.server import Server
from tests.sse_client import EventParser, ReceivedEvent

TIMEOUT = 10.0
"""Upper bound for any one awaited step; a passing test never waits for it."""

BACKENDS = [("uvloop", "epoll"), ("uvloop", "transport"), ("asyncio", "epoll"), ("asyncio", "transport")]


def free_port() -> int:
    """A loopback port free now (for servers that must be told their port up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_with_server(
    backend: tuple[str, str],
    scenario: Callable[[Server], Awaitable[None]],
    wall: Callable[[], float] = time.time,
    **options: Any,
) -> Server:
    """Start a server on a free port with the given loop and stream backend (and wall
    clock), run the scenario against it, stop it; returns the stopped server for checks
    on its metrics."""
    loop_name, streams = backend
    factory = loop_factory(loop_name)[1]
    holder: list[Server] = []

    async def main() -> None:
        server = Server(Config(port=0, streams=streams, **options), wall=wall)
        holder.append(server)
        await server.start()
        try:
            await asyncio.wait_for(scenario(server), 60)
        finally:
            await server.stop()

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return holder[0]


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: asyncio.StreamReader) -> Response:
    status, headers = await read_head(reader)
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    return Response(status, headers, body)


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> tuple[Response, bool]:
    """Send raw bytes, read one response; also report whether the server then closed."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        answer = await read_response(reader)
        closed = await asyncio.wait_for(reader.read(1), TIMEOUT) == b""
        return answer, closed
    finally:
        writer.close()


async def post(
    port: int,
    path: str,
    body: bytes,
    content_type: str = "application/x-www-form-urlencoded",
    headers: dict[str, str] | None = None,
) -> Response:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    ).encode() + body
    answer, _ = await exchange(port, raw)
    return answer


async def publish(port: int, topic: str | list[str], data: str, event: str | None = None) -> str:
    topics = [topic] if isinstance(topic, str) else topic
    fields = [("topic", t) for t in topics] + [("data", data)]
    if event is not None:
        fields.append(("event", event))
    answer = await post(port, "/publish", urlencode(fields).encode())
    assert answer.status == 200, answer.body
    event_id: str = answer.json()["id"]
    return event_id


async def get(port: int, path: str, headers: dict[str, str] | None = None) -> Response:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    answer, _ = await exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n".encode()
    )
    return answer


class StreamClient:
    """A subscriber reading one /events stream with the WHATWG parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = EventParser()
        self._decoder = codecs.getincrementaldecoder("utf-8")()  # a character may span reads
        self.status = 0
        self.headers: dict[str, str] = {}
        self._ready: list[ReceivedEvent] = []

    @classmethod
    async def open(
        cls,
        port: int,
        query: str,
        headers: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        slow: bool = False,
    ) -> StreamClient:
        """`slow`: with a tiny receive buffer, so the server's writes back up soon."""
        reader, writer = await (open_slow_reader(port) if slow else asyncio.open_connection(host, port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        client = cls(reader, writer)
        client.status, client.headers = await read_head(reader)
        return client

    async def _read_more(self) -> bool:
        chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
        if not chunk:
            return False
        self._ready.extend(self.parser.feed(self._decoder.decode(chunk)))
        return True

    async def next_event(self) -> ReceivedEvent:
        while not self._ready:
            if not await self._read_more():
                raise EOFError("stream closed")
        return self._ready.pop(0)

    async def events(self, count: int) -> list[ReceivedEvent]:
        return [await self.next_event() for _ in range(count)]

    async def until_comment(self) -> None:
        seen = self.parser.comments
        while self.parser.comments == seen:
            if not await self._read_more():
                raise EOFError("stream closed")

    async def until_closed(self) -> list[ReceivedEvent]:
        """Read to the end of the stream; returns the events that came before it."""
        while await self._read_more():
            pass
        ready, self._ready = self._ready, []
        return ready

    def close(self) -> None:
        self.writer.close()


async def open_slow_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a tiny receive buffer: what the server writes to it backs up
    soon, as for a client that stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


# Waiting for a condition: one rule (look again until it holds or `timeout` passes), in
# the loop's form and in a thread's.


class Deadline:
    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.at = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise AssertionError(f"timed out waiting for {self.what}")


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until a condition holds that the loop's own work makes true (a server in this
    process runs on the loop meanwhile)."""
    deadline = Deadline(what, timeout)
    while not condition():
        deadline.check()
        await asyncio.sleep(0.005)  # the server runs on this loop: give it a turn, then look again


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until a condition holds that another process makes true (asked again each
    time: its metrics, its fds)."""
    deadline = Deadline(what, timeout)
    while not condition():
        deadline.check()
        time.sleep(0.02)
