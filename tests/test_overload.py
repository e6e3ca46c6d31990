"""Load shedding that EventSource survives: a stream refused for load (connection limit,
accept rate, shutdown) gets a 200 stream that only says "come back in a while" with a
jittered retry and a reason, because a browser never reconnects after any other status;
plain requests get 503 with Retry-After; past the places kept for answering, connections
are dropped unanswered (a network error, which EventSource also retries). On shutdown
every stream is told to reconnect after a delay drawn from a spread, so the clients do
not come back as one wave."""

from __future__ import annotations

import asyncio
import json

from rawsse.reactor.server import Server
from tests.helpers import (
    TIMEOUT,
    Response,
    StreamClient,
    exchange,
    open_slow_reader,
    publish,
    read_response,
    run_with_server,
    wait_for,
)

KIND = "integration"

RETRY_RANGE = range(3000, 13001)
"""[--retry, --retry + --retry-spread] with the defaults, in ms."""


async def refused_stream(port: int) -> tuple[StreamClient, str]:
    client = await StreamClient.open(port, "topic=t", {"Last-Event-ID": "earlier-7"})
    events = await client.until_closed()
    assert client.status == 200
    assert [(e.event, e.id) for e in events] == [("rawsse-retry", "")]  # no id: the client keeps its own
    assert client.parser.retry in RETRY_RANGE
    notice = json.loads(events[0].data)
    assert notice["retry"] == client.parser.retry
    reason: str = notice["reason"]
    return client, reason


