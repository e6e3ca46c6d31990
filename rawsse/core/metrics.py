"""Counters and histograms for /metrics, rendered in the Prometheus text exposition
format."""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections import Counter

from rawsse import __version__

PYTHON = ".".join(map(str, sys.version_info[:3]))


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds, in seconds, of the histograms' buckets; one bucket more counts the rest."""


class Histogram:
    """Observations counted per bucket, in a list of ints allocated once: observing costs
    a bisection and two additions, nothing per observation is kept. Prometheus' buckets
    (cumulative, `le`) are made when rendered."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def shared(self) -> list[int]:
        """The counts and the sum (in microseconds), as a worker shares them."""
        return [*self.counts, int(self.sum * 1e6)]


def quantile(counts: list[int], q: float, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> float | None:
    """The `q` quantile of a histogram's counts, interpolated within its bucket as
    Prometheus' histogram_quantile does; None without observations. Past the last bound
    it is that bound (the histogram knows no more)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if seen + count >= rank and count:
            if index == len(bounds):
                return bounds[-1]
            low = bounds[index - 1] if index else 0.0
            return low + (bounds[index] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


class Metrics:
    """Plain integer counters and two histograms: incremented on the hot path, so no
    locks and no labels objects; `render()` builds the text only when /metrics is asked
    for. SERIES and HISTOGRAMS below say what each counts."""

    __slots__ = (
        "acks",
        "auth_refused",
        "bytes_written",
        "connections_dropped",
        "deliveries",
        "events_published",
        "fanout_pass",
        "fsync",
        "process_cpu_micros",
        "process_open_fds",
        "process_resident_bytes",
        "publish_latency",
        "published_http",
        "published_local",
        "published_ws",
        "queued_bytes",
        "rejected",
        "resets",
        "resumes",
        "send_timeouts",
        "slow_consumers",
        "store_bytes",
        "store_events",
        "store_replays",
        "stream_slots",
        "streams_closed",
        "streams_open",
        "streams_opened",
        "streams_over_limit",
        "streams_refused",
        "tokens_expired",
        "users_disconnected",
        "ws_streams_open",
    )  # fmt: skip

    def __init__(self) -> None:
        (
            self.streams_open, self.streams_opened, self.streams_closed, self.streams_refused,
            self.stream_slots, self.connections_dropped, self.events_published, self.deliveries,
            self.bytes_written, self.slow_consumers, self.send_timeouts, self.resumes, self.resets,
            self.ws_streams_open, self.auth_refused, self.streams_over_limit, self.tokens_expired,
            self.users_disconnected, self.published_http, self.published_ws, self.published_local,
            self.queued_bytes, self.process_resident_bytes, self.process_open_fds,
            self.process_cpu_micros, self.store_events, self.store_bytes, self.store_replays,
            self.acks,
        ) = (0,) * 29  # fmt: skip
        self.rejected: Counter[int] = Counter()
        """Requests refused, by the status they got."""
        self.publish_latency = Histogram()
        self.fanout_pass = Histogram()
        self.fsync = Histogram()

    def shared_values(self) -> list[int]:
        """The series in SERIES order, then each histogram's counts and sum: what a
        worker shares with the others (SHARED_FIELDS of them)."""
        values = [getattr(self, name) for name, *_ in SERIES]
        for _, attribute, _ in HISTOGRAMS:
            values += getattr(self, attribute).shared()
        return values

    def render(self, workers: list[list[int]] | None = None) -> bytes:
        """The exposition text. With `workers` (each worker's shared_values, by index),
        every series is given per worker with a `worker` label; sum them for the server."""
        lines = [
            "# HELP rawsse_build_info The running rawsse and Python versions.",
            "# TYPE rawsse_build_info gauge",
            f'rawsse_build_info{{version="{__version__}",python="{PYTHON}"}} 1',
        ]
        rows = [self.shared_values()] if workers is None else workers
        # Each row's own label: none for a single process, its worker's index otherwise.
        tagged = [("" if workers is None else f'worker="{n}"', values) for n, values in enumerate(rows)]

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        for position, (name, kind, help_text) in enumerate(SERIES):
            if kind == "labelled":
                continue  # rendered below, under one name with a label
            metric = f"rawsse_{name}_total" if kind == "counter" else f"rawsse_{name}"
            family(metric, kind, help_text)
            lines.extend(f"{metric}{_labels(worker)} {values[position]}" for worker, values in tagged)
        family("rawsse_streams", "gauge", "Streams open now, by transport.")
        total, ws = _position("streams_open"), _position("ws_streams_open")
        for worker, values in tagged:
            sse, websocket = _labels('transport="sse"', worker), _labels('transport="ws"', worker)
            lines.append(f"rawsse_streams{sse} {values[total] - values[ws]}")
            lines.append(f"rawsse_streams{websocket} {values[ws]}")
        family(
            "rawsse_publishes_total",
            "counter",
            "Events published, by route: POST /publish, WebSocket, in-process.",
        )
        for route in ("http", "ws", "local"):
            position = _position(f"published_{route}")
            for worker, values in tagged:
                labels = _labels(f'route="{route}"', worker)
                lines.append(f"rawsse_publishes_total{labels} {values[position]}")
        for name, kind, help_text, field, scale in PROCESS_SERIES:
            family(name, kind, help_text)
            position = _position(field)
            for worker, values in tagged:
                value = values[position]
                lines.append(f"{name}{_labels(worker)} {value if scale == 1 else repr(value * scale)}")
        start = len(SERIES)
        width = len(LATENCY_BUCKETS) + 2
        for name, _, help_text in HISTOGRAMS:
            family(f"rawsse_{name}", "histogram", help_text)
            for worker, values in tagged:
                counts, micros = values[start : start + width - 1], values[start + width - 1]
                cumulative = 0
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    labels = _labels(worker, f'le="{le}"')
                    lines.append(f"rawsse_{name}_bucket{labels} {cumulative}")
                lines.append(f"rawsse_{name}_sum{_labels(worker)} {micros / 1e6!r}")
                lines.append(f"rawsse_{name}_count{_labels(worker)} {cumulative}")
            start += width
        family("rawsse_rejected_requests_total", "counter", "Requests refused, by status.")
        for status in sorted(self.rejected):
            lines.append(f'rawsse_rejected_requests_total{{status="{status}"}} {self.rejected[status]}')
        return ("\n".join(lines) + "\n").encode()


def _labels(*labels: str) -> str:
    """`{a="1",b="2"}` of the labels given (empty ones left out), or nothing."""
    present = ",".join(label for label in labels if label)
    return f"{{{present}}}" if present else ""


def _series(table: str) -> list[tuple[str, str, str]]:
    rows = [line.split(maxsplit=2) for line in table.strip().splitlines()]
    return [(name, kind, help_text) for name, kind, help_text in rows]


SERIES = _series(
    """
    streams_open         gauge    Event streams open now.
    streams_opened       counter  Event streams opened.
    streams_closed       counter  Event streams closed.
    streams_refused      counter  Stream requests told to come back later (at a limit, or shutting down).
    events_published     counter  Events published.
    deliveries           counter  Events handed to streams (written, or queued behind a write in progress).
    bytes_written        counter  Event bytes handed to streams (written, or queued behind).
    slow_consumers       counter  Streams closed for more than --max-pending-bytes queued behind.
    send_timeouts        counter  Streams closed for making no progress for --send-timeout.
    resumes              counter  Streams opened with a Last-Event-ID.
    resets               counter  Resumes that were told events may have been missed.
    stream_slots         gauge    Stream slots taken: open streams, and closed ones awaiting the pass's end.
    connections_dropped  counter  Connections over the limit dropped unanswered (EventSource retries those).
    ws_streams_open      gauge    WebSocket streams open now (counted in streams_open too).
    auth_refused         counter  Streams refused: no usable token (401), or one short of a topic (403).
    streams_over_limit   counter  Stream requests refused at a per-user or per-address limit (429).
    tokens_expired       counter  Streams closed because their token expired.
    users_disconnected   counter  Streams closed by /disconnect?user=.
    published_http       labelled Events published with POST /publish.
    published_ws         labelled Events published by WebSocket streams' publish commands.
    published_local      labelled Events published in-process (Server.publish).
    queued_bytes         gauge    Bytes of events queued for the next fan-out pass (up to --max-queued-bytes).
    process_resident_bytes labelled The process's resident memory, as of the last sweep.
    process_open_fds     labelled The process's open file descriptors, as of the last sweep.
    process_cpu_micros   labelled The process's CPU time (user and system), as of the last sweep.
    store_events         gauge    Events the durable log (--data-dir) holds.
    store_bytes          gauge    Bytes of events (data, topics) the durable log holds (up to --store-bytes).
    store_replays        counter  Resume pages read from the durable log (older than memory history).
    acks                 counter  Acknowledgements recorded (a resume, a WebSocket command, POST /ack).
    """
)
"""(attribute, type, help) of each series a worker shares; a counter's name ends in
`_total`, as Prometheus has it; a `labelled` one is rendered under a name of its own."""

PROCESS_SERIES = (
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "process_resident_bytes", 1),
    ("process_open_fds", "gauge", "Number of open file descriptors.", "process_open_fds", 1),
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
     "process_cpu_micros", 1e-6),
)  # fmt: skip
"""The figures every Prometheus client library gives a process, under their usual names
(name, type, help, attribute, scale)."""

HISTOGRAMS = (
    (
        "publish_latency_seconds",
        "publish_latency",
        "Seconds from an event's arrival in this process (its publish, or its read from the "
        "workers' log or Redis) to the end of the fan-out pass that wrote it to its streams.",
    ),
    (
        "fanout_pass_seconds",
        "fanout_pass",
        "Seconds a fan-out pass took, from taking its events to its last write.",
    ),
    (
        "fsync_seconds",
        "fsync",
        "Seconds a sync of the durable log took (--fsync always: each commit; interval: each tick).",
    ),
)
"""(name, attribute, help) of the histograms, in the order they are shared."""

SHARED_FIELDS = len(SERIES) + len(HISTOGRAMS) * (len(LATENCY_BUCKETS) + 2)
"""How many values a worker shares (rawsse.broker.ring's slots hold at least this many)."""


def _position(name: str) -> int:
    return [series[0] for series in SERIES].index(name)
