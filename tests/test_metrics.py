"""What /metrics tells an operator: histograms of publish-to-socket latency and of fan-out
passes, publishes by route, the fan-out queue, and the process figures every Prometheus
client gives — without sockets where the figures are plain arithmetic, and over a real
server for what the server counts."""

from __future__ import annotations

import json
import os

import pytest
from websockets.asyncio.client import connect

from rawsse.core.metrics import LATENCY_BUCKETS, SHARED_FIELDS, Histogram, Metrics, quantile
from rawsse.dashboard.stats import shared_figures, snapshot, worker_figures
from rawsse.reactor.server import Server
from tests.helpers import StreamClient, get, publish, run_with_server, wait_for
from tests.processes import parse_metrics

KIND = "unit"


def test_a_histogram_counts_each_observation_in_its_bucket() -> None:
    histogram = Histogram()
    for seconds in (0.0001, 0.0005, 0.0007, 0.03, 99.0):
        histogram.observe(seconds)
    assert histogram.counts[0] == 2  # at or under 0.5 ms (Prometheus' `le`)
    assert histogram.counts[1] == 1  # 0.5 to 1 ms
    assert histogram.counts[LATENCY_BUCKETS.index(0.05)] == 1
    assert histogram.counts[-1] == 1  # past the last bound
    assert sum(histogram.counts) == 5 and histogram.sum == pytest.approx(99.0313)


def test_quantiles_are_interpolated_within_their_bucket() -> None:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    assert quantile(counts, 0.5) is None
    counts[LATENCY_BUCKETS.index(0.01)] = 100  # all between 5 and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert quantile(counts, 0.99) == pytest.approx(0.00995)
    counts[-1] = 1000  # most beyond the last bound: the histogram knows no more than that bound
    assert quantile(counts, 0.99) == LATENCY_BUCKETS[-1]


def test_the_exposition_has_the_histograms_routes_and_process_figures() -> None:
    metrics = Metrics()
    metrics.publish_latency.observe(0.002)
    metrics.published_http, metrics.published_ws, metrics.published_local = 3, 2, 1
    metrics.process_cpu_micros, metrics.process_open_fds = 2_500_000, 40
    text = metrics.render().decode()
    values = parse_metrics(text)
    assert values['rawsse_publish_latency_seconds_bucket{le="0.001"}'] == 0
    assert values['rawsse_publish_latency_seconds_bucket{le="0.0025"}'] == 1
    assert values['rawsse_publish_latency_seconds_bucket{le="+Inf"}'] == 1
    assert values["rawsse_publish_latency_seconds_count"] == 1
    assert values["rawsse_publish_latency_seconds_sum"] == pytest.approx(0.002)
    assert values["rawsse_fanout_pass_seconds_count"] == 0
    assert [values[f'rawsse_publishes_total{{route="{r}"}}'] for r in ("http", "ws", "local")] == [3, 2, 1]
    assert values["process_cpu_seconds_total"] == 2.5 and values["process_open_fds"] == 40
    assert "# TYPE rawsse_publish_latency_seconds histogram" in text
    assert "rawsse_published_http" not in text  # only under its label


def test_every_worker_shares_its_histograms_and_is_rendered_apart() -> None:
    one, two = Metrics(), Metrics()
    one.publish_latency.observe(0.0002)
    two.publish_latency.observe(0.2)
    shared = [one.shared_values(), two.shared_values()]
    assert len(shared[0]) == SHARED_FIELDS
    values = parse_metrics(one.render(shared).decode())
    assert values['rawsse_publish_latency_seconds_bucket{worker="0",le="0.0005"}'] == 1
    assert values['rawsse_publish_latency_seconds_bucket{worker="1",le="0.0005"}'] == 0
    assert values['rawsse_publish_latency_seconds_count{worker="1"}'] == 1
    assert values['process_open_fds{worker="1"}'] == 0
    # The dashboard's snapshot sums the workers' histograms for its percentiles.
    document = snapshot([worker_figures(one, 0, 1, 1.0), shared_figures(shared[1], 1)], 1.0)
    assert document["latency_p50"] == pytest.approx(0.0005)  # the top of the first bucket
    assert 0.1 < document["latency_p99"] <= 0.25


