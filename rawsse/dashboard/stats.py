"""The `$stats` topic: once a second, while anyone subscribes, the server publishes its
figures there as JSON. The dashboard computes rates from the deltas of the counters.

    {"version": "0.1.0", "uptime": 12.0, "streams_open": 3, "events_published": 41, ...,
     "workers": [{"worker": 0, "pid": 4242, "uptime": 12.0, "streams_open": 3, ...}]}

The top-level figures are the sums over `workers`; with one process the list has one
entry, and a server of several worker processes lists one entry per worker.
No I/O here: figures in, an event for the hub out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from rawsse import __version__
from rawsse.hub.hub import Hub, Overloaded
from rawsse.metrics import Metrics
from rawsse.proto.publish import PublishItem
from rawsse.proto.topics import STATS_TOPIC

COUNTERS = (
    "events_published",
    "deliveries",
    "bytes_written",
    "slow_consumers",
    "resumes",
    "resets",
    "streams_opened",
    "streams_closed",
)
"""Cumulative counters, summed over workers; `streams_open` is the one gauge."""

Figures = dict[str, Any]


def worker_figures(metrics: Metrics, worker: int, pid: int, uptime: float) -> Figures:
    """One worker's entry of the `workers` list."""
    figures: Figures = {"worker": worker, "pid": pid, "uptime": round(uptime, 3)}
    figures["streams_open"] = metrics.streams_open
    for name in COUNTERS:
        figures[name] = getattr(metrics, name)
    return figures


def snapshot(workers: Sequence[Figures], uptime: float) -> Figures:
    """The whole server's figures: the workers' sums, and the workers themselves."""
    document: Figures = {"version": __version__, "uptime": round(uptime, 3)}
    for name in ("streams_open", *COUNTERS):
        document[name] = sum(worker[name] for worker in workers)
    document["workers"] = list(workers)
    return document


def encode(document: Figures) -> str:
    return json.dumps(document, separators=(",", ":"))


class StatsPublisher:
    """Publishes this process's figures on `$stats`; called by the server's sweep."""

    def __init__(self, hub: Hub, metrics: Metrics, started: float, worker: int = 0) -> None:
        self._hub = hub
        self._metrics = metrics
        self._started = started
        self._worker = worker
        self._pid = os.getpid()

    def publish(self, now: float) -> str | None:
        """Publish one snapshot if a stream subscribes to `$stats`; returns its id."""
        if not self._hub.subscriptions.groups_of_topic(STATS_TOPIC):
            return None  # nobody is looking: no JSON, no history entry
        uptime = now - self._started
        figures = worker_figures(self._metrics, self._worker, self._pid, uptime)
        item = PublishItem((STATS_TOPIC,), encode(snapshot([figures], uptime)))
        try:
            event_id = self._hub.publish([item])[0]
        except Overloaded:
            return None  # publishers come first; the page skips a second
        # events_published counts what publishers sent, so the page's events/s does not
        # count its own event a second. deliveries and bytes_written do include it: those
        # are writes the server really made.
        self._metrics.events_published -= 1
        return event_id
