"""Streams end to end over loopback: subscribe, publish, topics, resume, heartbeats,
slow consumers, shutdown. Each test runs on both loops and both stream backends."""

from __future__ import annotations

import asyncio
import json

from rawsse import RESET_EVENT
from rawsse.reactor.server import Server
from tests.helpers import StreamClient, get, post, publish, run_with_server, wait_for

KIND = "integration"


def test_stream_head_and_first_event(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=news")
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream"
        assert client.headers["cache-control"] == "no-cache"
        assert client.headers["x-accel-buffering"] == "no"
        event_id = await publish(server.port, "news", "hello", event="greeting")
        event = await client.next_event()
        assert (event.data, event.event, event.id) == ("hello", "greeting", event_id)
        assert client.parser.retry == 3000
        client.close()

    run_with_server(backend, scenario)


def test_multiline_and_injection_attempts_arrive_as_data(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=news")
        await publish(server.port, "news", "one\r\ntwo\rthree\nid: 999\r\nevent: evil\n\nünïcödé ✓")
        event = await client.next_event()
        assert event.data == "one\ntwo\nthree\nid: 999\nevent: evil\n\nünïcödé ✓"
        assert event.event == "message"
        assert not event.id.endswith("999")
        client.close()

    run_with_server(backend, scenario)


def test_multi_topic_stream_gets_only_its_topics_in_id_order(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        both = await StreamClient.open(server.port, "topic=a&topic=b")
        only_b = await StreamClient.open(server.port, "topic=b")
        ids = [
            await publish(server.port, "a", "a1"),
            await publish(server.port, "c", "c1"),
            await publish(server.port, "b", "b1"),
            await publish(server.port, ["a", "b"], "ab"),
        ]
        got = await both.events(3)
        assert [e.data for e in got] == ["a1", "b1", "ab"]
        assert [e.id for e in got] == [ids[0], ids[2], ids[3]]
        assert [e.data for e in await only_b.events(2)] == ["b1", "ab"]
        both.close()
        only_b.close()

    run_with_server(backend, scenario)


def test_events_published_in_a_burst_arrive_once_and_in_order(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        clients = [await StreamClient.open(server.port, "topic=t") for _ in range(20)]
        batch = [{"topic": "t", "data": str(n)} for n in range(500)]
        answer = await post(server.port, "/publish", json.dumps(batch).encode(), "application/json")
        assert answer.status == 200
        assert len(answer.json()["ids"]) == 500
        for client in clients:
            assert [e.data for e in await client.events(500)] == [str(n) for n in range(500)]
            client.close()

    run_with_server(backend, scenario, fanout_slice=7)


def test_resume_replays_missed_events_without_gap_or_duplicate(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        first = await StreamClient.open(server.port, "topic=a&topic=b")
        await publish(server.port, "a", "1")
        seen = await first.next_event()
        first.close()
        for data in ("2", "3"):
            await publish(server.port, "a", data)
        await publish(server.port, "other", "not mine")
        await publish(server.port, "b", "4")
        resumed = await StreamClient.open(server.port, "topic=a&topic=b", {"Last-Event-ID": seen.id})
        await publish(server.port, "a", "5")
        assert [e.data for e in await resumed.events(4)] == ["2", "3", "4", "5"]
        # A client that cannot set headers uses the query parameter.
        by_query = await StreamClient.open(server.port, f"topic=a&lastEventId={seen.id}")
        assert [e.data for e in await by_query.events(3)] == ["2", "3", "5"]
        resumed.close()
        by_query.close()

    server = run_with_server(backend, scenario)
    assert server.metrics.resumes == 2
    assert server.metrics.resets == 0


def test_resume_from_unusable_ids_opens_with_explicit_reset(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        await publish(server.port, "a", "old")
        current = await publish(server.port, "a", "current")
        cases = {
            "malformed-id": "not an id",
            "unknown-epoch": "00000000-1",
            "unknown-id": current.split("-")[0] + "-999999",
            "history-exceeded": current.split("-")[0] + "-0",
        }
        for reason, last_id in cases.items():
            client = await StreamClient.open(server.port, "topic=a", {"Last-Event-ID": last_id})
            assert client.status == 200
            reset = await client.next_event()
            assert reset.event == RESET_EVENT
            assert json.loads(reset.data) == {"reason": reason}
            if reason == "history-exceeded":  # what history still holds follows the reset
                assert (await client.next_event()).data == "current"
            else:
                assert reset.id == current  # the client's next resume is from here
            client.close()
        long_id = await StreamClient.open(server.port, "topic=a", {"Last-Event-ID": "9" * 200})
        assert long_id.status == 200
        assert json.loads((await long_id.next_event()).data) == {"reason": "malformed-id"}
        long_id.close()

    run_with_server(backend, scenario, history=1)


def test_heartbeat_comments_reach_every_stream(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        clients = [await StreamClient.open(server.port, f"topic=t{n}") for n in range(3)]
        for client in clients:
            await client.until_comment()
            client.close()

    run_with_server(backend, scenario, heartbeat=1)


def test_disconnects_free_their_slots(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        for _ in range(3):
            clients = [await StreamClient.open(server.port, "topic=t") for _ in range(50)]
            await wait_for(lambda: server.metrics.streams_open == 50, "streams to open")
            for client in clients:
                client.close()
            await wait_for(lambda: server.metrics.streams_open == 0, "streams to close")
        await publish(server.port, "t", "after")  # nobody left: nothing to write, no error

    server = run_with_server(backend, scenario)
    assert server.metrics.streams_opened == server.metrics.streams_closed == 150


def test_slow_consumer_is_cut_at_the_cap_and_can_resume(backend: tuple[str, str]) -> None:
    cap = 256 * 1024

    async def scenario(server: Server) -> None:
        slow = await StreamClient.open(server.port, "topic=t")
        fast = await StreamClient.open(server.port, "topic=t")
        payload = "x" * 16384
        ids = []
        # The slow client reads nothing; the socket buffers fill, then our cap trips.
        while server.metrics.slow_consumers == 0:
            ids.append(await publish(server.port, "t", payload))
            assert (await fast.next_event()).id == ids[-1]  # the fast reader keeps up throughout
            assert len(ids) < 2000, "the slow consumer was never cut"
        received = await slow.until_closed()
        assert received, "some events were delivered before the cut"
        last = received[-1].id
        missed = ids[ids.index(last) + 1 :]
        # More was missed than one stream may buffer, so the replay comes in pages: each
        # resume sends one and closes, and the next resume continues from its last id.
        replayed: list[str] = []
        pages = 0
        while len(replayed) < len(missed):
            resumed = await StreamClient.open(server.port, "topic=t", {"Last-Event-ID": last})
            pages += 1
            try:
                while len(replayed) < len(missed):
                    replayed.append((await resumed.next_event()).id)
            except EOFError:  # the end of a page
                pass
            assert replayed and replayed[-1] != last, "a page holds at least one event"
            last = replayed[-1]
            resumed.close()
        assert replayed == missed
        assert pages > 1
        fast.close()

    server = run_with_server(backend, scenario, max_pending_bytes=cap, history=5000)
    assert server.metrics.slow_consumers == 1


def test_a_few_thousand_streams_lose_nothing(backend: tuple[str, str]) -> None:
    streams, events = 2000, 30

    async def scenario(server: Server) -> None:
        clients = await asyncio.gather(
            *(StreamClient.open(server.port, f"topic=all&topic=g{n % 10}") for n in range(streams))
        )
        for n in range(events):
            await publish(server.port, "all" if n % 2 else f"g{n % 10}", str(n))
        expected_per_group = {g: [str(n) for n in range(events) if n % 2 or n % 10 == g] for g in range(10)}
        for index, client in enumerate(clients):
            expected = expected_per_group[index % 10]
            assert [e.data for e in await client.events(len(expected))] == expected
            client.close()

    run_with_server(backend, scenario, fanout_slice=256)


def test_shutdown_closes_streams_after_delivering_what_was_published(backend: tuple[str, str]) -> None:
    received: list[str] = []

    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=t")
        for n in range(100):
            server.publish("t", str(n))
        stop = asyncio.ensure_future(server.stop())
        received.extend(e.data for e in await client.until_closed())
        await stop
        refused = True
        try:
            await get(server_port, "/healthz")
            refused = False
        except OSError:
            pass
        assert refused, "the listener still accepts after stop()"

    server_port = 0

    async def with_port(server: Server) -> None:
        nonlocal server_port
        server_port = server.port
        await scenario(server)

    run_with_server(backend, with_port)
    assert received == [str(n) for n in range(100)]


def test_publish_threadsafe_from_another_thread(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=t")
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(None, lambda: server.publish_threadsafe("t", "from a thread"))
        event_id = await asyncio.wrap_future(future)
        event = await client.next_event()
        assert (event.data, event.id) == ("from a thread", event_id)
        client.close()

    run_with_server(backend, scenario)


def test_a_large_coalesced_burst_is_not_mistaken_for_a_slow_reader(backend: tuple[str, str]) -> None:
    """One pass may write far more than the cap at once; only a backlog behind it counts."""

    async def scenario(server: Server) -> None:
        client = await StreamClient.open(server.port, "topic=t", slow=True)
        await wait_for(lambda: server.metrics.streams_open == 1, "the stream to open")
        for n in range(100):  # published without yielding: one coalesced write of ~3 MB
            server.publish("t", f"{n}:" + "x" * 30_000)
        # The write is far more than the socket takes at once, and the reader has not read:
        # the stream is behind when a small event queues behind the big write.
        await wait_for(lambda: server.streams.has_pending, "the big write to be in progress")
        server.publish("t", "last")
        events = await client.events(101)
        assert events[-1].data == "last"
        assert [e.data.split(":")[0] for e in events[:100]] == [str(n) for n in range(100)]
        client.close()

    server = run_with_server(backend, scenario, max_pending_bytes=64 * 1024)
    assert server.metrics.slow_consumers == 0
