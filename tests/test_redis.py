"""`--broker redis://`: rawsse nodes as a cluster over a real redis-server that the tests
start on a free loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from rawsse.core.hub import RESET_EVENT
from tests.helpers import StreamClient, post, publish, read_response
from tests.processes import REDIS_SERVER, RedisServer, Served

KIND = "cluster"

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="no redis-server binary (Debian: apt install redis-server; .ci/run does)"
)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


def node(redis: RedisServer, *args: str) -> Served:
    return Served("--broker", redis.url, "--heartbeat", "30", *args)


def test_a_publish_on_one_node_reaches_a_subscriber_on_the_other(redis: RedisServer) -> None:
    with node(redis) as first, node(redis) as second:

        async def scenario() -> None:
            here = await StreamClient.open(first.port, "topic=a")
            there = await StreamClient.open(second.port, "topic=a&topic=b")
            ids = [await publish(first.port, "a", "one"), await publish(second.port, "b", "two\nlines")]
            ids.append(await publish(first.port, "a", "three", event="named"))
            got_there = await there.events(3)
            expected = list(zip(ids, ["one", "two\nlines", "three"], strict=True))
            assert [(e.id, e.data) for e in got_there] == expected
            assert got_there[2].event == "named"
            assert [(e.id, e.data) for e in await here.events(2)] == [(ids[0], "one"), (ids[2], "three")]
            here.close()
            there.close()

        asyncio.run(scenario())


def test_a_batch_is_one_pipeline_and_keeps_its_order(redis: RedisServer) -> None:
    with node(redis) as first:

        async def scenario() -> None:
            stream = await StreamClient.open(first.port, "topic=a")
            body = b'[{"topic": "a", "data": "1"}, {"topic": "a", "data": "2"}, {"topic": "a", "data": "3"}]'
            answer = await post(first.port, "/publish", body, "application/json")
            assert answer.status == 200
            events = await stream.events(3)
            assert [e.data for e in events] == ["1", "2", "3"]
            assert [e.id for e in events] == answer.json()["ids"]
            stream.close()

        asyncio.run(scenario())


def test_a_client_resumes_on_another_node_and_on_a_restarted_one(redis: RedisServer) -> None:
    with node(redis) as first:
        second = node(redis)

        async def scenario() -> None:
            stream = await StreamClient.open(first.port, "topic=a")
            seen = await publish(first.port, "a", "seen")
            await stream.next_event()
            stream.close()
            await publish(first.port, "a", "missed 1")
            await publish(first.port, "b", "other topic")
            await publish(first.port, "a", "missed 2")
            resumed = await StreamClient.open(second.port, "topic=a", {"Last-Event-ID": seen})
            assert [e.data for e in await resumed.events(2)] == ["missed 1", "missed 2"]
            resumed.close()

        asyncio.run(scenario())
        second.stop()

        async def after_restart(port: int) -> None:
            # A node started after the events were published loads them from Redis.
            seen = await publish(first.port, "c", "seen")
            await publish(first.port, "c", "while the node was down")
            resumed = await StreamClient.open(port, "topic=c", {"Last-Event-ID": seen})
            event = await resumed.next_event()
            assert (event.event, event.data) == ("message", "while the node was down")
            resumed.close()

        with node(redis) as restarted:
            asyncio.run(after_restart(restarted.port))


def test_redis_killed_and_restarted_publishing_answers_503_streams_stay_open(redis: RedisServer) -> None:
    with node(redis) as first, node(redis) as second:

        async def scenario() -> None:
            streams = [
                await StreamClient.open(first.port, "topic=a"),
                await StreamClient.open(second.port, "topic=a"),
            ]
            before = await publish(first.port, "a", "before")
            for stream in streams:
                assert (await stream.next_event()).id == before
            redis.kill()
            for _ in range(3):
                answer = await post(first.port, "/publish", b"topic=a&data=lost")
                assert answer.status == 503 and answer.headers.get("retry-after") == "1", answer.body
            redis.start()
            # The client's side of a 503: retry until accepted (Retry-After says 1 s).
            while True:
                answer = await post(second.port, "/publish", b"topic=a&data=after")
                if answer.status == 200:
                    break
                assert answer.status == 503
                await asyncio.sleep(0.1)
            after = answer.json()["id"]
            for stream in streams:  # the same connections: they stayed open
                event = await stream.next_event()
                assert (event.id, event.data) == (after, "after")
                assert event.event != RESET_EVENT
                stream.close()

        asyncio.run(scenario())


def test_events_lost_by_redis_reach_clients_as_a_reset_not_as_silence(redis: RedisServer) -> None:
    """Redis comes back without the events this node had not read (here: without any):
    the node cannot replay them, so it closes its streams and their resume says so."""
    with node(redis) as first:

        async def scenario() -> None:
            stream = await StreamClient.open(first.port, "topic=a")
            seen = await publish(first.port, "a", "seen")
            assert (await stream.next_event()).id == seen
            redis.lose_data()
            redis.start()
            assert await stream.until_closed() == []  # the node closed it
            resumed = await StreamClient.open(first.port, "topic=a", {"Last-Event-ID": seen})
            event = await resumed.next_event()
            assert event.event == RESET_EVENT and json.loads(event.data) == {"reason": "history-exceeded"}
            resumed.close()

        asyncio.run(scenario())


def test_a_client_that_half_closes_after_publishing_still_gets_its_answer(redis: RedisServer) -> None:
    with node(redis) as first:

        async def scenario() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", first.port)
            body = b"topic=a&data=x"
            writer.write(
                b"POST /publish HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            writer.write_eof()  # the answer comes after a Redis round trip
            answer = await read_response(reader)
            assert answer.status == 200 and answer.json()["id"]
            assert await asyncio.wait_for(reader.read(1), 10) == b""
            writer.close()

        asyncio.run(scenario())
