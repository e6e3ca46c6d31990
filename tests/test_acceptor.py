"""The raw accept path (rawsse.reactor.acceptor), on real loopback sockets: a stream request
becomes a stream without the loop's machinery; everything else is handed over with what
was read and decided, so it is neither parsed nor decided twice."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest

from rawsse.reactor.acceptor import Acceptor
from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, StreamClient, publish, read_response, run_with_server, wait_for

RAW = [("uvloop", "epoll"), ("asyncio", "epoll")]


@pytest.fixture(params=RAW, ids=["-".join(b) for b in RAW])
def raw(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


def acceptor_of(server: Server) -> Acceptor:
    acceptor = server._acceptor
    assert acceptor is not None, "the fd backend accepts on the raw path"
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
    """The first read holds three publishes: the first is decided on the raw path, all
    three are answered on the handed-over connection, once each, in order."""

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
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
        await publish(server.port, "t", "late")
        seen = b""
        while b"data: late" not in seen:
            seen += await asyncio.wait_for(reader.read(4096), TIMEOUT)
        assert seen.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()

    run_with_server(raw, scenario)


async def arrive(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that asks nothing, once the server counts it."""
    connection = await asyncio.open_connection("127.0.0.1", server.port)
    await wait_for(lambda: server.connection_count == 1, "the arrival to be counted")
    return connection


def test_a_connection_that_asks_nothing_is_counted_then_closed_by_the_sweep(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await arrive(server)
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


def test_shutdown_answers_what_arrived_and_then_closes_it(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await arrive(server)
        await server.stop()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert server.connection_count == 0
        writer.close()

    run_with_server(raw, scenario)
