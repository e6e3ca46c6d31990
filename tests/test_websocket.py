"""WebSocket streams on real loopback connections: an independent client (the
`websockets` library) subscribes, receives, changes topics, publishes, is cut by
/disconnect and resumes; raw sockets check the handshake's refusals, the close codes,
frames sent early, and the keep-alive."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from rawsse.core.ws.frames import Opcode
from rawsse.core.ws.session import CLOSE_TIMEOUT, FAIL_LINGER
from rawsse.reactor.server import SWEEP_INTERVAL, Server
from tests.helpers import TIMEOUT, StreamClient, exchange, get, post, publish, run_with_server, wait_for
from tests.ws_frames import client_frame, close_code, server_frames

KIND = "integration"


def ws_url(server: Server, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws" + (f"?{query}" if query else "")


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    result: dict[str, Any] = json.loads(message)
    return result


async def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as caught:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    return caught.value.rcvd.code if caught.value.rcvd else None


def test_subscribe_receive_add_a_topic_be_cut_and_resume(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        async with connect(ws_url(server, "topic=a")) as ws:
            first = await publish(port, "a", "one")
            assert await receive(ws) == {"id": first, "topic": "a", "event": None, "data": "one"}
            await ws.send(json.dumps({"type": "subscribe", "topics": ["b"], "ref": 1}))
            assert await receive(ws) == {"type": "subscribed", "topics": ["a", "b"], "ref": 1}
            second = await publish(port, "b", "two\nlines", "named")
            assert await receive(ws) == {"id": second, "topic": "b", "event": "named", "data": "two\nlines"}
            answer = await post(port, "/disconnect?topic=b", b"")
            assert answer.json() == {"closed": 1}
            assert await closed_code(ws) == 1012  # "service restart": reconnect and resume
        await wait_for(lambda: server.metrics.streams_open == 0, "the closed stream released")
        missed = [await publish(port, topic, f"missed {topic}") for topic in ("a", "b", "c")]
        async with connect(ws_url(server, f"topic=a&topic=b&lastEventId={second}")) as ws:
            replayed = [await receive(ws), await receive(ws)]
            assert [(e["id"], e["topic"]) for e in replayed] == [(missed[0], "a"), (missed[1], "b")]
            live = await publish(port, "a", "live")
            assert (await receive(ws))["id"] == live

    run_with_server(backend, scenario)


def test_sse_and_websocket_subscribers_get_the_same_events_in_one_order(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        sse = await StreamClient.open(port, "topic=a&topic=b")
        async with connect(ws_url(server, "topic=a&topic=b")) as ws:
            await wait_for(lambda: server.metrics.streams_open == 2, "both streams")
            sent = []
            for n in range(30):
                topics = ["a", "b"] if n % 7 == 0 else ["a" if n % 2 else "b"]
                data = f"line {n}\nsecond line" if n % 5 == 0 else f"event {n} ünïcode"
                sent.append(await publish(port, topics, data, "tick" if n % 3 == 0 else None))
            over_ws = [await receive(ws) for _ in sent]
            over_sse = [await sse.next_event() for _ in sent]
        assert [e["id"] for e in over_ws] == sent == [e.id for e in over_sse]
        assert [e["data"] for e in over_ws] == [e.data for e in over_sse]
        assert [e["event"] or "message" for e in over_ws] == [e.event for e in over_sse]
        assert over_ws[0]["topics"] == ["a", "b"]
        sse.close()

    run_with_server(backend, scenario)


def test_publish_over_the_socket_follows_the_publish_rules(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        async with connect(ws_url(server, "topic=a")) as ws:  # loopback, no token: may publish
            await ws.send(json.dumps({"type": "publish", "topic": "a", "data": "hi", "ref": "p1"}))
            first, second = await receive(ws), await receive(ws)
            assert first == {"type": "published", "id": second["id"], "ref": "p1"}
            assert second["data"] == "hi"
        # A name re-pointed at loopback (DNS rebinding) may not publish, as on POST /publish.
        reader, writer, _ = await open_raw(server, upgrade(Host="rebound.example"))
        command = json.dumps({"type": "publish", "topic": "a", "data": "x"}).encode()
        writer.write(client_frame(Opcode.TEXT, command))
        [(_, payload)] = await read_frames(reader, 1)
        assert json.loads(payload)["code"] == "forbidden"
        writer.close()

    run_with_server(backend, scenario)


def test_publish_needs_the_token_when_one_is_set() -> None:
    async def scenario(server: Server) -> None:
        async with connect(ws_url(server, "topic=a")) as ws:
            await ws.send(json.dumps({"type": "publish", "topic": "a", "data": "x"}))
            assert (await receive(ws))["code"] == "forbidden"
        auth = {"Authorization": "Bearer s3cret"}
        async with connect(ws_url(server, "topic=a"), additional_headers=auth) as ws:
            await ws.send(json.dumps({"type": "publish", "topic": "a", "data": "x"}))
            assert (await receive(ws))["type"] == "published"

    run_with_server(("uvloop", "epoll"), scenario, publish_token="s3cret")


def test_shutdown_closes_websockets_with_going_away(backend: tuple[str, str]) -> None:
    codes: list[int | None] = []

    async def scenario(server: Server) -> None:
        ws = await connect(ws_url(server, "topic=a"))
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream")

        async def watch() -> None:
            codes.append(await closed_code(ws))

        asyncio.get_running_loop().create_task(watch())

    server = run_with_server(backend, scenario, shutdown_grace=5)
    assert codes == [1001]
    assert server.metrics.streams_open == 0


def test_metrics_count_websocket_streams_apart() -> None:
    async def scenario(server: Server) -> None:
        sse = await StreamClient.open(server.port, "topic=a")
        async with connect(ws_url(server, "topic=a")), connect(ws_url(server)):
            await wait_for(lambda: server.metrics.streams_open == 3, "three streams")
            text = (await get(server.port, "/metrics")).body.decode()
            assert 'rawsse_streams{transport="sse"} 1' in text
            assert 'rawsse_streams{transport="ws"} 2' in text
            assert "rawsse_ws_streams_open 2" in text
            async with connect(ws_url(server, "topic=$stats")) as stats:  # the dashboard's figures
                for _ in range(5):  # a snapshot a second; one taken before this one opened is older
                    figures = json.loads((await receive(stats))["data"])
                    if figures["ws_streams_open"] == 3:
                        break
                assert (figures["streams_open"], figures["ws_streams_open"]) == (4, 3)
        sse.close()

    run_with_server(("uvloop", "epoll"), scenario)


# The handshake, byte by byte

KEY = base64.b64encode(os.urandom(16)).decode()


def upgrade(path: str = "/ws?topic=a", **headers: str) -> bytes:
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /ws?topic=a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 426),
        (upgrade(Sec_WebSocket_Version="8"), 426),
        (upgrade(Sec_WebSocket_Key="short"), 400),
        (upgrade(Sec_WebSocket_Key=""), 400),
        (upgrade(Connection="keep-alive"), 400),
        (upgrade("/ws?topic=a/b"), 400),
        (upgrade(Origin="https://elsewhere.example"), 403),
        (b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
    ],
    ids=[
        "no-upgrade",
        "version-8",
        "short-key",
        "no-key",
        "no-connection-upgrade",
        "bad-topic",
        "foreign-origin",
        "post",
    ],
)
def test_bad_handshakes_are_refused_with_a_status_and_closed(raw: bytes, status: int) -> None:
    async def scenario(server: Server) -> None:
        answer, closed = await exchange(server.port, raw)
        assert answer.status == status
        assert closed
        if status == 426:
            assert answer.headers["upgrade"] == "websocket"

    run_with_server(("uvloop", "epoll"), scenario)


def test_an_upgrade_asked_elsewhere_is_answered_as_http_and_closed() -> None:
    async def scenario(server: Server) -> None:
        raw = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        answer, closed = await exchange(server.port, raw + b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (answer.status, answer.body, closed) == (200, b"ok\n", True)  # nothing after it read as HTTP
        body = b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        answer, closed = await exchange(server.port, body + b"Content-Length: 2\r\n\r\nab")
        assert (answer.status, closed) == (400, True)  # never a publish without its body
        # An SSE stream asked with an upgrade stays an SSE stream: what follows its head
        # is dropped, never read as WebSocket frames.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            b"GET /events?topic=a HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        )
        subscribe = json.dumps({"type": "subscribe", "topics": ["b"]}).encode()
        writer.write(head + client_frame(Opcode.TEXT, subscribe) + b"XYZ")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream")
        event_id = await publish(server.port, "a", "plain sse")
        text = (await asyncio.wait_for(reader.readuntil(b"plain sse\n\n"), TIMEOUT)).decode()
        assert f"id: {event_id}\ndata: plain sse" in text
        assert server.metrics.ws_streams_open == 0 and server.streams.count == 1
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario)


async def open_raw(
    server: Server, raw: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols", lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return reader, writer, headers


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes]]:
    data = b""
    while len(server_frames(data)) < count or _partial(data):
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        if not chunk:
            break
        data += chunk
    return server_frames(data)


def _partial(data: bytes) -> bool:
    total = 0
    for _, payload in server_frames(data):
        total += (2 if len(payload) < 126 else 4 if len(payload) < 65536 else 10) + len(payload)
    return total != len(data)


def test_allowed_origins_extensions_and_early_frames() -> None:
    async def scenario(server: Server) -> None:
        raw = upgrade(Origin="https://app.example", Sec_WebSocket_Extensions="permessage-deflate")
        # A ping sent with the handshake, before the 101 (the RFC says to wait; some do not).
        reader, writer, headers = await open_raw(server, raw + client_frame(Opcode.PING, b"early"))
        assert "sec-websocket-extensions" not in headers  # refused by not agreeing to it
        assert headers["sec-websocket-accept"]
        assert await read_frames(reader, 1) == [(Opcode.PONG, b"early")]
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario, cors_origin="https://app.example")


@pytest.mark.parametrize("pieces", [1, 3], ids=["one-read", "head-in-pieces"])
def test_a_protocol_error_fails_the_connection_from_the_server_side(
    backend: tuple[str, str], pieces: int
) -> None:
    """RFC 6455 7.1.7: after its 1002 the server processes nothing more and ends the TCP
    connection itself, at once: the client reads the close frame and then the end,
    without sending a close of its own (before, the slot was held until CLOSE_TIMEOUT)."""

    async def scenario(server: Server) -> None:
        raw = upgrade()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        step = len(raw) // pieces + 1
        for offset in range(0, len(raw), step):  # a head in pieces goes the loop's way
            writer.write(raw[offset : offset + step])
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        # An unmasked frame, then a ping that must not be answered: nothing after the
        # fault is processed.
        writer.write(client_frame(Opcode.TEXT, b"{}", masked=False) + client_frame(Opcode.PING, b"after"))
        # The end comes with the close frame, not after the linger nor the close timeout.
        rest = await asyncio.wait_for(reader.read(), FAIL_LINGER / 2)
        [(opcode, payload)] = server_frames(rest)
        assert (opcode, close_code(payload)) == (Opcode.CLOSE, 1002)
        writer.close()
        await wait_for(lambda: server.metrics.streams_open == 0, "the stream closed")
        assert server.metrics.ws_streams_open == 0

    run_with_server(backend, scenario)


def test_a_failed_connection_whose_client_never_closes_is_dropped_after_the_linger(
    backend: tuple[str, str],
) -> None:
    """A client that keeps its side open (and keeps sending) after the server failed
    its connection costs the slot FAIL_LINGER and a sweep at most, not CLOSE_TIMEOUT."""

    async def scenario(server: Server) -> None:
        reader, writer, _ = await open_raw(server, upgrade())
        writer.write(client_frame(Opcode.TEXT, b"\xff\xfe", masked=True))  # invalid UTF-8: 1007
        [(opcode, payload)] = await read_frames(reader, 1)
        assert (opcode, close_code(payload)) == (Opcode.CLOSE, 1007)
        assert await asyncio.wait_for(reader.read(), FAIL_LINGER / 2) == b""  # our end came with it
        writer.write(b"garbage the server reads and drops")
        bound = FAIL_LINGER + SWEEP_INTERVAL + 1.0  # well under CLOSE_TIMEOUT
        assert bound < CLOSE_TIMEOUT
        await wait_for(lambda: server.metrics.streams_open == 0, "the lingering slot freed", timeout=bound)
        writer.close()

    run_with_server(backend, scenario)


def test_a_client_that_answers_no_ping_is_dropped_and_one_that_does_stays() -> None:
    async def scenario(server: Server) -> None:
        reader, writer, _ = await open_raw(server, upgrade())
        async with connect(ws_url(server, "topic=a"), ping_interval=None) as answering:
            await wait_for(lambda: server.metrics.streams_open == 2, "both streams")
            frames = await read_frames(reader, 1)
            assert frames[0][0] == Opcode.PING  # the sweep's ping, unanswered here
            rest = await asyncio.wait_for(reader.read(), 5 * TIMEOUT)  # until the server ends it
            # more pings, then dropped: two unanswered in a row are let pass, not one
            later = list(server_frames(rest))
            assert set(later) == {(Opcode.PING, b"")} and 1 + len(later) >= 3
            assert server.metrics.streams_open == 1
            await answering.send(json.dumps({"type": "ping"}))
            assert (await receive(answering))["type"] == "pong"
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario, heartbeat=1.0)


def test_a_frame_trickled_for_ever_is_closed_with_1008() -> None:
    async def scenario(server: Server) -> None:
        reader, writer, _ = await open_raw(server, upgrade())
        frame = client_frame(Opcode.TEXT, b"x" * 60000)
        writer.write(frame[:1000])  # a large frame that never completes
        frames = await read_frames(reader, 2)
        closes = [close_code(payload) for opcode, payload in frames if opcode == Opcode.CLOSE]
        assert closes == [1008]
        writer.close()

    run_with_server(("uvloop", "epoll"), scenario, heartbeat=1.0)


def test_pings_go_out_and_quiet_clients_stay_while_events_never_stop() -> None:
    async def scenario(server: Server) -> None:
        async with connect(ws_url(server, "topic=a"), ping_interval=None) as quiet:  # answers pings only
            await wait_for(lambda: server.metrics.streams_open == 1, "the stream")
            received: list[str | bytes] = []

            async def read() -> None:  # the client reads its events, and answers pings
                async for message in quiet:
                    received.append(message)

            reading = asyncio.get_running_loop().create_task(read())
            loop = asyncio.get_running_loop()
            until = loop.time() + 4.5  # past the check that would drop it, an event every few ms
            while loop.time() < until:
                server.publish("a", "busy")
                await asyncio.sleep(0.005)
            assert server.metrics.streams_open == 1  # not dropped as unanswered
            assert received
            reading.cancel()

    run_with_server(("uvloop", "epoll"), scenario, heartbeat=1.0)


def test_a_websocket_that_reads_nothing_is_cut_as_a_slow_consumer() -> None:
    async def scenario(server: Server) -> None:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(upgrade())
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream")
        published = 0
        while server.metrics.slow_consumers == 0:  # the socket buffers fill, then our cap trips
            server.publish("a", "x" * 16384)
            published += 1
            assert published < 3000, "the slow consumer was never cut"
            await asyncio.sleep(0.001)
        await wait_for(lambda: server.metrics.streams_open == 0, "the stream released")
        sock.close()

    run_with_server(("uvloop", "epoll"), scenario, max_pending_bytes=65536)
