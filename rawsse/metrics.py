"""Counters for /metrics, rendered in the Prometheus text exposition format."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Plain integer counters: incremented on the hot path, so no locks and no labels
    objects; `render()` builds the text only when /metrics is asked for."""

    __slots__ = (
        "bytes_written",
        "deliveries",
        "events_published",
        "rejected",
        "resets",
        "resumes",
        "slow_consumers",
        "streams_closed",
        "streams_open",
        "streams_opened",
    )

    def __init__(self) -> None:
        self.streams_open = 0
        self.streams_opened = 0
        self.streams_closed = 0
        self.events_published = 0
        self.deliveries = 0
        self.bytes_written = 0
        self.slow_consumers = 0
        self.resumes = 0
        self.resets = 0
        self.rejected: Counter[int] = Counter()

    def render(self) -> bytes:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, value: int) -> None:
            lines.append(f"# HELP rawsse_{name} {help_text}")
            lines.append(f"# TYPE rawsse_{name} {kind}")
            lines.append(f"rawsse_{name} {value}")

        metric("streams_open", "gauge", "Event streams open now.", self.streams_open)
        metric("streams_opened_total", "counter", "Event streams opened.", self.streams_opened)
        metric("streams_closed_total", "counter", "Event streams closed.", self.streams_closed)
        metric("events_published_total", "counter", "Events published.", self.events_published)
        metric("deliveries_total", "counter", "Events written to streams.", self.deliveries)
        metric(
            "bytes_written_total",
            "counter",
            "Event bytes handed to streams (written, or buffered for a stream that is behind).",
            self.bytes_written,
        )
        metric(
            "slow_consumers_total",
            "counter",
            "Streams closed because their pending bytes passed the cap.",
            self.slow_consumers,
        )
        metric("resumes_total", "counter", "Streams opened with a Last-Event-ID.", self.resumes)
        metric(
            "resets_total",
            "counter",
            "Resumes that were told events may have been missed.",
            self.resets,
        )
        lines.append("# HELP rawsse_rejected_requests_total Requests refused, by status.")
        lines.append("# TYPE rawsse_rejected_requests_total counter")
        for status in sorted(self.rejected):
            lines.append(f'rawsse_rejected_requests_total{{status="{status}"}} {self.rejected[status]}')
        return ("\n".join(lines) + "\n").encode()
