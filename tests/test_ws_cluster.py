"""Mixed SSE and WebSocket subscribers of one topic, spread over worker processes and over
two nodes of a Redis cluster: the same events, with the same ids, in one order; and a
publish made over a WebSocket on one node reaches the other."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import TIMEOUT, StreamClient, publish
from tests.processes import REDIS_SERVER, RedisServer, Served

KIND = "cluster"


async def ws_events(ws: ClientConnection, count: int) -> list[tuple[str, str]]:
    events = []
    while len(events) < count:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if "type" not in message:
            events.append((message["id"], message["data"]))
    return events


async def mixed_subscribers(ports: list[int], count: int = 12) -> None:
    """Subscribers of both kinds on every port; events published round the ports, some of
    them over a WebSocket; every subscriber must see all of them, identically."""
    sse = [await StreamClient.open(port, "topic=news") for port in ports for _ in range(3)]
    sockets = [await connect(f"ws://127.0.0.1:{port}/ws?topic=news") for port in ports for _ in range(3)]
    # Each head (200, 101) was read: it is written when the stream has joined its topic.
    for n in range(count):
        port = ports[n % len(ports)]
        if n % 3 == 2:  # some over a WebSocket's publish command
            async with connect(f"ws://127.0.0.1:{port}/ws") as publisher:
                await publisher.send(json.dumps({"type": "publish", "topic": "news", "data": f"event {n}"}))
                answer = json.loads(await asyncio.wait_for(publisher.recv(), TIMEOUT))
                assert answer["type"] == "published", answer
        else:
            await publish(port, "news", f"event {n}")
    over_sse = [[(e.id, e.data) for e in await s.events(count)] for s in sse]
    over_ws = [await ws_events(ws, count) for ws in sockets]
    everyone = over_sse + over_ws
    assert all(seen == everyone[0] for seen in everyone)
    assert [data for _, data in everyone[0]] == [f"event {n}" for n in range(count)]
    assert len({event_id for event_id, _ in everyone[0]}) == count
    for stream in sse:
        stream.close()
    for ws in sockets:
        await ws.close()


def test_mixed_subscribers_over_workers_see_one_order() -> None:
    with Served("--workers", "2", "--heartbeat", "30", ready_lines=2) as served:
        asyncio.run(mixed_subscribers([served.port]))


@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary (Debian: apt install redis-server)")
def test_mixed_subscribers_over_a_redis_cluster_see_one_order() -> None:
    redis = RedisServer()
    try:
        args = ("--broker", redis.url, "--heartbeat", "30")
        with Served(*args) as first, Served(*args) as second:
            asyncio.run(mixed_subscribers([first.port, second.port]))
    finally:
        redis.close()
