"""The durable log as the server's parts use it: the broker writes each numbered batch
through it before the batch is delivered or answered; the hub asks it for a resume that
memory history no longer covers; the sweep syncs and trims it.

It speaks in the server's Events (encoded with their ids, timed on the fan-out's clock)
and keeps the store's rows (timed on the wall clock, which survives a restart) to itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rawsse.core.control import is_control
from rawsse.core.events import Event, EventEncoder
from rawsse.core.metrics import Metrics
from rawsse.store.events import EventStore, Fsync, StoredEvent


class StoreOptions(NamedTuple):
    fsync: Fsync
    fsync_interval: float
    max_age: float
    max_bytes: int


class HistoryWindow(NamedTuple):
    """What memory history holds at most (--history-bytes, --history-age): what it
    starts with from the store."""

    max_bytes: int
    max_age: float


class DurableLog:
    def __init__(
        self,
        store: EventStore,
        options: StoreOptions,
        encoder: EventEncoder,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._options, self._encoder, self._metrics = store, options, encoder, metrics
        self._clock, self._wall = clock, wall
        self.waits = options.fsync is Fsync.ALWAYS
        """A batch is answered only once committed and synced (the broker commits once per
        loop turn); otherwise each batch is committed as it is written."""
        self._count()

    @property
    def last_sequence(self) -> int:
        return self._store.last_sequence

    # The broker's

    def write(self, events: Sequence[Event]) -> None:
        """Write a numbered batch (the server's own `$control` words are not kept); unless
        `waits`, committed at once. Raises StoreUnavailable: nothing of it is kept."""
        wall = self._wall()
        records = [StoredEvent(e.sequence, e.item, wall) for e in events if not is_control(e.topics)]
        if not records:
            return
        self._store.append(records)
        if not self.waits:
            self._store.commit()
        self._count()

    def commit(self) -> None:
        """Commit (and, with --fsync always, sync) what was written. Raises StoreUnavailable."""
        began = self._clock()
        self._store.commit()
        if self.waits:
            self._metrics.fsync.observe(self._clock() - began)

    def forget_uncommitted(self) -> int:
        """After a failed commit: the last sequence the store holds (what the order goes
        on from)."""
        self._count()
        return self._store.last_sequence

    def preload(self, window: HistoryWindow) -> tuple[list[Event], int]:
        """The newest events, for memory history (within `window`), and the highest
        sequence before them (older ones are replayed from the store)."""
        now, wall = self._clock(), self._wall()
        rows = self._store.recent(1 << 62, window.max_bytes, wall - window.max_age)
        events = [self._event(row, now - (wall - row.time)) for row in rows]
        before = rows[0].sequence - 1 if rows else self._store.last_sequence
        return events, before

    # The hub's (rawsse.core.hub.Archive)

    def since(
        self, topics: tuple[str, ...], after: int, until: int, page_bytes: int
    ) -> tuple[list[Event], bool, bool]:
        rows, whole, complete = self._store.since(topics, after, until, page_bytes)
        self._metrics.store_replays += 1
        return [self._event(row, 0.0) for row in rows], whole, complete

    # The sweep's

    def tick(self) -> None:
        """Once a second: sync (--fsync interval, when due), trim (age, size)."""
        store, options = self._store, self._options
        if options.fsync is Fsync.INTERVAL and self._clock() - store.last_sync >= options.fsync_interval:
            self._metrics.fsync.observe(store.sync())
        if store.trim(self._wall() - options.max_age, options.max_bytes):
            self._count()

    def close(self) -> None:
        self._store.close()

    def _event(self, row: StoredEvent, at: float) -> Event:
        return self._encoder.encode(row.item, row.sequence, self._encoder.ids.format(row.sequence), at)

    def _count(self) -> None:
        metrics = self._metrics
        metrics.store_events, metrics.store_bytes = self._store.events, self._store.bytes
