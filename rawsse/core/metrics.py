"""Counters for /metrics, rendered in the Prometheus text exposition format."""

from __future__ import annotations

import sys
from collections import Counter

from rawsse import __version__

PYTHON = ".".join(map(str, sys.version_info[:3]))


class Metrics:
    """Plain integer counters: incremented on the hot path, so no locks and no labels
    objects; `render()` builds the text only when /metrics is asked for. SERIES below
    says what each counts."""

    __slots__ = (
        "auth_refused",
        "bytes_written",
        "connections_dropped",
        "deliveries",
        "events_published",
        "rejected",
        "resets",
        "resumes",
        "send_timeouts",
        "slow_consumers",
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
            self.users_disconnected,
        ) = (0,) * 18  # fmt: skip
        self.rejected: Counter[int] = Counter()
        """Requests refused, by the status they got."""

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
        for position, (name, kind, help_text) in enumerate(SERIES):
            metric = f"{name}_total" if kind == "counter" else name
            lines.append(f"# HELP rawsse_{metric} {help_text}")
            lines.append(f"# TYPE rawsse_{metric} {kind}")
            if workers is None:
                lines.append(f"rawsse_{metric} {getattr(self, name)}")
            else:
                lines.extend(f'rawsse_{metric}{{worker="{i}"}} {v[position]}' for i, v in enumerate(workers))
        lines.append("# HELP rawsse_streams Streams open now, by transport.")
        lines.append("# TYPE rawsse_streams gauge")
        rows = [self.shared_values()] if workers is None else workers
        total = _position("streams_open")
        ws = _position("ws_streams_open")
        for index, values in enumerate(rows):
            worker = "" if workers is None else f',worker="{index}"'
            lines.append(f'rawsse_streams{{transport="sse"{worker}}} {values[total] - values[ws]}')
            lines.append(f'rawsse_streams{{transport="ws"{worker}}} {values[ws]}')
        lines.append("# HELP rawsse_rejected_requests_total Requests refused, by status.")
        lines.append("# TYPE rawsse_rejected_requests_total counter")
        for status in sorted(self.rejected):
            lines.append(f'rawsse_rejected_requests_total{{status="{status}"}} {self.rejected[status]}')
        return ("\n".join(lines) + "\n").encode()


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
    """
)
"""(attribute, type, help) of each series a worker shares; a counter's name ends in
`_total`, as Prometheus has it."""


def _position(name: str) -> int:
    return [series[0] for series in SERIES].index(name)
