"""One published event, encoded once."""

from __future__ import annotations


class Event:
    """An event as every subscriber receives it: `wire` is the complete SSE encoding
    (id, event, data lines and the blank line), shared read-only by all writers."""

    __slots__ = ("sequence", "time", "topics", "wire")

    def __init__(self, sequence: int, topics: tuple[str, ...], wire: bytes, time: float) -> None:
        self.sequence = sequence
        self.topics = topics
        self.wire = wire
        self.time = time
