"""Presence in one process: `GET /presence?topic=A` counts the streams on a topic and
their users; join and leave events on `$presence:A` reach the streams whose tokens allow
them. Across workers and Redis nodes: tests/test_private_cluster.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

from rawsse.core.presence import MAX_PRESENCE_USERS
from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, StreamClient, exchange, run_with_server
from tests.tokens import SECRET, token
from tests.tokens import bearer as as_bearer

KIND = "integration"

DEFAULT = ("uvloop", "epoll")


def bearer(sub: str, **claims: Any) -> dict[str, str]:
    return as_bearer(token(sub, **claims))


async def presence(port: int, topic: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = f"GET /presence?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    answer, _ = await exchange(port, raw.encode())
    return answer.status, answer.json() if answer.status == 200 else answer.body.decode()


def test_streams_and_users_of_a_topic_and_who_may_ask() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        streams = [
            await StreamClient.open(port, "topic=room&topic=news", bearer("ann")),
            await StreamClient.open(port, "topic=room", bearer("ann")),
            await StreamClient.open(port, "topic=room", bearer("bob")),
            await StreamClient.open(port, "topic=room"),  # public and anonymous
        ]
        ws = await connect(f"ws://127.0.0.1:{port}/ws?topic=room", additional_headers=bearer("cat"))
        status, body = await presence(port, "room")  # loopback without a publish token: the operator
        assert (status, body) == (
            200,
            {
                "topic": "room",
                "streams": 5,
                "users": ["ann", "bob", "cat"],
                "users_truncated": False,
                "complete": True,
            },
        )
        assert (await presence(port, "nobody"))[1]["streams"] == 0
        assert (await presence(port, "room", bearer("x", publish=["room"])))[0] == 200
        status, reason = await presence(port, "room", bearer("x", publish=["other"]))
        assert (status, reason) == (403, "the token does not allow publishing to 'room'\n")
        assert (await presence(port, "room", bearer("x")))[0] == 403
        assert (await presence(port, "", None))[0] == 400
        await ws.close()
        for client in streams:
            client.close()

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET, public_topics="room,news")


def test_the_users_listed_are_bounded() -> None:
    async def scenario(server: Server) -> None:
        streams = [
            await StreamClient.open(server.port, "topic=big", bearer(f"user-{n}"))
            for n in range(MAX_PRESENCE_USERS + 5)
        ]
        _, body = await presence(server.port, "big")
        assert body["streams"] == MAX_PRESENCE_USERS + 5
        assert len(body["users"]) == MAX_PRESENCE_USERS and body["users_truncated"] is True
        for client in streams:
            client.close()

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET, public_topics="big")


def test_join_and_leave_events_for_tokens_that_allow_them(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        watcher = await StreamClient.open(
            port, "topic=$presence:chat:1", bearer("mod", subscribe=["$presence:*"])
        )
        assert watcher.status == 200
        refused = await StreamClient.open(port, "topic=$presence:chat:1", bearer("ann", subscribe=["chat:*"]))
        assert refused.status == 403
        refused.close()
        ann = await StreamClient.open(port, "topic=chat:1", bearer("ann", subscribe=["chat:*"]))
        joined = await watcher.next_event()
        assert (joined.event, json.loads(joined.data)) == (
            "join",
            {"type": "join", "topic": "chat:1", "sub": "ann"},
        )
        ann.close()
        left = await watcher.next_event()
        assert (left.event, json.loads(left.data)) == (
            "leave",
            {"type": "leave", "topic": "chat:1", "sub": "ann"},
        )
        quiet = await StreamClient.open(port, "topic=other", bearer("ann", subscribe=["other"]))
        ws = await connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers=bearer("bob", subscribe=["chat:*"])
        )
        await ws.send(json.dumps({"type": "subscribe", "topics": ["chat:1"]}))
        joined = await watcher.next_event()  # the stream on `other` announced nothing
        assert json.loads(joined.data) == {"type": "join", "topic": "chat:1", "sub": "bob"}
        await ws.close()
        assert json.loads((await watcher.next_event()).data)["type"] == "leave"
        # The server's own events: no publisher's, so no route counts them.
        assert server.metrics.events_published == 0
        assert (server.metrics.published_http, server.metrics.published_ws) == (0, 0)
        quiet.close()
        watcher.close()

    run_with_server(backend, scenario, jwt_secret=SECRET, presence_events="chat:*")


def test_presence_topics_need_tokens() -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=$presence:chat")
        body = await asyncio.wait_for(client.reader.read(), TIMEOUT)
        assert (client.status, body) == (
            400,
            b"presence topics need tokens: set a token key or --auth-url: '$presence:chat'\n",
        )

    run_with_server(DEFAULT, scenario)
