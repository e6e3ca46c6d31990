"""The `websockets` library's server, using its `broadcast()`: `python -m
bench.peers.websockets_app PORT PUBLISH_PORT` (on uvloop). Streams on `/ws?topic=T`;
`POST /publish` on the second port. Compression and its keep-alive pings are off (rawsse
has no compression, and the flooder answers only rawsse's empty pings)."""

from __future__ import annotations

import sys
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.peers.ws_publish import serve_publish

subscribers: dict[str, set[ServerConnection]] = defaultdict(set)


async def handler(connection: ServerConnection) -> None:
    assert connection.request is not None
    topics = parse_qs(urlsplit(connection.request.path).query).get("topic", [])
    for topic in topics:
        subscribers[topic].add(connection)
    try:
        await connection.wait_closed()
    finally:
        for topic in topics:
            subscribers[topic].discard(connection)


def publish(topic: str, message: str) -> None:
    broadcast(subscribers.get(topic, ()), message)


async def main() -> None:
    port, publish_port = int(sys.argv[1]), int(sys.argv[2])
    await serve_publish(publish_port, publish)
    async with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
