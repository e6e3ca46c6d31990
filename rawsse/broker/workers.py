"""The broker of `--workers N`: the worker processes of one machine share one event log
(rawsse/broker/ring.py, made by `create_log`) and wake each other with eventfds. See
docs/scaling.md."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rawsse.broker.base import BrokerNeeds, EventSink, LocalBroker, Reach
from rawsse.broker.ring import INTEREST_BUCKETS, Record, SharedLog, interest_bucket
from rawsse.core.control import is_control
from rawsse.core.events import Event
from rawsse.core.publish import PublishItem
from rawsse.errors import WorkersFailed
from rawsse.store.durable import DurableLog

_WAKE = (1).to_bytes(8, "little")

MIN_LOG_BYTES = 1024 * 1024
"""The worker log holds what a restarted worker loads into its history (`--history-bytes`),
and never less than this."""

log = logging.getLogger("rawsse")


def create_log(
    history_bytes: int, max_event_bytes: int, used: bool, readers: int, first_sequence: int = 0
) -> SharedLog:
    """The log of a new group of workers, made by their supervisor before it forks them:
    room for the history a restarted worker loads and for the largest event 4 times, or
    the smallest log when it goes unused (with a Redis broker the workers are nodes). In
    /dev/shm (memory) when it has room, else in the temporary directory; the file is
    unlinked at once, so nothing is left behind however the server ends (the workers
    reopen it through the descriptor they inherit). `readers`: how many workers;
    `first_sequence`: the last sequence of the durable log (--data-dir), if any."""
    size = max(history_bytes, 4 * (max_event_bytes + 64 * 1024), MIN_LOG_BYTES) if used else MIN_LOG_BYTES
    name = f"rawsse-{os.getpid()}-{os.urandom(4).hex()}"
    directories = [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]
    for directory in directories:
        path = os.path.join(directory, name)
        try:
            SharedLog.create(path, size, readers, first_sequence)
            shared = SharedLog(path)
            os.unlink(path)
            return shared
        except OSError as exc:
            log.warning("cannot create the worker log in %s (%s)", directory, exc)
    raise WorkersFailed(
        "no room for the worker log in /dev/shm or the temporary directory; lower --history-bytes"
    )


@dataclass(frozen=True)
class LogSeat:
    """A worker's seat at the shared log: its index among `count` workers, the log's
    file, and every worker's eventfd (its own is `wake_fds[index]`). What a worker process
    is besides (its epoch, its sockets) is rawsse.process.context's."""

    index: int
    count: int
    log_path: str
    wake_fds: tuple[int, ...]


class SharedInterest:
    """A worker's streams' topics, told to the others through the shared log (the
    subscriptions' TopicInterest): by bucket, counted here, shown there while nonzero."""

    def __init__(self, log: SharedLog, worker: int, wake_fd: int) -> None:
        """`wake_fd`: this worker's own eventfd, written when it shows a topic."""
        self._log = log
        self._worker = worker
        self._wake_fd = wake_fd
        self._topics = array("i", bytes(4 * INTEREST_BUCKETS))
        """Topics with streams here, per bucket."""

    def gained(self, topic: str) -> None:
        bucket = interest_bucket(topic)
        self._topics[bucket] += 1
        if self._topics[bucket] == 1:
            self._log.show_interest(self._worker, bucket, True)
            # A publish may have read the byte just before it was set, and not woken this
            # worker: it looks at the log once more on its next turn, so such an event
            # is read at once, not at the sweep.
            try:
                os.write(self._wake_fd, _WAKE)
            except BlockingIOError:
                pass

    def lost(self, topic: str) -> None:
        bucket = interest_bucket(topic)
        self._topics[bucket] -= 1
        if not self._topics[bucket]:
            self._log.show_interest(self._worker, bucket, False)


