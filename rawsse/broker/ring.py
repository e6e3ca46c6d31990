"""The shared event log of the worker processes: one ring of records in a shared memory
file, appended under a file lock, read by every worker at its own cursor.

Appending assigns the sequence and writes what was published (topics, name, data) once;
every worker reads the same records in the same order and encodes each once for its own
streams, so ids and order agree everywhere without a coordinator process. The lock is
`flock`, which the kernel releases when its holder dies, so a worker killed mid-append
cannot wedge the others; a record counts only once the tail moves past it, so a
half-written record is never read.

Layout (little-endian), all offsets into the file:

    0      tail       logical end of the committed records (grows forever)
    8      head       logical start of the oldest whole record
    16     sequence   the last sequence assigned
    24     dropped    the highest sequence overwritten
    32     readers    how many workers' cursors there are (set at creation)
    64+8i  cursor i   where worker i reads next (NO_READER when none)
    METRICS_AT + 8*(FIELDS*i + k)   worker i's shared metric k
    INTEREST_AT + readers*b + i     1 while worker i has a stream on a topic of bucket b
    DATA_AT ...       the ring, `capacity` bytes

A record is `length u32, topics_length u32, name_length u32, data_length u32, sequence
u64, time f64`, then the topics joined by newlines, the event name and the data (UTF-8),
padded to 8 bytes; `name_length` is the name's length plus one, 0 for an unnamed event. A
record never wraps: when it does not fit before the end, a zero length (or too little room
for one) sends readers to the start.

A writer wakes only the workers with a stream on a topic of the batch (by the topic's
bucket: another topic of the same bucket wakes a worker needlessly, never the reverse)
and, for a `$control` word, every worker. The others read the batch at their next wake-up,
at the next stream request they decide on, or at their sweep (once a second), and keep it
as history: nobody there reads it live.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from rawsse.broker.sizes import MAX_WORKERS
from rawsse.core.metrics import SHARED_FIELDS
from rawsse.core.publish import PublishItem
from rawsse.errors import EventTooLarge, Overloaded

METRIC_FIELDS = 96
"""Values each worker shares (rawsse.core.metrics.Metrics.shared_values), with room to spare."""
METRICS_AT = 64 + 8 * MAX_WORKERS
INTEREST_BUCKETS = 4096
"""Buckets of topics each worker says it has streams on (a byte per worker and bucket)."""
INTEREST_AT = 65536
DATA_AT = INTEREST_AT + INTEREST_BUCKETS * MAX_WORKERS
assert SHARED_FIELDS <= METRIC_FIELDS and METRICS_AT + 8 * METRIC_FIELDS * MAX_WORKERS <= INTEREST_AT
NO_READER = (1 << 64) - 1
LAGGING = 4
"""A worker more than this fraction of the ring behind is woken by every publish, though
it has no stream on what is published (it reads at its sweep otherwise)."""

_U64 = struct.Struct("<Q")
_STATE = struct.Struct("<QQQQ")
"""tail, head, sequence and dropped, read in one go by the writer under the lock."""
_KEPT = struct.Struct("<QQQ")
"""head, sequence and dropped, written in one go before the commit (the tail)."""
_RECORD = struct.Struct("<IIIIQd")
_LENGTH = struct.Struct("<I")
_TAIL, _HEAD, _DROPPED, _READERS = 0, 8, 24, 32  # the sequence at 16


class Record(NamedTuple):
    sequence: int
    item: PublishItem
    time: float


class Appended(NamedTuple):
    """Where a batch went: from `start` (the tail before it) to `end` (the tail after),
    with its sequences in order. No other writer's record lies between the two."""

    start: int
    end: int
    sequences: list[int]
    behind: tuple[int, ...] = ()
    """The workers more than a LAGGING-th of the ring behind: to be woken whatever they
    read, before the log fills and publishing stops."""


def interest_bucket(topic: str) -> int:
    """The bucket of `topic`, the same in every process (not Python's salted hash)."""
    return zlib.crc32(topic.encode()) & (INTEREST_BUCKETS - 1)


