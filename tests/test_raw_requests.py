"""Requests answered on the raw path (rawsse.reactor.raw_requests), on real loopback
sockets: keep-alive publishers answered in order with no transport, refusals answered
with their status and a lingering close, and a wave of refusals that never reaches the
loop's machinery."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import jwt
import pytest

import rawsse.reactor.raw_requests as raw_requests
from rawsse.core.connection import SHED_TIMEOUT
from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, StreamClient, read_head, read_response, run_with_server, wait_for

KIND = "integration"

RAW = [("uvloop", "epoll"), ("asyncio", "epoll")]

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


@pytest.fixture(params=RAW, ids=["-".join(b) for b in RAW])
def raw(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def hand_overs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The connections the raw path gives to the loop's machinery (the real hand-over,
    counted)."""
    handed: list[int] = []
    real = raw_requests.hand_over

    def counted(*args: object) -> None:
        handed.append(1)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(raw_requests, "hand_over", counted)
    return handed


def publish_request(topic: str, data: str) -> bytes:
    body = f"topic={topic}&data={data}".encode()
    return (
        b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_keep_alive_publishes_are_answered_in_order_without_a_transport(
    raw: tuple[str, str], hand_overs: list[int]
) -> None:
    """A publisher as `requests` or Go's net/http is one: one request at a time on a
    kept-alive connection, with other requests between; a stream reads every event in
    order under the ids the answers gave."""

    async def scenario(server: Server) -> None:
        stream = await StreamClient.open(server.port, "topic=t")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ids = []
        for n in range(20):
            writer.write(publish_request("t", str(n)))
            answer = await read_response(reader)
            assert answer.status == 200 and "connection" not in answer.headers
            ids.append(answer.json()["id"])
            if n % 5 == 0:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert (await read_response(reader)).status == 200
        events = [await stream.next_event() for _ in range(20)]
        assert [e.data for e in events] == [str(n) for n in range(20)]
        assert [e.id for e in events] == ids
        assert not server.context.connections and server.context.handing_over == 0
        assert server.raw_connections == 1  # the publisher, kept alive on the raw path
        writer.close()
        await wait_for(lambda: server.raw_connections == 0, "the publisher's end to close it")
        stream.close()

    run_with_server(raw, scenario)
    assert hand_overs == []


def test_pipelined_and_one_at_a_time_publishes_get_the_same_ids_and_order(raw: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        stream = await StreamClient.open(server.port, "topic=t")
        one_reader, one_writer = await asyncio.open_connection("127.0.0.1", server.port)
        piped_reader, piped_writer = await asyncio.open_connection("127.0.0.1", server.port)
        ids = []
        for n in range(5):
            one_writer.write(publish_request("t", f"one-{n}"))
            ids.append((await read_response(one_reader)).json()["id"])
        piped_writer.write(b"".join(publish_request("t", f"piped-{n}") for n in range(5)))
        ids += [(await read_response(piped_reader)).json()["id"] for _ in range(5)]
        for n in range(5, 10):
            one_writer.write(publish_request("t", f"one-{n}"))
            ids.append((await read_response(one_reader)).json()["id"])
        events = [await stream.next_event() for _ in range(15)]
        expected = [f"one-{n}" for n in range(5)] + [f"piped-{n}" for n in range(5)]
        assert [e.data for e in events] == expected + [f"one-{n}" for n in range(5, 10)]
        assert [e.id for e in events] == ids
        assert len(set(ids)) == 15
        for writer in (one_writer, piped_writer):
            writer.close()
        stream.close()

    run_with_server(raw, scenario)


LONG_URL = b"/events?topic=" + b"a" * 9000

REFUSALS = [
    # (request, options, status, body)
    (b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", {}, 404, b"no such path: /nowhere\n"),
    (b"DELETE /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", {}, 405, b"use POST\n"),
    (b"GARBAGE\r\n\r\n", {}, 400, None),
    (b"GET / HTTP/1.1\r\n\r\n", {}, 400, b"missing Host header\n"),
    (b"GET " + LONG_URL + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", {"max_url_bytes": 8192}, 414, None),
    (
        b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n",
        {"max_header_bytes": 8192},
        431,
        b"request header block too large\n",
    ),
    (b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", {"jwt_secret": SECRET}, 401, None),
    (
        b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://elsewhere.example\r\n\r\n",
        {},
        403,
        None,
    ),
    (
        b"POST /publish?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\n\r\nx",
        {},
        403,
        None,
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "options", "status", "body"),
    REFUSALS,
    ids=[f"{status}-{n}" for n, (_, _, status, _) in enumerate(REFUSALS)],
)
def test_a_refusal_is_answered_on_the_raw_path_with_a_lingering_close(
    request_bytes: bytes,
    options: dict[str, object],
    status: int,
    body: bytes | None,
    hand_overs: list[int],
) -> None:
    """The refusal, whole, then our end; bytes the client sent after its request are read
    and dropped (a plain close would reset the connection and could lose the answer)."""

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes + b"unread input after the request " * 2000)
        answer = await read_response(reader)
        assert answer.status == status
        assert answer.headers.get("connection") == "close"
        if body is not None:
            assert answer.body == body
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # our FIN, no reset
        assert server.metrics.rejected[status] == 1
        assert not server.context.connections
        writer.close()

    run_with_server(RAW[0], scenario, **options)
    assert hand_overs == []


def test_come_back_later_is_answered_on_the_raw_path(hand_overs: list[int]) -> None:
    async def scenario(server: Server) -> None:
        held = await StreamClient.open(server.port, "topic=t")
        refused = await StreamClient.open(server.port, "topic=t")
        assert refused.status == 200
        events = await refused.until_closed()
        assert [e.event for e in events] == ["rawsse-retry"]
        assert server.metrics.streams_refused == 1
        held.close()
        refused.close()

    run_with_server(RAW[0], scenario, max_connections=1)
    assert hand_overs == []


def test_a_wave_of_refused_streams_never_reaches_the_loops_machinery(hand_overs: list[int]) -> None:
    """2,000 stream requests without a token, at once: each is answered 401 where it was
    read, and a client asking /healthz meanwhile is answered while they linger."""
    wave = 2000

    async def scenario(server: Server) -> None:
        clients = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(wave)]
        for _, writer in clients:
            writer.write(b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        health_reader, health_writer = await asyncio.open_connection("127.0.0.1", server.port)
        health_writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response(health_reader)).status == 200
        statuses = [(await read_response(reader)).status for reader, _ in clients]
        assert statuses == [401] * wave
        assert server.metrics.rejected[401] == wave
        for _, writer in clients:
            writer.close()
        health_writer.close()

    run_with_server(RAW[0], scenario, jwt_secret=SECRET)
    assert hand_overs == []


def test_a_token_holder_publishes_on_a_kept_alive_connection(raw: tuple[str, str]) -> None:
    """Publish rights are checked for every request of the connection, not once."""
    claims = {"sub": "42", "publish": ["news"], "exp": int(time.time()) + 3600}
    allowed = jwt.encode(claims, SECRET, algorithm="HS256")

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for topic, status in (("news", 200), ("news", 200), ("secret", 403)):
            body = f"topic={topic}&data=x".encode()
            writer.write(
                b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                % (allowed.encode(), len(body), body)
            )
            answer = await read_response(reader)
            assert answer.status == status, answer.body
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # a refusal ends it
        writer.close()

    run_with_server(raw, scenario, jwt_secret=SECRET, publish_token="operator-token")


def test_empty_lines_before_a_request_are_ignored(raw: tuple[str, str]) -> None:
    """RFC 9112 2.2: a server ignores at least one empty line before a request-line."""

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\r\n")
        # An absence, so a bounded wait: neither an answer nor the connection's end comes.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.write(b"\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response(reader)).status == 200
        writer.close()

    run_with_server(raw, scenario)


def test_a_last_answer_the_socket_cannot_take_at_once_still_ends_the_connection() -> None:
    """Pipelined requests whose answers outgrow a small receive window, the last with
    `Connection: close`: the rest goes out through the loop, and the connection ends
    after it; a request sent afterwards is not answered."""

    async def scenario(server: Server) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        one = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        last = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        count = 16000 // len(one) - 2  # all in the first slice the raw path reads
        writer.write(one * count + last)
        for _ in range(count + 1):
            assert (await read_response(reader)).status == 200
        writer.write(one)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()

    run_with_server(RAW[0], scenario)


def test_a_decided_request_followed_by_an_oversized_head_is_answered_either_way() -> None:
    """A stream request, then a head too large, in one write. Read in one go (more than a
    slice), the connection is refused with 431, as on the ordinary path; read in two, the
    stream opens first and what follows it is no HTTP. Either way it is answered, never
    dropped with an error."""

    async def scenario(server: Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        stream = b"GET /events?topic=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        oversized = b"GET /y HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n" * 1500
        writer.write(stream + oversized)
        status, _ = await read_head(reader)
        assert status in (200, 431)
        if status == 431:
            assert server.metrics.rejected[431] == 1
        else:
            await wait_for(lambda: server.metrics.streams_open == 1, "the stream")
        writer.close()

    run_with_server(RAW[0], scenario, max_header_bytes=8192)


def test_a_bad_upgrade_over_the_limit_is_answered_and_closed() -> None:
    """Over the connection limit, a /ws request that is no upgrade gets its refusal, as
    on the ordinary path, and the descriptor back at once."""

    async def scenario(server: Server) -> None:
        held = await StreamClient.open(server.port, "topic=t")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await read_response(reader)
        assert 400 <= answer.status < 500 and answer.headers.get("connection") == "close"
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        await wait_for(lambda: server.context.shedding == 0, "the shed connection to be gone")
        held.close()
        writer.close()

    run_with_server(RAW[0], scenario, max_connections=1)


def test_a_shed_connection_gone_before_its_answer_is_closed_once() -> None:
    """White-box, since the race cannot be staged over loopback: the answer's write fails
    (the client reset), which closes the descriptor; nothing closes it a second time."""

    async def scenario(server: Server) -> None:
        raw = server._raw
        assert raw is not None
        ours, theirs = socket.socketpair()
        fd = ours.detach()
        os.set_blocking(fd, False)
        raw._backend.watch(fd)
        server.context.shedding += 1  # as the acceptor counts a connection over the limit
        raw.take(fd, "127.0.0.1", socket.AF_INET, True, True, server.context.clock())
        theirs.close()
        raw._answer_and_close(fd, [], b"x" * 100_000)  # EPIPE: closed by the failed write
        assert server.context.shedding == 0 and server.context.arriving == 0

    run_with_server(RAW[0], scenario)


def test_a_shed_head_handed_over_keeps_the_time_its_connection_was_accepted() -> None:
    """Over the limit, a connection has SHED_TIMEOUT for its whole head, from its accept
    (as on the ordinary path): one that waits, then trickles its head in, gains nothing."""

    async def scenario(server: Server) -> None:
        loop = asyncio.get_running_loop()
        held = await StreamClient.open(server.port, "topic=t")
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        connected = loop.time()
        await asyncio.sleep(0.5)  # the scenario itself: a client that waits before its head
        writer.write(b"GET /events?topic=t HTTP/1.1\r\n")
        await wait_for(lambda: len(server.context.connections) == 1, "the hand-over")
        (connection,) = server.context.connections
        assert connection.deadline <= connected + SHED_TIMEOUT + 0.2
        writer.close()
        held.close()

    run_with_server(RAW[0], scenario, max_connections=1)
