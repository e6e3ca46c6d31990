"""`rawsse serve --workers 2`: real worker processes sharing one port and one event order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect

from rawsse.core.hub import RESET_EVENT
from rawsse.flood.options import FloodOptions
from rawsse.flood.run import run_flood
from tests.helpers import TIMEOUT, StreamClient, publish, wait_until
from tests.processes import START_TIMEOUT, Served, parse_metrics

KIND = "integration"

WORKERS = 2


@pytest.fixture
def served() -> Served:
    with Served("--workers", str(WORKERS), "--heartbeat", "30", ready_lines=WORKERS) as served:
        yield served  # type: ignore[misc]


def worker_metric(port: int, name: str) -> list[float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        values = parse_metrics(answer.read().decode())
    return [values.get(f'rawsse_{name}{{worker="{i}"}}', -1) for i in range(WORKERS)]


def total(port: int, name: str) -> float:
    return sum(worker_metric(port, name))


def test_a_publish_on_any_worker_reaches_every_stream_on_every_worker_in_one_order(served: Served) -> None:
    async def scenario() -> list[list[tuple[str, str]]]:
        streams = [await StreamClient.open(served.port, "topic=news") for _ in range(16)]
        # Each publish is a new connection, so the kernel spreads them over the workers.
        for n in range(20):
            await publish(served.port, "news", f"event {n}")
        received = [[(e.id, e.data) for e in await s.events(20)] for s in streams]
        for s in streams:
            s.close()
        return received

    received = asyncio.run(scenario())
    assert all(r == received[0] for r in received)
    assert [data for _, data in received[0]] == [f"event {n}" for n in range(20)]
    ids = [event_id for event_id, _ in received[0]]
    assert len(set(ids)) == 20 and len({i.split("-")[0] for i in ids}) == 1
    # The streams were on both workers (another worker's figures are a sweep old: wait).
    wait_until(lambda: min(worker_metric(served.port, "streams_opened_total")) > 0, "streams on both workers")
    wait_until(lambda: total(served.port, "events_published_total") == 20, "every publish counted")


async def resume_many_times(port: int, rounds: int, published: list[str]) -> list[str]:
    """Reconnect `rounds` times with Last-Event-ID, publishing while away; returns the
    data of every event received, in order."""
    received: list[str] = []
    last_id = await publish(port, "t", "start")
    published.append("start")
    received.append("start")
    for round_number in range(rounds):
        for n in range(3):
            data = f"{round_number}.{n}"
            await publish(port, "t", data)
            published.append(data)
        stream = await StreamClient.open(port, "topic=t", {"Last-Event-ID": last_id})
        events = await stream.events(3)
        stream.close()
        assert RESET_EVENT not in [e.event for e in events]
        received.extend(e.data for e in events)
        last_id = events[-1].id
    return received


def test_a_stream_resumes_on_whichever_worker_it_reconnects_to(served: Served) -> None:
    published: list[str] = []
    received = asyncio.run(resume_many_times(served.port, 16, published))
    assert received == published  # no gap, no duplicate, same order
    wait_until(lambda: min(worker_metric(served.port, "resumes_total")) > 0, "resumes on both workers")
    assert sum(worker_metric(served.port, "resets_total")) == 0


def test_a_killed_worker_is_replaced_and_the_new_one_serves_resumes(served: Served) -> None:
    published: list[str] = []
    asyncio.run(resume_many_times(served.port, 2, published))
    victim = served.children()[0]
    os.kill(victim, signal.SIGKILL)
    served.wait_for_lines("listening on", WORKERS + 1)
    assert victim not in served.children() and len(served.children()) == WORKERS
    served.wait_for_lines("was killed by SIGKILL")

    async def resume_from_the_start() -> list[list[str]]:
        replays = []
        for _ in range(16):  # new connections land on both workers, the new one included
            stream = await StreamClient.open(served.port, "topic=t", {"Last-Event-ID": first_id})
            replays.append([e.data for e in await stream.events(len(published) - 1)])
            stream.close()
        return replays

    first_id = f"{epoch_of(served.port)}-1"
    for replay in asyncio.run(resume_from_the_start()):
        assert replay == published[1:]
    wait_until(lambda: min(worker_metric(served.port, "resumes_total")) > 0, "resumes on both workers")


def epoch_of(port: int) -> str:
    return asyncio.run(publish(port, "other", "x")).split("-")[0]


def test_sigterm_stops_every_worker_and_no_file_is_left(served: Served) -> None:
    children = served.children()
    # The shared log is unlinked as soon as it is made: nothing can leak, however we die.
    prefix = f"rawsse-{served.process.pid}-"
    assert not any(name.startswith(prefix) for name in os.listdir("/dev/shm"))
    assert served.stop() == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)


def test_workers_stop_when_the_supervisor_is_killed(served: Served) -> None:
    children = served.children()
    served.process.kill()
    served.process.wait()
    gone = lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children)  # noqa: E731
    wait_until(gone, "the workers to exit", timeout=START_TIMEOUT)


def test_the_flooder_reports_each_workers_latency(served: Served) -> None:
    options = FloodOptions(
        mode="broadcast",
        url=f"http://127.0.0.1:{served.port}/events",
        streams=60,
        events=30,
        settle=5,
        progress=False,
    )
    result = run_flood(options)
    assert result["summary"]["received"] == result["expected_deliveries"] == 60 * 30
    assert result["summary"]["lost"] == result["summary"]["duplicates"] == 0
    assert set(result["latency_by_worker"]) == {"0", "1"}
    assert all(figures["max"] > 0 for figures in result["latency_by_worker"].values())


def test_the_dashboard_figures_cover_every_worker(served: Served) -> None:
    async def first_snapshot() -> dict[str, Any]:
        stream = await StreamClient.open(served.port, "topic=$stats")
        while True:  # until the worker holding this stream has shared its figures
            document: dict[str, Any] = json.loads((await stream.next_event()).data)
            assert [w["worker"] for w in document["workers"]] == [0, 1]
            if document["streams_open"] >= 1:
                stream.close()
                return document

    document = asyncio.run(first_snapshot())
    assert document["streams_open"] == sum(w["streams_open"] for w in document["workers"])


def test_metrics_give_each_worker_its_process_figures_and_latency(served: Served) -> None:
    async def scenario() -> None:
        streams = [await StreamClient.open(served.port, "topic=news") for _ in range(8)]
        for n in range(5):
            await publish(served.port, "news", f"event {n}")
        for stream in streams:
            assert len(await stream.events(5)) == 5
            stream.close()

    asyncio.run(scenario())
    for figure in ("process_open_fds", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        wait_until(
            lambda figure=figure: min(worker_figure(served.port, figure)) > 0,  # type: ignore[misc]
            f"{figure} of every worker",
        )

    # A worker timed the 5 events if it wrote them to streams of its own (the others'
    # figures are as of their last sweep).
    def timed_where_written() -> bool:
        opened = worker_metric(served.port, "streams_opened_total")
        timed = worker_figure(served.port, "rawsse_publish_latency_seconds_count")
        return timed == [5.0 if n else 0.0 for n in opened]

    wait_until(timed_where_written, "each worker's latency histogram")


def worker_figure(port: int, name: str) -> list[float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        values = parse_metrics(answer.read().decode())
    return [values.get(f'{name}{{worker="{i}"}}', -1) for i in range(WORKERS)]


def test_a_new_stream_gets_only_what_is_published_after_it_opened_on_any_worker(served: Served) -> None:
    """A worker with no stream on a topic is not woken for it, and reads its events only
    later: a stream opening there must find them as history (never live), whichever
    worker it lands on."""

    async def scenario() -> list[list[str]]:
        for n in range(5):  # nobody reads "t" yet: no worker is woken for these
            await publish(served.port, "t", f"before {n}")
        streams = [await StreamClient.open(served.port, "topic=t") for _ in range(16)]
        await publish(served.port, "t", "after")
        received = [[e.data for e in await s.events(1)] for s in streams]
        for s in streams:
            s.close()
        return received

    assert asyncio.run(scenario()) == [["after"]] * 16
    wait_until(lambda: min(worker_metric(served.port, "streams_opened_total")) > 0, "streams on both workers")


def test_a_websocket_taking_a_topic_gets_only_what_is_published_after_on_any_worker(served: Served) -> None:
    """The same for a topic a WebSocket stream subscribes to later."""

    async def scenario() -> list[dict[str, Any]]:
        sockets = [await connect(f"ws://127.0.0.1:{served.port}/ws") for _ in range(16)]
        for n in range(5):  # nobody reads "t" yet: no worker is woken for these
            await publish(served.port, "t", f"before {n}")
        for ws in sockets:
            await ws.send(json.dumps({"type": "subscribe", "topics": ["t"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "subscribed"
        await publish(served.port, "t", "after")
        received = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for ws in sockets]
        for ws in sockets:
            await ws.close()
        return received

    assert [message["data"] for message in asyncio.run(scenario())] == ["after"] * 16
