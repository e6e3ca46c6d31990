"""The durable log as the server's parts use it: the broker writes each numbered batch
through it before the batch is delivered or answered; the hub asks it for a resume that
memory history no longer covers; the sweep syncs and trims it.

It speaks in the server's Events (encoded with their ids, timed on the fan-out's clock)
and keeps the store's rows (timed on the wall clock, which survives a restart) to itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from rawsse.core.control import is_kept
from rawsse.core.events import Event, EventEncoder
from rawsse.core.metrics import Metrics
from rawsse.errors import StoreUnavailable
from rawsse.store.events import EventStore, Fsync, StoredEvent


class StoreOptions(NamedTuple):
    fsync: Fsync
    fsync_interval: float
    max_age: float
    max_bytes: int


PRELOAD_BYTES = 1024 * 1024
"""Memory history starts with at most this much of the log's newest events' data (or
--history-bytes, if less): a restart listens again within a second whatever the log
holds, memory does not grow with it (an event in memory costs several times its data),
and older resumes are read from the log."""


class HistoryWindow(NamedTuple):
    """What memory history starts with from the store at most (bytes of data, age)."""

    max_bytes: int
    max_age: float


class DurableLog:
    def __init__(
        self,
        store: EventStore,
        options: StoreOptions,
        encoder: EventEncoder,
        metrics: Metrics,
        keeper: bool = True,
        shared: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`keeper`: this process syncs and trims the log and reports its figures (the
        only process, or worker 0 of a group sharing it); `shared`: other processes write
        to it too (workers), so the keeper counts what they wrote."""
        self._store, self._options, self._encoder, self._metrics = store, options, encoder, metrics
        self._keeper, self._shared = keeper, shared
        self._clock, self._wall = clock, wall
        self.waits = options.fsync is Fsync.ALWAYS
        """A commit is synced before it returns (--fsync always)."""
        self.unwritable: str | None = None
        """Why the last write, commit or sync failed (for /readyz), until one succeeds."""
        self._count()

    @property
    def last_sequence(self) -> int:
        return self._store.last_sequence

    # The broker's

    def write(self, events: Sequence[Event]) -> None:
        """Write a numbered batch (the server's own `$control` words and `$stats`
        snapshots are not kept: rawsse.core.control.is_kept) in the
        open transaction: `commit` ends it, for every batch of the loop turn. Raises
        StoreUnavailable: nothing of the transaction is kept."""
        wall = self._wall()
        records = [StoredEvent(e.sequence, e.item, wall) for e in events if is_kept(e.topics)]
        if not records:
            return
        try:
            self._store.append(records)
        except StoreUnavailable as error:
            self._failed(error)
            raise

    def commit(self) -> None:
        """Commit (and, with --fsync always, sync) what was written. Raises StoreUnavailable."""
        began = self._clock()
        try:
            wrote = self._store.commit()
        except StoreUnavailable as error:
            self._failed(error)
            raise
        if not wrote:  # a turn of words or snapshots only: nothing shows the store writable again
            return
        if self.waits:
            self._metrics.fsync.observe(self._clock() - began)
        self.unwritable = None
        self._count()

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

    def since(self, starts: Mapping[str, int], until: int, page_bytes: int) -> tuple[list[Event], bool, bool]:
        rows, whole, complete = self._store.since(starts, until, page_bytes)
        self._metrics.store_replays += 1
        return [self._event(row, 0.0) for row in rows], whole, complete

    # The sweep's

    def tick(self) -> None:
        """Once a second, in the keeper: count what the other processes wrote (the rows
        since the last count, kept for the next), sync (--fsync interval, when due), trim
        (age, size)."""
        if not self._keeper:
            return
        store, options = self._store, self._options
        try:
            if self._shared:  # alone, this process's count is exact already
                store.recount()
            store.keep_count()
            self._count()
            if options.fsync is Fsync.INTERVAL and self._clock() - store.last_sync >= options.fsync_interval:
                self._metrics.fsync.observe(store.sync())
            if store.trim(self._wall() - options.max_age, options.max_bytes):
                self._count()
        except (StoreUnavailable, OSError) as error:
            self.unwritable = str(error)

    def close(self) -> None:
        if self._keeper:  # the next start counts from here
            try:
                self._store.commit()
                self._store.recount()
                self._store.keep_count()
            except StoreUnavailable:
                pass  # the next start counts the rows since the last count kept
        self._store.close()

    def unready_reason(self) -> str | None:
        """Why this process cannot take publishes now (/readyz), or None."""
        if self.unwritable is None:
            return None
        return f"the durable log cannot be written ({self.unwritable})"

    def _failed(self, error: StoreUnavailable) -> None:
        self.unwritable = error.message
        self._count()  # what the store holds, the failed batch not counted

    def _event(self, row: StoredEvent, at: float) -> Event:
        return self._encoder.encode(row.item, row.sequence, self._encoder.ids.format(row.sequence), at)

    def _count(self) -> None:
        if not self._keeper:
            return
        metrics = self._metrics
        metrics.store_events, metrics.store_bytes = self._store.events, self._store.bytes