class SharedLog:
    """One process's handle on the log file (create it with `create`)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self.capacity = size - DATA_AT
        self._map = mmap.mmap(self._fd, size)
        self.readers = self._get(_READERS)
        self._cursors = struct.Struct(f"<{self.readers}Q")
        """Every worker's cursor, read in one go by the writer: only as many as there are
        workers, since the writer scans them while it holds the lock."""

    @staticmethod
    def create(path: str, capacity: int, readers: int = MAX_WORKERS, first_sequence: int = 0) -> None:
        """Make an empty log of `capacity` bytes of records (a multiple of 8), for
        `readers` workers, its sequences going on after `first_sequence` (the last one a
        durable log holds: those are gone from here, not unknown)."""
        if not 0 < readers <= MAX_WORKERS:
            raise ValueError(f"a log has 1 to {MAX_WORKERS} readers, not {readers}")
        capacity -= capacity % 8
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Allocated now, not on first write: a full tmpfs (Docker's /dev/shm is 64 MB)
            # must fail here with ENOSPC rather than kill a worker with SIGBUS later.
            try:
                os.posix_fallocate(fd, 0, DATA_AT + capacity)
            except OSError:
                os.unlink(path)
                raise
            with mmap.mmap(fd, DATA_AT) as header:
                _U64.pack_into(header, _READERS, readers)
                _KEPT.pack_into(header, _HEAD, 0, first_sequence, first_sequence)
                for worker in range(MAX_WORKERS):
                    _U64.pack_into(header, 64 + 8 * worker, NO_READER)
        finally:
            os.close(fd)

    @property
    def fd(self) -> int:
        return self._fd

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _get(self, offset: int) -> int:
        value: int = _U64.unpack_from(self._map, offset)[0]
        return value

    def _set(self, offset: int, value: int) -> None:
        _U64.pack_into(self._map, offset, value)

    # Readers

    def join(self, worker: int) -> tuple[int, int, int]:
        """Register worker `worker` as a reader from the oldest record; returns (cursor, the
        tail at that moment, the highest sequence already overwritten)."""
        if not 0 <= worker < self.readers:
            raise ValueError(f"this log has {self.readers} readers; no worker {worker}")
        self.clear_interest(worker)  # a worker that died left its streams' bytes behind
        with self._locked():
            head = self._get(_HEAD)
            self._set(64 + 8 * worker, head)
            return head, self._get(_TAIL), self._get(_DROPPED)

    def leave(self, worker: int) -> None:
        """Forget a reader (a worker that exited), so appends no longer wait for it."""
        self._set(64 + 8 * worker, NO_READER)
        self.clear_interest(worker)

    # Which workers have streams on which topics

    def show_interest(self, worker: int, bucket: int, streams: bool) -> None:
        """Say whether worker `worker` has streams on a topic of `bucket` (its own byte:
        no other process writes it)."""
        self._map[INTEREST_AT + self.readers * bucket + worker] = streams

    def interested(self, bucket: int) -> bytes:
        """Each worker's byte for `bucket`: nonzero where it has streams on it."""
        start = INTEREST_AT + self.readers * bucket
        return self._map[start : start + self.readers]

    def clear_interest(self, worker: int) -> None:
        """Worker `worker` has no streams (it starts, or it is gone)."""
        readers = self.readers
        for bucket in range(INTEREST_BUCKETS):
            self._map[INTEREST_AT + readers * bucket + worker] = 0

    @property
    def tail(self) -> int:
        return self._get(_TAIL)

    def read(self, cursor: int, limit: int) -> Iterator[Record]:
        """The records from `cursor` up to the logical offset `limit` (a tail: a reader
        goes on from there). The writer never overwrites a live reader's unread records."""
        data = self._map
        capacity = self.capacity
        while cursor < limit:
            position = cursor % capacity
            length = _LENGTH.unpack_from(data, DATA_AT + position)[0] if capacity - position >= 4 else 0
            if length == 0:
                cursor += capacity - position  # the wrap marker: go on from the start
                continue
            _, topics_length, name_length, data_length, sequence, at = _RECORD.unpack_from(
                data, DATA_AT + position
            )
            start = DATA_AT + position + _RECORD.size
            topics = tuple(data[start : start + topics_length].decode().split("\n"))
            start += topics_length
            name = data[start : start + name_length - 1].decode() if name_length else None
            start += max(name_length - 1, 0)
            cursor += length
            yield Record(sequence, PublishItem(topics, data[start : start + data_length].decode(), name), at)

    def advance(self, worker: int, cursor: int) -> None:
        self._set(64 + 8 * worker, cursor)

    # The writer

    def append(
        self,
        items: Sequence[PublishItem],
        at: float,
        before_commit: Callable[[list[int]], None] | None = None,
    ) -> Appended:
        """Append one batch, whole or not at all: under the lock, take the next sequences,
        call `before_commit` with them (the durable log's write, in the log's order; if it
        raises, the ring is left as it was), write the records and commit; returns
        where they went. Raises Overloaded when a
        reader is too far behind, EventTooLarge for a record over a quarter of the ring."""
        encoded = []
        for item in items:
            names = "\n".join(item.topics).encode()
            name = b"" if item.event is None else item.event.encode()
            body = item.data.encode()
            length = _RECORD.size + len(names) + len(name) + len(body)
            length += -length % 8
            encoded.append((length, names, name, 0 if item.event is None else len(name) + 1, body))
        with self._locked():
            tail, head, sequence, dropped_before = _STATE.unpack_from(self._map, _TAIL)
            capacity = self.capacity
            planned = []
            end = tail
            for record in encoded:
                length = record[0]
                if length > capacity // 4:
                    raise EventTooLarge(f"an event of {length} bytes does not fit the worker log")
                if capacity - end % capacity < length:
                    end += capacity - end % capacity
                planned.append((end, record))
                end += length
            cursors = self._cursors.unpack_from(self._map, 64)
            slowest = min((c for c in cursors if c != NO_READER), default=end)
            if end - slowest > capacity:
                raise Overloaded("a worker is a whole ring behind; retry shortly")
            behind: tuple[int, ...] = ()
            lagging = end - capacity // LAGGING
            if slowest < lagging:
                behind = tuple(i for i, c in enumerate(cursors) if c != NO_READER and c < lagging)
            sequences = [sequence + 1 + i for i in range(len(planned))]
            if before_commit is not None:  # before the ring is touched: if it raises, nothing changed
                before_commit(sequences)
            head, dropped = self._trim(head, end)
            data = self._map
            position_at = tail
            for index, (at_offset, (length, names, name, name_length, body)) in enumerate(planned):
                if at_offset != position_at and capacity - position_at % capacity >= 4:
                    _LENGTH.pack_into(data, DATA_AT + position_at % capacity, 0)
                position = DATA_AT + at_offset % capacity
                _RECORD.pack_into(
                    data, position, length, len(names), name_length, len(body), sequence + 1 + index, at
                )
                written = position + _RECORD.size
                for part in (names, name, body):
                    data[written : written + len(part)] = part
                    written += len(part)
                if written < position + length:
                    data[written : position + length] = bytes(position + length - written)
                position_at = at_offset + length
            _KEPT.pack_into(data, _HEAD, head, sequence + len(planned), dropped or dropped_before)
            self._set(_TAIL, end)  # the commit: readers see the batch from here on
            return Appended(tail, end, sequences, behind)

    def _trim(self, head: int, end: int) -> tuple[int, int]:
        """Move the head past the records the new tail will overwrite; returns the new
        head and the last sequence dropped (0 if none)."""
        dropped = 0
        capacity = self.capacity
        data = self._map
        while end - head > capacity:
            position = head % capacity
            length = _LENGTH.unpack_from(data, DATA_AT + position)[0] if capacity - position >= 4 else 0
            if length == 0:
                head += capacity - position
                continue
            dropped = _RECORD.unpack_from(data, DATA_AT + position)[4]
            head += length
        return head, dropped

    # Metrics each worker publishes once a second, for /metrics and the dashboard

    def write_metrics(self, worker: int, values: Sequence[int]) -> None:
        base = METRICS_AT + 8 * METRIC_FIELDS * worker
        for k, value in enumerate(values[:METRIC_FIELDS]):
            self._set(base + 8 * k, value)

    def read_metrics(self, worker: int) -> list[int]:
        base = METRICS_AT + 8 * METRIC_FIELDS * worker
        return [self._get(base + 8 * k) for k in range(METRIC_FIELDS)]

    def _locked(self) -> _FileLock:
        return _FileLock(self._fd)


class _FileLock:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