def test_over_the_connection_limit_a_stream_request_is_told_to_come_back(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        holders = [await StreamClient.open(server.port, "topic=t") for _ in range(2)]
        delays = set()
        for _ in range(5):
            client, reason = await refused_stream(server.port)
            assert reason == "overloaded"
            delays.add(client.parser.retry)
            client.close()
        assert len(delays) > 1, "the delays are jittered"
        answer, closed = await exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (answer.status, answer.headers["retry-after"], closed) == (503, "1", True)
        answer, closed = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (answer.status, answer.body, closed) == (200, b"ok\n", True)  # busy, but alive
        answer, _ = await exchange(server.port, b"GET /readyz HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert answer.status == 503
        # A request with a body is turned away from its head, without the body being read.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 999999\r\n\r\nx")
        assert (await read_response(reader)).status == 503
        writer.close()
        # The streams already open were never disturbed.
        await publish_via_holder(server, holders)

    async def publish_via_holder(server: Server, holders: list[StreamClient]) -> None:
        holders[1].close()
        await wait_for(lambda: server.connection_count < 2, "a place to become free")
        await publish(server.port, "t", "still served")
        assert (await holders[0].next_event()).data == "still served"
        holders[0].close()

    server = run_with_server(backend, scenario, max_connections=2)
    assert server.metrics.streams_refused == 5
    assert server.metrics.streams_opened == 2


def test_streams_beyond_the_accept_rate_come_back_later(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        first = await StreamClient.open(server.port, "topic=t")  # the one stream of this second
        refused, reason = await refused_stream(server.port)
        assert reason == "overloaded"
        refused.close()
        event_id = await publish(server.port, "t", "x")
        assert (await first.next_event()).id == event_id
        first.close()

    server = run_with_server(backend, scenario, max_accept_rate=1)
    assert (server.metrics.streams_opened, server.metrics.streams_refused) == (1, 1)


def test_on_shutdown_every_stream_is_told_to_reconnect_after_a_spread_delay(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        clients = [await StreamClient.open(server.port, f"topic=t{n % 3}") for n in range(48)]
        event_id = await publish(server.port, ["t0", "t1", "t2"], "last")
        stopping = asyncio.ensure_future(server.stop())
        delays = []
        for client in clients:
            events = await client.until_closed()
            assert events[-1].id == event_id  # what was published still arrived
            assert client.parser.retry in RETRY_RANGE
            delays.append(client.parser.retry)
            client.close()
        await stopping
        assert len(set(delays)) >= 6, f"the delays are spread: {sorted(delays)}"

    run_with_server(backend, scenario)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def ask(connection: Connection, raw: bytes) -> Response:
    connection[1].write(raw)
    return await read_response(connection[0])


def test_while_draining_readiness_publishing_and_streams_are_turned_away(backend: tuple[str, str]) -> None:
    """A reader that does not read keeps the drain going; meanwhile connections kept
    alive from before see the server as not ready, publishing refused (so publishers
    move to another server) and stream requests told to come back."""

    async def scenario(server: Server) -> None:
        _, slow = await open_slow_reader(server.port)
        slow.write(b"GET /events?topic=t HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
        # More than the kernel's socket buffers hold, unread: pending bytes hold the drain.
        while not server.streams.has_pending:
            await publish(server.port, "t", "x" * 500_000)
        kept = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        ready = await ask(kept[0], b"GET /readyz HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (ready.status, ready.body) == (200, b"ready\n")

        stopping = asyncio.ensure_future(server.stop())
        await wait_for(lambda: server.state.draining, "the drain to begin")
        ready = await ask(kept[0], b"GET /readyz HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert (ready.status, ready.body) == (503, b"not ready: draining\n")
        assert ready.headers["retry-after"] == "1"
        publishing = b"POST /publish?topic=t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 1\r\n\r\nx"
        refusal = await ask(kept[1], publishing)
        assert (refusal.status, refusal.headers["retry-after"]) == (503, "1")
        kept[2][1].write(b"GET /events?topic=t HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        streamed = await asyncio.wait_for(kept[2][0].read(), TIMEOUT)  # to the end: it closes
        assert streamed.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'\nevent: rawsse-retry\ndata: {"reason": "shutting-down", "retry": ' in streamed
        assert not stopping.done()
        slow.transport.abort()  # the slow reader goes: the drain ends
        await asyncio.wait_for(stopping, TIMEOUT)
        for _, writer in kept:
            writer.close()

    run_with_server(backend, scenario, max_pending_bytes=64 * 1024 * 1024, shutdown_grace=30)


async def unanswered(port: int) -> bool:
    """Whether the server drops a stream request without a byte of answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events?topic=t HTTP/1.1\r\nHost: [::1]\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    except ConnectionResetError:
        answer = b""
    writer.close()
    return answer == b""


def test_past_the_places_kept_for_answers_a_connection_is_dropped(backend: tuple[str, str]) -> None:
    """A wave larger than the descriptors kept for "come back later" answers: those
    beyond are dropped without a word, which EventSource treats as a network error and
    retries, where a 503 would end it."""

    async def scenario(server: Server) -> None:
        holder = await StreamClient.open(server.port, "topic=t")
        server.context.shed_capacity = 2  # as if only two descriptors were left
        waiting = []
        for _ in range(2):  # two connections over the limit that say nothing: they hold the places
            waiting.append(await asyncio.open_connection("127.0.0.1", server.port))
        await wait_for(lambda: server.context.shedding == 2, "the two places to be taken")
        assert await unanswered(server.port)
        assert server.metrics.connections_dropped == 1
        for _, writer in waiting:
            writer.close()
        await wait_for(lambda: server.context.shedding == 0, "the places to be free")
        _, reason = await refused_stream(server.port)  # answered again
        assert reason == "overloaded"
        holder.close()

    run_with_server(backend, scenario, max_connections=1)


def test_a_slow_connection_over_the_limit_cannot_hold_its_place() -> None:
    """Over the limit, a connection has one second for its whole head, however it
    trickles in; then it is dropped and its place serves the next one."""

    async def scenario(server: Server) -> None:
        holder = await StreamClient.open(server.port, "topic=t")
        server.context.shed_capacity = 1
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events?topic=t HTTP/1.1\r\nHo")  # and no more
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # dropped after its second
        writer.close()
        await wait_for(lambda: server.context.shedding == 0, "its place to be free")
        _, reason = await refused_stream(server.port)
        assert reason == "overloaded"
        holder.close()

    run_with_server(("uvloop", "epoll"), scenario, max_connections=1)


def test_with_no_grace_at_all_streams_still_get_their_spread_retry(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        clients = [await StreamClient.open(server.port, "topic=t") for _ in range(24)]
        await server.stop()
        delays = set()
        for client in clients:
            await client.until_closed()
            assert client.parser.retry in RETRY_RANGE
            delays.add(client.parser.retry)
            client.close()
        assert len(delays) >= 4

    run_with_server(backend, scenario, shutdown_grace=0)
