"""picows, a Cython WebSocket library, looping over its transports to broadcast (it has no
broadcast of its own): `python -m bench.peers.picows_app PORT PUBLISH_PORT` (on uvloop).
Streams on `/ws?topic=T`; `POST /publish` on the second port."""

from __future__ import annotations

import sys
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.peers.ws_publish import serve_publish

subscribers: dict[str, set[WSTransport]] = defaultdict(set)


class Subscriber(WSListener):  # type: ignore[misc]
    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        for topic in self.topics:
            subscribers[topic].add(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for topic in self.topics:
            subscribers[topic].discard(transport)


def listener_for(request: WSUpgradeRequest) -> Subscriber:
    query = urlsplit(request.path.decode()).query
    return Subscriber(parse_qs(query).get("topic", []))


def publish(topic: str, message: str) -> None:
    payload = message.encode()
    for transport in subscribers.get(topic, ()):
        transport.send(WSMsgType.TEXT, payload)


async def main() -> None:
    port, publish_port = int(sys.argv[1]), int(sys.argv[2])
    await serve_publish(publish_port, publish)
    server = await ws_create_server(listener_for, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
