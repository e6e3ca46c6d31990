"""The publishing side shared by the bench's WebSocket peers: a small keep-alive HTTP
server for `POST /publish` (form fields `topic` and `data`, as the flooder sends them) on
a port of its own, which hands each event, as rawsse's JSON, to the peer's broadcast."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httptools

Broadcast = Callable[[str, str], None]
"""(topic, the event's JSON text)"""

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


class PublishProtocol(asyncio.Protocol):
    sequence = 0

    def __init__(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        form = parse_qs(b"".join(self._body).decode())
        self._body = []
        PublishProtocol.sequence += 1
        event_id = str(PublishProtocol.sequence)
        data = form["data"][0]
        for topic in form.get("topic", []):
            message = json.dumps(
                {"id": event_id, "topic": topic, "event": None, "data": data}, separators=(",", ":")
            )
            self._broadcast(topic, message)
        body = b'{"id": "%s"}' % event_id.encode()
        assert self._transport is not None
        self._transport.write(ANSWER % (len(body), body))


async def serve_publish(port: int, broadcast: Broadcast) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: PublishProtocol(broadcast), "127.0.0.1", port, backlog=4096)
