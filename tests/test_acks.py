"""Acknowledged delivery on private topics, on real loopback connections: a stream opened
later gets exactly what its user has not acknowledged, resumes and commands and POST /ack
acknowledge, only a topic's own user (or the operator) may, and the acknowledgements live
in the durable log (through a restart, shared by workers)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import connect

from rawsse.core.hub import RESET_EVENT
from rawsse.reactor.server import Server
from tests.helpers import (
    TIMEOUT,
    Response,
    StreamClient,
    get,
    post,
    publish,
    run_with_server,
    wait_for,
)
from tests.processes import REDIS_SERVER, RedisServer, Served
from tests.tokens import SECRET, bearer, token

KIND = "integration"

DEFAULT = ("uvloop", "epoll")
PUBLISH_TOKEN = "the-operators-token"


def options(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "data"), "jwt_secret": SECRET, "public_topics": "news", **more}


async def unacked_stream(
    port: int, topics: str, sub: str, token_claims: dict[str, Any] | None = None, **headers: str
) -> StreamClient:
    query = urlencode([("topic", t) for t in topics.split(",")] + [("from", "unacked")])
    return await StreamClient.open(port, query, {**bearer(token(sub, **(token_claims or {}))), **headers})


async def ack(port: int, topic: str, event_id: str, headers: dict[str, str] | None = None) -> Response:
    return await post(port, "/ack?" + urlencode({"topic": topic, "id": event_id}), b"", headers=headers)


async def unacked(port: int, topic: str, sub: str) -> dict[str, Any]:
    answer = await get(port, f"/unacked?{urlencode({'topic': topic})}", bearer(token(sub)))
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json()
    return found


def test_a_page_opened_later_gets_exactly_what_its_user_has_not_acknowledged(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        sent = [await publish(port, "notes@42", f"note {n}") for n in range(3)]
        await publish(port, "notes@7", "someone else's")
        await publish(port, "news", "for everyone")
        assert await unacked(port, "notes@42", "42") == {
            "topic": "notes@42", "count": 3, "newest": sent[2], "acked": None, "complete": True
        }  # fmt: skip
        page = await unacked_stream(port, "notes@42,news", "42")
        assert [(e.id, e.data) for e in await page.events(3)] == list(
            zip(sent, ["note 0", "note 1", "note 2"], strict=True)
        )
        live = await publish(port, "news", "live")
        assert (await page.next_event()).id == live  # then live events (news only from now)
        answer = await ack(port, "notes@42", sent[2], bearer(token("42")))
        assert answer.status == 200 and answer.json() == {"topic": "notes@42", "acked": sent[2]}
        assert (await unacked(port, "notes@42", "42"))["count"] == 0
        page.close()
        second = await unacked_stream(port, "notes@42", "42")  # nothing again, then live
        later = await publish(port, "notes@42", "later")
        assert [(e.id, e.data) for e in await second.events(1)] == [(later, "later")]
        second.close()

    run_with_server(backend, scenario, **options(tmp_path))


def test_a_resume_of_a_from_unacked_stream_acknowledges_up_to_its_id(tmp_path: Path) -> None:
    """An EventSource opened with from=unacked received every event of its user's topics
    up to its Last-Event-ID: its reconnect acknowledges them. A stream that started live
    did not (what came before it is unread), and acknowledges nothing by resuming."""

    async def scenario(server: Server) -> None:
        port = server.port
        away = [await publish(port, "notes@42", f"while away {n}") for n in range(3)]
        live = await StreamClient.open(port, "topic=notes@42", bearer(token("42")))
        seen = await publish(port, "notes@42", "seen live")
        assert (await live.next_event()).id == seen
        live.close()
        resumed = await StreamClient.open(
            port, "topic=notes@42", {**bearer(token("42")), "Last-Event-ID": seen}
        )
        resumed.close()
        found = await unacked(port, "notes@42", "42")
        assert (found["count"], found["acked"]) == (4, None)  # nothing acknowledged
        # A console whose patterns read user 42's topic cannot ask for 42's unread events.
        console = await unacked_stream(port, "notes@42", "admin", token_claims={"subscribe": ["notes@*"]})
        assert console.status == 403
        console.close()
        page = await unacked_stream(port, "notes@42", "42")
        assert [e.id for e in await page.events(4)] == [*away, seen]
        page.close()
        again = await unacked_stream(port, "notes@42", "42", **{"Last-Event-ID": away[1]})  # its reconnect
        assert [e.id for e in await again.events(2)] == [away[2], seen]
        again.close()
        found = await unacked(port, "notes@42", "42")
        assert (found["count"], found["acked"]) == (2, away[1])

    run_with_server(DEFAULT, scenario, **options(tmp_path))


def test_a_websocket_acknowledges_with_a_command(tmp_path: Path) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        sent = [await publish(port, "notes@42", f"note {n}") for n in range(2)]
        url = f"ws://127.0.0.1:{port}/ws?topic=notes@42&from=unacked"
        async with connect(url, additional_headers=bearer(token("42"))) as ws:
            received = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(2)]
            assert [r["id"] for r in received] == sent
            await ws.send(json.dumps({"type": "ack", "id": sent[1], "ref": "a"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert reply == {"type": "acked", "topics": ["notes@42"], "id": sent[1], "ref": "a"}
            await ws.send(json.dumps({"type": "ack", "id": sent[1], "topic": "notes@7"}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert refused["type"] == "error" and refused["code"] == "invalid"  # not the stream's
            await ws.send(json.dumps({"type": "ack", "id": "nonsense"}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert refused["code"] == "invalid"
        assert (await unacked(port, "notes@42", "42"))["count"] == 0
        elsewhere = await publish(port, "news", "a shared event")
        async with connect(
            f"ws://127.0.0.1:{port}/ws?topic=alerts@42", additional_headers=bearer(token("42"))
        ) as ws:
            await ws.send(json.dumps({"type": "ack", "id": elsewhere}))  # alerts@42 never had one
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert reply == {"type": "acked", "topics": ["alerts@42"], "id": None}  # as POST /ack says

    run_with_server(DEFAULT, scenario, **options(tmp_path))


def test_only_the_topics_user_or_the_operator_may_acknowledge(tmp_path: Path) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        body = urlencode({"topic": "notes@42", "data": "note"}).encode()
        sent = (await post(port, "/publish", body, headers=bearer(PUBLISH_TOKEN))).json()["id"]
        cases = [
            ("notes@42", sent, bearer(token("7")), 403),  # another user
            ("notes@42", sent, bearer(token("7", subscribe=["notes@*"])), 403),  # who may read it
            ("notes@42", sent, bearer("not a token"), 401),
            ("notes@42", sent, {}, 401),  # no credential and no operator (a publish token is set)
            ("news", sent, bearer(token("42")), 400),  # a shared topic keeps none
            ("notes@42", "x", bearer(token("42")), 400),
            ("notes@42", sent.split("-")[0] + "-999", bearer(token("42")), 400),  # not given out
            ("notes@42", "other-1", bearer(token("42")), 400),
            ("notes@42", sent, bearer(PUBLISH_TOKEN), 200),  # the operator, for the user
        ]
        for topic, event_id, headers, status in cases:
            answer = await ack(port, topic, event_id, headers)
            assert answer.status == status, (topic, event_id, headers, answer.body)
        refused = await get(port, "/unacked?topic=notes@42", bearer(token("7")))
        assert refused.status == 403

    run_with_server(DEFAULT, scenario, **options(tmp_path, publish_token=PUBLISH_TOKEN))


def test_a_server_without_a_store_says_it_keeps_no_acknowledgements(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        sent = await publish(port, "notes@42", "note")
        assert (await ack(port, "notes@42", sent)).status == 501
        assert (await get(port, "/unacked?topic=notes@42")).status == 501
        refused = await StreamClient.open(port, "topic=notes@42&from=unacked")
        assert refused.status == 501
        refused.close()
        plain = await StreamClient.open(port, "topic=notes@42", {"Last-Event-ID": sent})  # resumes as ever
        assert plain.status == 200
        plain.close()
        async with connect(f"ws://127.0.0.1:{port}/ws?topic=notes@42") as ws:
            await ws.send(json.dumps({"type": "ack", "id": sent}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert (refused["type"], refused["code"]) == ("error", "unavailable")

    run_with_server(backend, scenario)


def test_events_trimmed_before_their_user_acknowledged_them_give_a_reset(tmp_path: Path) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        for n in range(3):  # more than memory history keeps (--history 2): resumed from disk
            await publish(port, "notes@42", f"soon trimmed {n}")
        for n in range(24):  # 1.2 MiB on another topic: the oldest go, notes@42's first
            await publish(port, "bulk", f"{n}" + "x" * 50_000)
        kept = await publish(port, "notes@7", "kept")
        await wait_for(lambda: server.metrics.store_bytes < 1 << 20, "the sweep to trim the store")
        found = await unacked(port, "notes@42", "42")
        assert found["count"] == 0 and not found["complete"]
        page = await unacked_stream(port, "notes@42", "42")
        assert (await page.next_event()).event == RESET_EVENT
        page.close()
        # Another user's kept event is not reported as missed, though older ones were trimmed.
        assert (await unacked(port, "notes@7", "7"))["complete"]
        other = await unacked_stream(port, "notes@7", "7")
        first = await other.next_event()
        assert (first.id, first.event) == (kept, "message")
        other.close()

    run_with_server(DEFAULT, scenario, **options(tmp_path, store_bytes=1 << 20, history=2))


@pytest.mark.parametrize("group", [(), ("--workers", "2")], ids=["one-process", "2-workers"])
def test_acknowledgements_outlive_a_restart_and_are_shared_by_workers(
    tmp_path: Path, group: tuple[str, ...]
) -> None:
    data = str(tmp_path / "data")

    def serve() -> Served:
        return Served("--data-dir", data, "--jwt-secret", SECRET, *group, ready_lines=2 if group else 1)

    async def before(port: int) -> list[str]:
        sent = [await publish(port, "notes@42", f"note {n}") for n in range(3)]
        for _ in range(4):  # each on a new connection: whichever worker takes it
            assert (await ack(port, "notes@42", sent[0], bearer(token("42")))).status == 200
        return sent

    async def after(port: int, sent: list[str]) -> None:
        for _ in range(4):
            found = await unacked(port, "notes@42", "42")
            assert (found["count"], found["acked"]) == (2, sent[0])
        page = await unacked_stream(port, "notes@42", "42")
        assert [e.id for e in await page.events(2)] == sent[1:]
        page.close()

    with serve() as first:
        sent = asyncio.run(before(first.port))
        asyncio.run(after(first.port, sent))
    with serve() as second:
        asyncio.run(after(second.port, sent))


@pytest.mark.kind("cluster")
@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary (.ci/run installs it)")
def test_with_the_redis_broker_acknowledgements_live_in_redis_for_every_node() -> None:
    redis = RedisServer()

    def node() -> Served:
        return Served("--broker", redis.url, "--jwt-secret", SECRET, "--heartbeat", "30")

    async def scenario(first: int, second: int) -> None:
        sent = [await publish(first, "notes@42", f"note {n}") for n in range(3)]
        answer = await ack(second, "notes@42", sent[0], bearer(token("42")))
        assert answer.status == 200 and answer.json()["acked"] == sent[0]
        assert (await ack(first, "notes@42", "0-1", bearer(token("42")))).json()["acked"] == sent[
            0
        ]  # never back
        found = await unacked(first, "notes@42", "42")
        assert (found["count"], found["newest"], found["acked"], found["complete"]) == (
            2,
            sent[2],
            sent[0],
            True,
        )
        page = await unacked_stream(second, "notes@42", "42")
        assert [e.id for e in await page.events(2)] == sent[1:]
        page.close()

    try:
        with node() as first, node() as second:
            asyncio.run(scenario(first.port, second.port))
    finally:
        redis.close()
