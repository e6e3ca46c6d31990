"""Private topics and presence across processes: with `--workers 2` and with two nodes of
a Redis cluster, a user's topic reaches every stream of that user wherever it is
connected and no one else's, `/disconnect?user=` closes them all, and `/presence` counts
every process's streams (a dead node's record expires)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT, StreamClient, post, publish, wait_until
from tests.processes import REDIS_SERVER, RedisServer, Served
from tests.test_presence import presence
from tests.tokens import SECRET, token
from tests.tokens import bearer as as_bearer

KIND = "cluster"


def bearer(sub: str) -> dict[str, str]:
    return as_bearer(token(sub))


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAWSSE_JWT_SECRET", SECRET)  # the servers started below inherit it
    monkeypatch.setenv("RAWSSE_PUBLIC_TOPICS", "room")


async def users_topic_and_kick(ports: list[int], spread: str) -> None:
    """Streams of user 42 on every port (several per port, so every worker holds some),
    one stream of user 43; the user's topic reaches all of 42's, the kick ends them."""
    mine, places = [], set()
    for port in ports:
        for _ in range(8):
            client = await StreamClient.open(port, "topic=feed@42", bearer("42"))
            mine.append(client)
            places.add((port, client.headers.get("x-rawsse-worker")))
    assert len(places) >= 2, f"the streams should be on both {spread}: {places}"
    other = await StreamClient.open(ports[-1], "topic=feed@43", bearer("43"))
    to_42 = await publish(ports[0], "feed@42", "for 42")
    for client in mine:
        assert (await client.next_event()).data == "for 42"
    to_43 = await publish(ports[0], "feed@43", "for 43")
    assert (await other.next_event()).id == to_43  # the first it got: nothing of 42's
    assert to_42 != to_43
    answer = await post(ports[-1], "/disconnect?user=42", b"")
    assert (answer.status, answer.json()) == (200, {"user": "42"})
    for client in mine:
        events = await client.until_closed()
        assert [(e.event, json.loads(e.data)) for e in events] == [
            ("rawsse-reset", {"reason": "disconnected"})
        ]
    still = await publish(ports[0], "feed@43", "still here")
    assert (await other.next_event()).id == still
    other.close()


def test_sighup_reaches_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAWSSE_JWT_SECRET")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    with Served("--workers", "2", "--jwt-secret-file", str(secret_file), ready_lines=2) as served:
        served.process.send_signal(signal.SIGHUP)
        served.wait_for_lines("token keys reloaded", 2)
        assert served.process.poll() is None


def test_across_two_workers() -> None:
    with Served("--workers", "2", "--heartbeat", "30", ready_lines=2) as served:
        asyncio.run(users_topic_and_kick([served.port], "workers"))


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("no redis-server binary (Debian: apt install redis-server; .ci/run does)")
    server = RedisServer()
    yield server
    server.close()


def test_across_two_redis_nodes(redis: RedisServer) -> None:
    with Served("--broker", redis.url) as first, Served("--broker", redis.url) as second:
        asyncio.run(users_topic_and_kick([first.port, second.port], "nodes"))


# Presence


async def open_users(port: int, count: int, prefix: str) -> list[StreamClient]:
    return [await StreamClient.open(port, "topic=room", bearer(f"{prefix}{n % 3}")) for n in range(count)]


def test_presence_across_two_workers() -> None:
    with Served("--workers", "2", "--heartbeat", "30", ready_lines=2) as served:

        async def scenario() -> None:
            streams = await open_users(served.port, 12, "w")
            assert len({s.headers.get("x-rawsse-worker") for s in streams}) == 2
            for _ in range(4):  # whichever worker answers, it counts both
                status, body = await presence(served.port, "room")
                assert (status, body["streams"], body["users"], body["complete"]) == (
                    200,
                    12,
                    ["w0", "w1", "w2"],
                    True,
                )
            for client in streams:
                client.close()

        asyncio.run(scenario())


def test_presence_across_two_redis_nodes_and_after_one_dies(redis: RedisServer) -> None:
    with Served("--broker", redis.url) as first, Served("--broker", redis.url) as second:

        async def scenario() -> None:
            here = await open_users(first.port, 2, "a")
            there = await open_users(second.port, 3, "b")
            # A node counts the others it has seen in the live-node set (renewed each second).
            deadline = time.monotonic() + TIMEOUT
            while (body := (await presence(first.port, "room"))[1])[
                "streams"
            ] < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # the first node has not seen the second's record yet
            assert (body["streams"], body["users"], body["complete"]) == (
                5,
                ["a0", "a1", "b0", "b1", "b2"],
                True,
            )
            second.process.send_signal(signal.SIGKILL)
            second.process.wait()
            for client in there:
                client.close()
            # Until its record expires, the dead node is waited for and the answer says so.
            _, body = await presence(first.port, "room")
            assert (body["streams"], body["complete"]) == (2, False)
            for client in here:
                client.close()

        asyncio.run(scenario())

        async def complete() -> bool:
            _, body = await presence(first.port, "room")
            return bool(body["complete"]) and body["streams"] == 0

        wait_until(lambda: asyncio.run(complete()), "the dead node's record expired", timeout=15)
