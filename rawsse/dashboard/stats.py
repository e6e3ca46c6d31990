"""The `$stats` topic: once a second, while anyone subscribes, the server publishes its
figures there as JSON. The dashboard computes rates from the deltas of the counters.

    {"version": "0.1.0", "uptime": 12.0, "streams_open": 3, "events_published": 41, ...,
     "latency_p50": 0.0004, "latency_p99": 0.0031,
     "workers": [{"worker": 0, "pid": 4242, "uptime": 12.0, "streams_open": 3, ...}]}

The top-level figures are the sums over `workers`, and the publish-to-socket latency's
p50 and p99 (seconds, since the start, from the summed histograms; null before any
event); with one process the list has one entry, and a server of several worker
processes lists one entry per worker: worker 0 publishes them all (the others' figures
as of their last once-a-second sweep), so the page sees one snapshot a second whichever
worker it is connected to. With a Redis broker nothing is published (the nodes would
interleave their snapshots): the dashboard shows one process or one machine.
The figures are plain arithmetic; the event goes to the broker of this machine, which
takes it before it returns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from rawsse import __version__
from rawsse.broker.base import Broker, Reach
from rawsse.core.metrics import LATENCY_BUCKETS, SERIES, Metrics, quantile
from rawsse.core.publish import PublishItem
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.topics import STATS_TOPIC
from rawsse.errors import Overloaded

COUNTERS = (
    "events_published",
    "deliveries",
    "bytes_written",
    "slow_consumers",
    "send_timeouts",
    "resumes",
    "resets",
    "streams_opened",
    "streams_closed",
)
"""Cumulative counters, summed over workers."""

GAUGES = ("streams_open", "ws_streams_open")
"""Streams open now, all of them and the WebSocket ones among them; summed over workers."""

Figures = dict[str, Any]


def worker_figures(metrics: Metrics, worker: int, pid: int, uptime: float) -> Figures:
    """This process's entry of the `workers` list."""
    figures: Figures = {"worker": worker, "pid": pid, "uptime": round(uptime, 3)}
    for name in (*GAUGES, *COUNTERS):
        figures[name] = getattr(metrics, name)
    figures["latency"] = metrics.publish_latency.counts[:]
    return figures


def shared_figures(values: Sequence[int], worker: int) -> Figures:
    """Another worker's entry, from the counters it shares (Metrics.shared_values)."""
    figures: Figures = {"worker": worker}
    shared = values[: len(SERIES)]  # the shared slot has room for more series
    figures.update((name, value) for (name, *_), value in zip(SERIES, shared, strict=True))
    start = len(SERIES)  # the publish latency's histogram comes first after them
    figures["latency"] = list(values[start : start + len(LATENCY_BUCKETS) + 1])
    return figures


def snapshot(workers: Sequence[Figures], uptime: float) -> Figures:
    """The whole server's figures: the workers' sums, and the workers themselves."""
    document: Figures = {"version": __version__, "uptime": round(uptime, 3)}
    for name in (*GAUGES, *COUNTERS):
        document[name] = sum(worker[name] for worker in workers)
    latency = [sum(counts) for counts in zip(*(worker["latency"] for worker in workers), strict=True)]
    document["latency_p50"] = _rounded(quantile(latency, 0.5))
    document["latency_p99"] = _rounded(quantile(latency, 0.99))
    document["workers"] = list(workers)
    return document


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def encode(document: Figures) -> str:
    return json.dumps(document, separators=(",", ":"))


class StatsPublisher:
    """Publishes the server's figures on `$stats`; called by the server's sweep."""

    def __init__(
        self, broker: Broker, subscriptions: Subscriptions, metrics: Metrics, started: float, worker: int = 0
    ) -> None:
        self._broker, self._subscriptions, self._metrics = broker, subscriptions, metrics
        self._started, self._worker = started, worker
        self._pid = os.getpid()

    def publish(self, now: float) -> str | None:
        """Publish one snapshot if a stream subscribes to `$stats`; returns its id."""
        reach = self._broker.reach
        if reach is Reach.CLUSTER:
            return None  # a cluster node: see the module's docstring
        if reach is Reach.WORKERS and self._worker != 0:
            return None  # worker 0 speaks for all (its subscribers may be elsewhere)
        if reach is Reach.PROCESS and not self._subscriptions.groups_of_topic(STATS_TOPIC):
            return None  # nobody is looking: no JSON, no history entry
        shared = self._broker.worker_metrics()
        uptime = now - self._started
        own = worker_figures(self._metrics, self._worker, self._pid, uptime)
        if shared is None:
            workers = [own]
        else:
            workers = [own if i == self._worker else shared_figures(v, i) for i, v in enumerate(shared)]
        item = PublishItem((STATS_TOPIC,), encode(snapshot(workers, uptime)))
        try:
            # Straight to the broker, so not counted in events_published (what publishers
            # sent); deliveries and bytes_written do count it: those writes are real.
            return self._broker.publish_now([item])[0]
        except Overloaded:
            return None  # publishers come first; the page skips a second
