"""Bad input over real sockets: each gets its status, a closed connection, and harms
nobody else (a stream opened first still receives events afterwards)."""

from __future__ import annotations

import asyncio
import json

import pytest

from rawsse.reactor.server import Server
from tests.helpers import (
    TIMEOUT,
    StreamClient,
    exchange,
    open_slow_reader,
    post,
    publish,
    read_response,
    run_with_server,
    wait_for,
)

KIND = "integration"

HOST = "Host: 127.0.0.1\r\n"

BAD_REQUESTS = {
    "garbage": (b"HELLO\r\n\r\n", 400),
    "tls-handshake-on-plain-port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 400),
    "bad-version": (b"GET /healthz HTTP/9.1\r\n" + HOST.encode() + b"\r\n", 400),
    "bare-lf": (b"GET /healthz HTTP/1.1\nHost: test\n\n", 400),
    "no-host": (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    "content-length-and-chunked": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two-content-lengths": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "chunked123": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked123\r\n\r\n0\r\n\r\n",
        400,
    ),
    "unknown-coding": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "header-block-too-large": (
        b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\n"
        + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 100) for n in range(200))
        + b"\r\n",
        431,
    ),
    "one-huge-header": (b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n", 431),
    "url-too-long": (b"GET /events?topic=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: [::1]\r\n\r\n", 414),
    "body-too-large": (b"POST /publish?topic=t HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413),
    "chunked-body-too-large": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(20)),
        413,
    ),
    "unknown-path": (b"GET /nope HTTP/1.1\r\nHost: [::1]\r\n\r\n", 404),
    "wrong-method": (b"DELETE /publish HTTP/1.1\r\nHost: [::1]\r\n\r\n", 405),
    "no-topic": (b"GET /events HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400),
    "empty-topic": (b"GET /events?topic= HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400),
    "topic-with-slash": (b"GET /events?topic=a%2Fb HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400),
    "topic-with-control-char": (b"GET /events?topic=a%0Db HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400),
    "topic-too-long": (b"GET /events?topic=" + b"a" * 256 + b" HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400),
    "too-many-topics": (
        b"GET /events?" + b"&".join(b"topic=t%d" % n for n in range(65)) + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    ),
    "invalid-utf8-data": (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 2\r\n\r\n\xc3\x28",
        400,
    ),
    "invalid-utf8-form": (
        b"POST /publish HTTP/1.1\r\nHost: [::1]\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 19\r\n\r\ntopic=t&data=%C3%28",
        400,
    ),
    "event-name-with-newline": (
        b"POST /publish?topic=t&event=a%0Aid:1 HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 1\r\n\r\nx",
        400,
    ),
    "unsupported-body-type": (
        b"POST /publish HTTP/1.1\r\nHost: [::1]\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx",
        415,
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_status_and_close_and_harms_nobody(backend: tuple[str, str], case: str) -> None:
    raw, status = BAD_REQUESTS[case]

    async def scenario(server: Server) -> None:
        bystander = await StreamClient.open(server.port, "topic=t")
        answer, closed = await exchange(server.port, raw)
        assert answer.status == status, answer.body
        assert closed
        assert answer.body.strip(), "the error says what was wrong"
        await publish(server.port, "t", "still here")
        assert (await bystander.next_event()).data == "still here"
        bystander.close()

    server = run_with_server(backend, scenario)
    assert server.metrics.rejected[status] == 1
    assert server.metrics.events_published == 1


def test_wrong_method_lists_allowed_ones(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        answer, _ = await exchange(
            server.port, b"POST /events HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 0\r\n\r\n"
        )
        assert (answer.status, answer.headers["allow"]) == (405, "GET")

    run_with_server(backend, scenario)


def test_trickled_header_block_is_cut_at_the_limit(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nX-Slow: ")
        sent = 0
        answer = None
        while answer is None:
            try:
                writer.write(b"v" * 1000)
                await writer.drain()
                sent += 1000
            except ConnectionError:
                break
            assert sent < 200_000, "the server kept accepting header bytes"
            try:
                answer = await asyncio.wait_for(read_response(reader), 0.01)
            except TimeoutError:
                pass
        if answer is None:
            answer = await read_response(reader)
        assert answer.status == 431
        writer.close()

    run_with_server(backend, scenario)


def test_error_response_survives_unread_input(backend: tuple[str, str]) -> None:
    """A 413 sent while the client is still sending its body must still be readable:
    the server half-closes and drains instead of resetting the connection."""

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 5000000\r\n\r\n")
        writer.write(b"x" * 3_000_000)
        answer = await read_response(reader)
        assert answer.status == 413
        writer.close()

    run_with_server(backend, scenario, max_body_bytes=1000)


# The timeouts' rules are tested with a fake clock in tests/test_connection.py; these
# check, once, that the sweep applies them to real connections.


def test_slow_request_head_times_out_with_408() -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        answer = await read_response(reader)
        assert answer.status == 408
        assert await asyncio.wait_for(reader.read(1), TIMEOUT) == b""
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario, header_timeout=1)


def test_idle_keepalive_connection_is_closed() -> None:
    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await asyncio.wait_for(reader.read(1), TIMEOUT) == b""
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario, keepalive_timeout=1)


def test_publisher_that_disconnects_mid_body_publishes_nothing(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 100\r\n\r\nhalf")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await publish(server.port, "t", "complete")  # a later request is handled normally

    server = run_with_server(backend, scenario)
    assert server.metrics.events_published == 1


def test_connections_beyond_the_limit_get_503_with_retry_after(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        holders = [await StreamClient.open(server.port, "topic=t") for _ in range(3)]
        answer, closed = await exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (answer.status, answer.headers["retry-after"], closed) == (503, "1", True)
        holders.pop().close()
        await wait_for(lambda: server.connection_count < 3, "the closes to be seen")
        answer, _ = await exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n"
        )
        assert answer.status == 200
        for holder in holders:
            holder.close()

    run_with_server(backend, scenario, max_connections=3)


def test_publish_token_is_required_when_set(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        body = b"topic=t&data=x"
        assert (await post(server.port, "/publish", body)).status == 401
        wrong = await post(server.port, "/publish", body, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        right = await post(server.port, "/publish", body, headers={"Authorization": "Bearer s3cret"})
        assert right.status == 200

    run_with_server(backend, scenario, publish_token="s3cret")


def test_publish_queue_is_bounded(backend: tuple[str, str]) -> None:
    """Publishes that arrive faster than fan-out passes run get 503 once the queue is full
    (three pipelined requests reach the server in one read, with no pass between them; a
    stream reads their topic, else they would be history at once, queued for nobody)."""
    body = json.dumps([{"topic": "t", "data": "x" * 1000}] * 40).encode()
    request = (
        b"POST /publish HTTP/1.1\r\nHost: [::1]\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body

    async def scenario(server: Server) -> None:
        stream = await StreamClient.open(server.port, "topic=t")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request * 3)
        statuses = [(await read_response(reader)).status for _ in range(3)]
        assert statuses == [200, 200, 503]
        writer.close()
        stream.close()

    run_with_server(backend, scenario, max_queued_bytes=60_000)


def test_pipelining_client_that_never_reads_gets_no_unbounded_buffer(backend: tuple[str, str]) -> None:
    """Requests are read only while the client keeps up with the responses."""

    async def scenario(server: Server) -> None:
        _, writer = await open_slow_reader(server.port)
        requests = b"GET /metrics HTTP/1.1\r\nHost: [::1]\r\n\r\n" * 1000
        for _ in range(20):  # 0.7 MB of requests, about 20 MB of responses if all answered
            writer.write(requests)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                break  # the server stopped reading: what we want
        buffered = [c._transport.get_write_buffer_size() for c in server.context.connections if c._transport]
        assert buffered and max(buffered) < 256 * 1024
        writer.transport.abort()

    run_with_server(backend, scenario)


def test_stream_that_cannot_be_registered_is_told_to_come_back_and_leaks_nothing() -> None:
    """Fault injection: the epoll watch limit (ENOSPC) reached at hand-over time. The
    client gets a 200 stream that only sets a later retry and says why (an EventSource
    given 503 would never reconnect)."""
    import errno
    import os

    async def scenario(server: Server) -> None:
        poller = server.streams.backend._poller  # type: ignore[attr-defined]
        register = poller.register

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "epoll watch limit reached")

        # libuv opens a spare descriptor of its own with the loop's first TCP connection
        # (here the test's client, the server accepting on the raw path): before counting.
        warm_up = await StreamClient.open(server.port, "topic=warm-up")
        warm_up.close()
        await warm_up.writer.wait_closed()
        await wait_for(lambda: server.connection_count == 0, "the warm-up stream to close")
        fds_before = len(os.listdir("/proc/self/fd"))
        poller.register = full
        try:
            refused = await StreamClient.open(server.port, "topic=t", {"Last-Event-ID": "x-1"})
            events = await refused.until_closed()
        finally:
            poller.register = register
        assert refused.status == 200
        # No id: the client keeps its own Last-Event-ID for when it comes back.
        assert [(e.event, json.loads(e.data)["reason"], e.id) for e in events] == [
            ("rawsse-retry", "overloaded", "")
        ]
        assert refused.parser.retry is not None and 3000 <= refused.parser.retry <= 13000
        refused.close()
        await refused.writer.wait_closed()  # the test's own end of it
        await wait_for(lambda: server.connection_count == 0, "the refused connection to close")
        # The transport closes its fd on a later loop iteration.
        await wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, "its fd to be closed")
        assert server.metrics.streams_open == 0
        assert server.metrics.streams_refused == 1
        ok = await StreamClient.open(server.port, "topic=t")  # and the next one works
        assert ok.status == 200
        ok.close()

    run_with_server(("uvloop", "epoll"), scenario)