class WorkerBroker(LocalBroker):
    reach = Reach.WORKERS

    def __init__(
        self,
        needs: BrokerNeeds,
        shared_values: Callable[[], list[int]],
        seat: LogSeat,
        log: SharedLog,
        loop: asyncio.AbstractEventLoop,
        durable: DurableLog | None = None,
    ) -> None:
        """`log`: the shared log, opened at `seat.log_path` (this broker closes it);
        `durable`: the durable log of --data-dir, shared by the workers (worker 0 syncs
        and trims it)."""
        self._durable = durable
        super().__init__(needs)
        self._shared_values = shared_values
        """This worker's counters, which it writes to the log for the others to read."""
        self._seat = seat
        self.worker_label = str(seat.index)
        self._loop = loop
        self._log = log
        self._cursor = 0
        self._wake_fd = seat.wake_fds[seat.index]
        self._others = [(i, fd) for i, fd in enumerate(seat.wake_fds) if i != seat.index]

    def process_count(self) -> int:
        return self._seat.count

    async def start(self, sink: EventSink) -> None:
        """Join the log and load what it still holds into history, so a restarted worker
        serves resumes like the others; then go live from the tail."""
        await super().start(sink)
        index = self._seat.index
        cursor, tail, dropped = self._log.join(index)
        self.sink.preload(self._events(self._log.read(cursor, tail)), dropped)
        self._cursor = tail
        self._log.advance(index, tail)
        self._loop.add_reader(self._wake_fd, self._on_wake)
        self._consume()

    async def stop(self) -> None:
        self._loop.remove_reader(self._wake_fd)
        self._log.leave(self._seat.index)
        self._log.close()
        if self._durable is not None:
            self._durable.close()

    def unready_reason(self) -> str | None:
        return None if self._durable is None else self._durable.unready_reason()

    def publish_now(self, items: Sequence[PublishItem]) -> list[str]:
        """Raises Overloaded (this hub, or a worker a ring behind) or EventTooLarge."""
        encoder = self.encoder
        now = self.clock()
        self.room.check_room()
        bodies = [encoder.body(item) for item in items]  # checked before they are appended
        events: list[Event] = []

        def made(sequences: list[int]) -> None:
            """The batch's events from what is in hand (its bodies made, nothing read back
            from the log); with --data-dir, written to the durable log while the log's
            lock keeps the order (StoreUnavailable: nothing is appended)."""
            format_id = encoder.ids.format
            for item, body, sequence in zip(items, bodies, sequences, strict=True):
                events.append(encoder.event(item, sequence, format_id(sequence), body, now))
            if self._durable is not None:
                self._durable.write(events)
                self._durable.commit()

        appended = self._log.append(items, now, made)
        self._wake(items, appended.behind)
        # What others appended before this batch first, then the batch, in the log's order.
        self._consume(appended.start)
        ids = [event.id for event in events]
        self._cursor = appended.end
        self._log.advance(self._seat.index, appended.end)
        self.sink.deliver(events)
        return ids

    def _wake(self, items: Sequence[PublishItem], behind: tuple[int, ...]) -> None:
        """Wake the workers with a stream on a topic of `items` (every one for a word),
        and those far `behind` in the log: the others read them later, as history (see
        rawsse.broker.ring)."""
        log = self._log
        rows = []
        for item in items:
            if is_control(item.topics):
                rows = [b"\x01" * log.readers]
                break
            rows.extend(log.interested(interest_bucket(topic)) for topic in item.topics)
        if behind:
            rows.append(bytes(index in behind for index in range(log.readers)))
        if len(rows) == 1:  # the usual: one event on one topic
            row = rows[0]
            woken = [fd for index, fd in self._others if row[index]]
        else:
            woken = [fd for index, fd in self._others if any(row[index] for row in rows)]
        for fd in woken:
            try:
                os.write(fd, _WAKE)
            except BlockingIOError:  # the counter is full: that worker has wake-ups queued
                pass

    def catch_up(self) -> None:
        """Read what the log holds now: a stream about to be decided on here must find
        in history what was published before it (this worker may not have been woken)."""
        self._consume()

    def sweep(self) -> None:
        # A worker whose fan-out was behind stopped reading the log; go on once it caught up.
        self._consume()
        if self._durable is not None:
            self._durable.tick()  # worker 0's syncs and trims for all
        self._log.write_metrics(self._seat.index, self._shared_values())

    def worker_metrics(self) -> list[list[int]]:
        """Every worker's counters: this one's live, the others' as of their last sweep."""
        own = self._seat.index
        return [
            self._shared_values() if i == own else self._log.read_metrics(i) for i in range(self._seat.count)
        ]

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_fd, 8)
        except BlockingIOError:
            pass
        self._consume()

    def _consume(self, limit: int | None = None) -> None:
        """Hand the hub every record it has not seen, in log order, up to `limit` (a
        tail; the log's tail when None). While this worker's fan-out is behind it stops
        reading: the log fills and publishers get 503, rather than this process queueing
        without bound. A publish of its own (which found room) reads up to its batch
        whatever the queue: the batch goes to the hub next, after what came before it."""
        if self.room.overloaded and limit is None:
            return
        log = self._log
        tail = log.tail if limit is None else limit
        if self._cursor >= tail:
            return
        events = self._events(log.read(self._cursor, tail))
        self._cursor = tail
        log.advance(self._seat.index, tail)
        self.sink.deliver(events)

    def _events(self, records: Iterable[Record]) -> list[Event]:
        """Encode each record once, for this process's streams (the writer checked that it
        fits, so this never raises)."""
        encode = self.encoder.encode
        format_id = self.encoder.ids.format
        return [encode(item, sequence, format_id(sequence), at) for sequence, item, at in records]
