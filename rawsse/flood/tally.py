"""What the flooder counts, without I/O.

Every published payload starts with `<key>:<sequence>:<publish time in ns>:`: the key names
the numbering (one for a broadcast, one per topic for unicast), the sequence counts from 0
within it, and the time gives the end-to-end latency. A stream's tally then tells, for each
event, whether it is new, a duplicate, or arrived out of order, and at the end how many of
the expected events never came. The payload needs no escaping in a URL, a form or JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PAYLOAD_HEAD_BYTES = 40
"""Room for key, sequence and timestamp; shorter requested payloads are padded to this."""


def make_payload(key: str, sequence: int, now_ns: int, size: int) -> str:
    """`key` must be letters, digits, '_' or '-'."""
    head = f"{key}:{sequence}:{now_ns}:"
    return head + "x" * max(size - len(head), 0)


class LatencyHistogram:
    """Latencies in logarithmic buckets (16 per doubling, at most 6 % wide): constant
    memory whatever the count, mergeable across processes. A bucket is the bit length of
    the latency in ns and its next four bits, found with integer operations only: this
    runs once per event received, so it must cost next to nothing."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_ns = 0

    def add(self, latency_ns: int) -> None:
        if latency_ns < 32:
            latency_ns = 32
        shift = latency_ns.bit_length() - 5
        bucket = (shift << 4) | ((latency_ns >> shift) & 15)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.total += 1
        if latency_ns > self.max_ns:
            self.max_ns = latency_ns

    def add_since(self, now_ns: int, stamps: Iterable[bytes]) -> None:
        """The latencies of events stamped `stamps` (publish times in ns, as digits) and
        received at `now_ns`: `add` for each, inlined, since it runs per event."""
        counts = self.counts
        top = self.max_ns
        added = 0
        for stamp in stamps:
            latency_ns = now_ns - int(stamp)
            if latency_ns < 32:
                latency_ns = 32
            shift = latency_ns.bit_length() - 5
            bucket = (shift << 4) | ((latency_ns >> shift) & 15)
            counts[bucket] = counts.get(bucket, 0) + 1
            if latency_ns > top:
                top = latency_ns
            added += 1
        self.total += added
        self.max_ns = top

    def merge(self, other: LatencyHistogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.total += other.total
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentile(self, fraction: float) -> float:
        """The latency in seconds below which `fraction` of the samples fall (bucket top)."""
        if not self.total:
            return 0.0
        rank = fraction * self.total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                upper_ns = (16 + (bucket & 15) + 1) << (bucket >> 4)
                return min(upper_ns, self.max_ns) / 1e9
        return self.max_ns / 1e9

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max_ns": self.max_ns}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LatencyHistogram:
        histogram = cls()
        histogram.counts = {int(k): int(v) for k, v in document["counts"].items()}
        histogram.total = sum(histogram.counts.values())
        histogram.max_ns = int(document["max_ns"])
        return histogram


Key = str | bytes
"""A payload key: the worker keeps the bytes it found, to skip decoding per event."""


class StreamTally:
    """One stream's view: which sequences of each key it has seen. Kept small for the
    usual in-order arrival: per key, the next expected sequence and only the sequences
    seen beyond a gap (a gap later filled is absorbed)."""

    __slots__ = ("ahead", "duplicates", "next", "out_of_order", "received")

    def __init__(self) -> None:
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.next: dict[Key, int] = {}
        self.ahead: dict[Key, set[int]] = {}

    def add(self, key: Key, sequence: int) -> bool:
        """Record an event; False if it is a duplicate."""
        expected = self.next.get(key, 0)
        if sequence == expected:
            expected += 1
            ahead = self.ahead.get(key)
            if ahead:  # filling a gap: a later event came first
                self.out_of_order += 1
                while expected in ahead:
                    ahead.remove(expected)
                    expected += 1
            self.next[key] = expected
            self.received += 1
            return True
        ahead = self.ahead.setdefault(key, set())
        if sequence < expected or sequence in ahead:
            self.duplicates += 1
            return False
        if ahead and sequence < max(ahead):
            self.out_of_order += 1
        ahead.add(sequence)
        self.received += 1
        return True

    def add_read(self, found: Sequence[tuple[Key, bytes, bytes]]) -> Sequence[bytes]:
        """Record the events of one read — (key, sequence, stamp) each, in arrival order —
        and return the stamps of the new ones. The usual read, an in-order run of one key
        with no gap before it, is checked and counted as a whole (in C, mostly); anything
        else goes event by event."""
        keys, sequences, stamps = zip(*found, strict=True)
        key = keys[0]
        first = self.next.get(key, 0)
        count = len(keys)
        if (
            not self.ahead.get(key)
            and keys.count(key) == count
            and list(map(int, sequences)) == list(range(first, first + count))
        ):
            self.next[key] = first + count
            self.received += count
            return stamps
        return [stamp for key, sequence, stamp in found if self.add(key, int(sequence))]

    def missing(self, expected: dict[Key, int]) -> int:
        """Events of the expected counts (per key) that never came."""
        lost = 0
        for key, count in expected.items():
            have = min(self.next.get(key, 0), count)
            have += sum(1 for sequence in self.ahead.get(key, ()) if sequence < count)
            lost += count - have
        return lost


@dataclass
class Summary:
    """What a run found, summed over streams and worker processes."""

    streams: int = 0
    connect_errors: int = 0
    not_tried: int = 0
    """Streams asked for that were never tried: the opening's time limit came first."""
    refused: int = 0
    """Streams whose server answered with another status than a stream's (a 503, a 429)."""
    disconnects: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    lost: int = 0
    bytes: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_byte_seconds: list[float] = field(default_factory=list)
    opening_started: float = 0.0
    """Wall-clock time the first connect began, and the last stream got its response head
    (comparable across processes, unlike monotonic clocks)."""
    opening_ended: float = 0.0
    last_event_at: float = 0.0
    """Wall-clock time of the last event received."""
    by_worker: dict[str, LatencyHistogram] = field(default_factory=dict)
    """Latencies of streams whose server named its worker process; `latency` has the rest."""
    cpu_opening: float = 0.0
    """CPU seconds the worker processes used to open their streams, and in all."""
    cpu: float = 0.0

    def latency_of(self, worker: str) -> LatencyHistogram:
        if not worker:
            return self.latency
        histogram = self.by_worker.get(worker)
        if histogram is None:
            histogram = self.by_worker[worker] = LatencyHistogram()
        return histogram

    def all_latency(self) -> LatencyHistogram:
        """Every stream's latencies in one histogram."""
        total = LatencyHistogram()
        for histogram in (self.latency, *self.by_worker.values()):
            total.merge(histogram)
        return total

    def merge(self, other: Summary) -> None:
        for name in (
            "streams",
            "connect_errors",
            "not_tried",
            "refused",
            "disconnects",
            "received",
            "duplicates",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.out_of_order += other.out_of_order
        self.lost += other.lost
        self.bytes += other.bytes
        self.cpu_opening += other.cpu_opening
        self.cpu += other.cpu
        self.latency.merge(other.latency)
        for worker, histogram in other.by_worker.items():
            self.latency_of(worker).merge(histogram)
        self.first_byte_seconds.extend(other.first_byte_seconds)
        if other.opening_started and (
            not self.opening_started or other.opening_started < self.opening_started
        ):
            self.opening_started = other.opening_started
        self.opening_ended = max(self.opening_ended, other.opening_ended)
        self.last_event_at = max(self.last_event_at, other.last_event_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "connect_errors": self.connect_errors,
            "not_tried": self.not_tried,
            "refused": self.refused,
            "disconnects": self.disconnects,
            "received": self.received,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "lost": self.lost,
            "bytes": self.bytes,
            "latency": self.latency.to_json(),
            "by_worker": {worker: h.to_json() for worker, h in self.by_worker.items()},
            "first_byte_seconds": self.first_byte_seconds,
            "opening_started": self.opening_started,
            "opening_ended": self.opening_ended,
            "last_event_at": self.last_event_at,
            "cpu_opening": self.cpu_opening,
            "cpu": self.cpu,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Summary:
        summary = cls(
            **{k: document[k] for k in ("streams", "connect_errors", "not_tried", "refused", "disconnects")},
            received=document["received"],
            duplicates=document["duplicates"],
            out_of_order=document["out_of_order"],
            lost=document["lost"],
            bytes=document["bytes"],
        )
        summary.latency = LatencyHistogram.from_json(document["latency"])
        summary.by_worker = {w: LatencyHistogram.from_json(h) for w, h in document["by_worker"].items()}
        summary.first_byte_seconds = list(document["first_byte_seconds"])
        summary.opening_started = document["opening_started"]
        summary.opening_ended = document["opening_ended"]
        summary.last_event_at = document["last_event_at"]
        summary.cpu_opening = document["cpu_opening"]
        summary.cpu = document["cpu"]
        return summary
