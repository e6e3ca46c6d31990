"""The raw accept path (rawsse.reactor.acceptor, rawsse.reactor.raw_requests), on real
loopback sockets: a stream request becomes a stream without the loop's machinery; what
cannot be answered where it was read is handed over with what was read and decided, so
it is neither parsed nor decided twice."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket

import pytest

from rawsse.reactor.acceptor import Acceptor
from rawsse.reactor.server import Server
from tests.helpers import (
    TIMEOUT,
    StreamClient,
    open_slow_reader,
    publish,
    read_response,
    run_with_server,
    wait_for,
)

KIND = "integration"

RAW = [("uvloop", "epoll"), ("asyncio", "epoll")]


@pytest.fixture(params=RAW, ids=["-".join(b) for b in RAW])
def raw(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


def acceptor_of(server: Server) -> Acceptor:
    acceptor = server._listeners[0]
    assert isinstance(acceptor, Acceptor), "the fd backend accepts on the raw path"
    return acceptor


def test_a_stream_request_becomes_a_stream_without_a_transport(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=t")
        assert client.status == 200
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
        assert not server.context.connections  # no Protocol, no transport held it
        await publish(server.port, "t", "hello")
        assert (await client.next_event()).data == "hello"
        client.close()

    run_with_server(raw, scenario)


def test_streams_inherit_nodelay_and_keepalive_from_the_listener(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=t")
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
        (slot,) = [s for s in range(server.streams.table.capacity) if server.streams.table.is_open(s)]
        sock = socket.socket(fileno=os.dup(slot))
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        finally:
            sock.close()
        client.close()

    run_with_server(raw, scenario)


def test_pipelined_publishes_in_the_first_read_are_each_answered_once_in_order(raw: tuple[str, str]) -> None:
    """The first read holds three publishes: all three are answered once each, in order,
    in one write."""

    async def scenario(server: Server) -> None:
        stream = await StreamClient.open(server.port, "topic=t")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"".join(
                b"POST /publish?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\n%d" % n
                for n in range(3)
            )
        )
        answers = [await read_response(reader) for _ in range(3)]
        assert [a.status for a in answers] == [200, 200, 200]
        assert [(await stream.next_event()).data for _ in range(3)] == ["0", "1", "2"]
        assert server.metrics.events_published == 3
        writer.close()
        stream.close()

    run_with_server(raw, scenario)


def test_a_head_that_trickles_in_is_handed_over_and_still_becomes_a_stream(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events?topic=t HTTP/1.1\r\n")
        await wait_for(lambda: len(server.context.connections) == 1, "the hand-over")
        writer.write(b"Host: 127.0.0.1\r\n\r\n")
        assert await streamed_event(server, reader, "late")
        writer.close()

    run_with_server(raw, scenario)


def test_a_connection_that_asks_nothing_is_counted_then_closed_by_the_sweep(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await arrive_after(server, 0)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed, unanswered
        assert server.connection_count == 0
        writer.close()

    run_with_server(raw, scenario, header_timeout=1)


def test_a_first_read_with_a_bad_head_is_refused_with_its_status(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n")
        answer = await read_response(reader)
        assert answer.status == 431
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert server.metrics.rejected[431] == 1
        writer.close()

    run_with_server(raw, scenario, max_header_bytes=8192)


def test_out_of_descriptors_pauses_accepting_then_resumes(raw: tuple[str, str]) -> None:
    """Fault injection: accept() failing with EMFILE stops accepting for a moment (the
    backlog holds the clients) instead of spinning on a listening fd that stays readable."""

    class Exhausted:
        def _accept(self) -> tuple[int, object]:
            raise OSError(errno.EMFILE, "Too many open files")

    async def scenario(server: Server) -> None:
        acceptor = acceptor_of(server)
        acceptor._accept(Exhausted(), socket.AF_INET)  # type: ignore[arg-type]
        assert acceptor._paused is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # waits in the backlog
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert acceptor._paused is None
        writer.close()

    run_with_server(raw, scenario)


def test_shutdown_answers_what_arrived_during_the_drain_and_then_closes_it(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        _, slow = await open_slow_reader(server.port)
        slow.write(b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_for(lambda: server.metrics.streams_open == 1, "the slow stream to open")
        while not server.streams.has_pending:  # unread bytes hold the drain open
            await publish(server.port, "t", "x" * 500_000)
        reader, writer = await arrive_after(server, 1)
        stopping = asyncio.ensure_future(server.stop())
        await wait_for(lambda: server.state.draining, "the drain to begin")
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (503, b"not ready: draining\n")
        slow.transport.abort()  # the drain ends
        await asyncio.wait_for(stopping, TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert server.connection_count == 0
        writer.close()

    run_with_server(raw, scenario, max_pending_bytes=64 * 1024 * 1024, shutdown_grace=30)


def test_connections_handed_over_count_against_the_limit(raw: tuple[str, str]) -> None:
    """Two publishers whose bodies have not come yet hold the two places there are: a
    stream request is told to come back later (a 200 stream, never a 503)."""

    async def scenario(server: Server) -> None:
        held = []
        for _ in range(2):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /publish?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9\r\n\r\n")
            held.append(writer)
        refused = await StreamClient.open(server.port, "topic=t")
        assert refused.status == 200
        events = await refused.until_closed()
        assert [json.loads(e.data)["reason"] for e in events] == ["overloaded"]
        assert server.metrics.streams_refused == 1
        assert len(server.context.connections) == 2 and server.context.handing_over == 0
        for writer in held:
            writer.close()
        refused.close()

    run_with_server(raw, scenario, max_connections=2)


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /events?topic=t HTTP/1.0\r\n\r\n",
        b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0", "first-read-over-a-slice"],
)
def test_stream_requests_the_shared_reader_cannot_keep_still_stream(
    raw: tuple[str, str], request_head: bytes
) -> None:
    """The reader cannot read another connection's request after these (the connection
    ends after one message, or the read holds more than one slice): they become streams
    through the ordinary path, and the next request still works on the raw one."""

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_head)
        assert await streamed_event(server, reader, "through")
        after = await StreamClient.open(server.port, "topic=t")
        assert after.status == 200
        writer.close()
        after.close()

    run_with_server(raw, scenario, max_header_bytes=64 * 1024)


async def arrive_after(server: Server, count: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that asks nothing, once the server counts it beside `count` others."""
    connection = await asyncio.open_connection("127.0.0.1", server.port)
    await wait_for(lambda: server.connection_count == count + 1, "the arrival to be counted")
    return connection


async def streamed_event(server: Server, reader: asyncio.StreamReader, data: str) -> bool:
    """Once the stream is open, publish `data` on topic t; whether the connection read as
    a 200 stream that carried it."""
    await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
    await publish(server.port, "t", data)
    seen = b""
    while f"data: {data}".encode() not in seen:
        seen += await asyncio.wait_for(reader.read(65536), TIMEOUT)
    return seen.startswith(b"HTTP/1.1 200 OK\r\n")
