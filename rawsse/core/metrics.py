"""Counters for /metrics, rendered in the Prometheus text exposition format."""

from __future__ import annotations

import sys
from collections import Counter

from rawsse import __version__

PYTHON = ".".join(map(str, sys.version_info[:3]))


class Metrics:
    """Plain integer counters: incremented on the hot path, so no locks and no labels
    objects; `render()` builds the text only when /metrics is asked for."""

    __slots__ = (
        "bytes_written",
        "connections_dropped",
        "deliveries",
        "events_published",
        "rejected",
        "resets",
        "resumes",
        "slow_consumers",
        "stream_slots",
        "streams_closed",
        "streams_open",
        "streams_opened",
        "streams_refused",
    )

    def __init__(self) -> None:
        self.streams_open = 0
        self.streams_opened = 0
        self.streams_closed = 0
        self.streams_refused = 0
        self.stream_slots = 0
        self.connections_dropped = 0
        self.events_published = 0
        self.deliveries = 0
        self.bytes_written = 0
        self.slow_consumers = 0
        self.resumes = 0
        self.resets = 0
        self.rejected: Counter[int] = Counter()

    def shared_values(self) -> list[int]:
        """The counters in SERIES order, as a worker shares them with the others."""
        return [getattr(self, name) for name, *_ in SERIES]

    def render(self, workers: list[list[int]] | None = None) -> bytes:
        """The exposition text. With `workers` (each worker's shared_values, by index),
        every series is given per worker with a `worker` label; sum them for the server."""
        lines = [
            "# HELP rawsse_build_info The running rawsse and Python versions.",
            "# TYPE rawsse_build_info gauge",
            f'rawsse_build_info{{version="{__version__}",python="{PYTHON}"}} 1',
        ]
        for position, (name, kind, metric, help_text) in enumerate(SERIES):
            lines.append(f"# HELP rawsse_{metric} {help_text}")
            lines.append(f"# TYPE rawsse_{metric} {kind}")
            if workers is None:
                lines.append(f"rawsse_{metric} {getattr(self, name)}")
            else:
                lines.extend(f'rawsse_{metric}{{worker="{i}"}} {v[position]}' for i, v in enumerate(workers))
        lines.append("# HELP rawsse_rejected_requests_total Requests refused, by status.")
        lines.append("# TYPE rawsse_rejected_requests_total counter")
        for status in sorted(self.rejected):
            lines.append(f'rawsse_rejected_requests_total{{status="{status}"}} {self.rejected[status]}')
        return ("\n".join(lines) + "\n").encode()


SERIES = [
    ("streams_open", "gauge", "streams_open", "Event streams open now."),
    ("streams_opened", "counter", "streams_opened_total", "Event streams opened."),
    ("streams_closed", "counter", "streams_closed_total", "Event streams closed."),
    (
        "streams_refused",
        "counter",
        "streams_refused_total",
        "Stream requests told to come back later (connection or accept-rate limit, shutdown).",
    ),
    ("events_published", "counter", "events_published_total", "Events published."),
    ("deliveries", "counter", "deliveries_total", "Events written to streams."),
    (
        "bytes_written",
        "counter",
        "bytes_written_total",
        "Event bytes handed to streams (written, or buffered for a stream that is behind).",
    ),
    (
        "slow_consumers",
        "counter",
        "slow_consumers_total",
        "Streams closed because their pending bytes passed the cap.",
    ),
    ("resumes", "counter", "resumes_total", "Streams opened with a Last-Event-ID."),
    ("resets", "counter", "resets_total", "Resumes that were told events may have been missed."),
    (
        "stream_slots",
        "gauge",
        "stream_slots",
        "Stream slots taken: open streams, and closed ones whose fd waits for the running pass.",
    ),
    (
        "connections_dropped",
        "counter",
        "connections_dropped_total",
        "Connections over the limit dropped unanswered, past those answered 'come back later'.",
    ),
]
"""(attribute, type, exposed name, help) of each series a worker shares."""