@pytest.mark.kind("integration")
def test_the_server_counts_publishes_by_route_and_times_their_delivery() -> None:
    async def scenario(server: Server) -> None:
        stream = await StreamClient.open(server.port, "topic=t")
        await publish(server.port, "t", "over http")
        async with connect(f"ws://127.0.0.1:{server.port}/ws?topic=other") as ws:
            await ws.send(json.dumps({"type": "publish", "topic": "t", "data": "over ws"}))
            assert json.loads(await ws.recv())["type"] == "published"
        server.publish("t", "in process")
        assert [(await stream.next_event()).data for _ in range(3)] == ["over http", "over ws", "in process"]
        await wait_for(lambda: server.metrics.publish_latency.counts != [0] * 14, "the passes' timing")
        answer = await get(server.port, "/metrics")
        values = parse_metrics(answer.body.decode())
        routes = [values[f'rawsse_publishes_total{{route="{r}"}}'] for r in ("http", "ws", "local")]
        assert routes == [1, 1, 1]
        assert values["rawsse_publish_latency_seconds_count"] == 3
        assert values["rawsse_publish_latency_seconds_sum"] < 1
        assert values["rawsse_fanout_pass_seconds_count"] >= 1
        assert values["rawsse_queued_bytes"] == 0  # every pass is over
        stream.close()

    run_with_server(("uvloop", "epoll"), scenario)


@pytest.mark.kind("integration")
def test_the_process_figures_are_read_by_the_sweep() -> None:
    async def scenario(server: Server) -> None:
        await wait_for(lambda: server.metrics.process_open_fds > 0, "the first sweep")
        values = parse_metrics((await get(server.port, "/metrics")).body.decode())
        assert values["process_resident_memory_bytes"] > 10_000_000  # a Python process
        assert values["process_open_fds"] >= 3
        assert values["process_cpu_seconds_total"] > 0

    run_with_server(("uvloop", "epoll"), scenario)


def test_large_figures_keep_every_digit() -> None:
    """Prometheus reads the numbers as they are printed: no rounding to six digits."""
    metrics = Metrics()
    metrics.process_resident_bytes = 123_456_789
    metrics.process_cpu_micros = 1_234_567_891
    metrics.publish_latency.observe(1234.000001)
    text = metrics.render().decode()
    assert "\nprocess_resident_memory_bytes 123456789\n" in text
    assert "\nprocess_cpu_seconds_total 1234.567891\n" in text
    assert "\nrawsse_publish_latency_seconds_sum 1234.000001\n" in text


def test_descriptors_are_listed_less_often_the_more_a_process_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty workers of 20,000 streams each must not list a million descriptors a second."""
    from rawsse.reactor import process_figures

    listings: list[float] = []
    held = [100]

    def listing() -> int:
        listings.append(now[0])
        return held[0]

    now = [0.0]
    monkeypatch.setattr(process_figures, "_open_fds", listing)
    figures, metrics = process_figures.ProcessFigures(), Metrics()
    for second in range(4):
        now[0] = float(second)
        figures.sample(metrics, now[0])
    assert listings == [0.0, 1.0, 2.0, 3.0]  # a few descriptors: every sweep
    held[0] = 20_000
    listings.clear()
    for second in range(4, 30):
        now[0] = float(second)
        figures.sample(metrics, now[0])
    assert listings == [4.0, 14.0, 24.0] and metrics.process_open_fds == 20_000


def test_the_open_descriptor_count_follows_the_descriptors_opened_and_closed() -> None:
    from rawsse.reactor import process_figures

    before = process_figures._open_fds()
    pipes = [os.pipe() for _ in range(50)]
    try:
        assert process_figures._open_fds() == before + 100
    finally:
        for reading, writing in pipes:
            os.close(reading)
            os.close(writing)
    assert process_figures._open_fds() == before
