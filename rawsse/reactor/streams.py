"""What every stream backend shares: fan-out passes in slices, coalescing, deferred slot
release, heartbeats and the shutdown drain.

A pass takes every queued event from the hub and writes each group's bytes to each of its
members. It runs in slices of `slice_size` writes with a loop iteration between them, so a
broadcast to tens of thousands of streams never stops the loop from accepting and
answering; events published meanwhile wait for the next pass, which sends them coalesced,
in order, in one write per stream.

A slot closed during a pass is released (its fd closed) only when the pass ends: the pass
holds a snapshot of slot numbers, and the kernel must not hand the same fd number to a new
connection that the snapshot would then write to.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import deque
from collections.abc import Iterable

from rawsse.config import FANOUT_SLICE, MAX_PENDING_BYTES, SEND_TIMEOUT
from rawsse.core.hub import Delivery, Hub
from rawsse.core.metrics import Metrics

log = logging.getLogger("rawsse")


class StreamLimits:
    __slots__ = ("max_pending_bytes", "send_timeout", "slice_size")

    def __init__(
        self,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        send_timeout: float = SEND_TIMEOUT,
        slice_size: int = FANOUT_SLICE,
    ) -> None:
        self.max_pending_bytes = max_pending_bytes
        self.send_timeout = send_timeout
        self.slice_size = slice_size


class Streams:
    """Base of the stream backends; subclasses own the slots and the writes."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, hub: Hub, metrics: Metrics, limits: StreamLimits
    ) -> None:
        self._loop = loop
        self._hub = hub
        self._metrics = metrics
        self._limits = limits
        self.subscriptions = hub.subscriptions
        hub.on_queued = self.schedule
        self._scheduled = False
        self._passing = False
        self._work: deque[Delivery] = deque()
        self._offset = 0
        self._deferred: list[int] = []
        self._heartbeat_due = False
        self._closed = False
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def count(self) -> int:
        return self.subscriptions.count

    # Fan-out passes

    def schedule(self) -> None:
        if not self._scheduled and not self._passing and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._start_pass)

    def heartbeat(self) -> None:
        self._heartbeat_due = True
        self.schedule()

    def announce(self, deliveries: list[Delivery]) -> None:
        """Write `deliveries` to their streams at once, in one go, between two slices of
        any running pass (a write is whole, or its rest is pending, so nothing is cut in
        two): a drain's reconnect advice, which must not wait for a grace period that may
        be zero."""
        for delivery in deliveries:
            self._write_slice(delivery.slots, delivery.data, delivery.droppable)
            self._metrics.bytes_written += len(delivery.data) * len(delivery.slots)

    def _start_pass(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        if self._hub.has_queued:
            work = self._hub.take_batch()
        elif self._heartbeat_due:
            self._heartbeat_due = False
            work = self._hub.heartbeat()
        else:
            self._wake_idle_waiters()
            return
        self._work.extend(work)
        self._offset = 0
        self._passing = True
        self._run_slice()

    def _run_slice(self) -> None:
        budget = self._limits.slice_size
        work = self._work
        metrics = self._metrics
        while work and budget > 0:
            delivery = work[0]
            slots = delivery.slots
            start = self._offset
            stop = min(len(slots), start + budget)
            batch = slots if start == 0 and stop == len(slots) else slots[start:stop]
            try:
                self._write_slice(batch, delivery.data, delivery.droppable)
            except Exception:
                # A bug must not stop every later pass, nor leave a silent gap: the streams
                # of this slice are closed, and they resume with Last-Event-ID.
                log.exception("fan-out slice failed; closing its streams")
                for slot in batch:
                    self.close(slot)
            metrics.deliveries += delivery.events * len(batch)
            metrics.bytes_written += len(delivery.data) * len(batch)
            budget -= stop - start
            if stop == len(slots):
                work.popleft()
                self._offset = 0
            else:
                self._offset = stop
        if work:
            self._loop.call_soon(self._run_slice)
            return
        self._passing = False
        deferred, self._deferred = self._deferred, []
        for slot in deferred:
            self._free(slot)
        if self._hub.has_queued or self._heartbeat_due:
            self.schedule()
        else:
            self._wake_idle_waiters()

    # Closing streams

    def close(self, slot: int, slow: bool = False) -> None:
        """Close one stream; safe to call twice and from inside a pass."""
        if not self._is_open(slot):
            return
        self.subscriptions.remove(slot)
        metrics = self._metrics
        metrics.streams_open -= 1
        metrics.streams_closed += 1
        if slow:
            metrics.slow_consumers += 1
        self._shut(slot, abort=slow)
        if self._passing:
            self._deferred.append(slot)
        else:
            self._free(slot)
        self._wake_idle_waiters()

    def _joined(self, slot: int, topics: tuple[str, ...]) -> None:
        self.subscriptions.add(slot, topics)
        self._metrics.streams_open += 1
        self._metrics.streams_opened += 1
        self._metrics.stream_slots += 1

    def _free(self, slot: int) -> None:
        self._release(slot)
        self._metrics.stream_slots -= 1

    async def drain(self, timeout: float) -> bool:
        """Wait until no pass runs and no stream has pending bytes; False on timeout."""
        deadline = self._loop.time() + timeout
        while self._passing or self._scheduled or self._has_pending():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), min(remaining, 0.1))
            except TimeoutError:
                pass
        return True

    def close_all(self) -> None:
        """Close every stream now, abandoning a pass still running (at shutdown, once the
        grace period is over): its deferred slots are released here, exactly once."""
        self._closed = True
        self._work.clear()
        self._passing = False
        deferred, self._deferred = self._deferred, []
        for slot in deferred:
            self._free(slot)
        for group in self.subscriptions.groups():
            for slot in list(group.members):
                self.close(slot)
        self._wake_idle_waiters()

    def close_topics(self, topics: Iterable[str]) -> int:
        """Close every stream subscribed to one of `topics` (an admin's /disconnect);
        their clients reconnect and resume. Returns how many were closed."""
        subscriptions = self.subscriptions
        groups = {group for topic in topics for group in subscriptions.groups_of_topic(topic)}
        slots = [slot for group in groups for slot in group.members]  # close() edits members
        for slot in slots:
            self.close(slot)
        return len(slots)

    def connection_lost(self, slot: int, transport: asyncio.BaseTransport) -> None:
        """The loop saw `transport` close; backends that keep transports close its stream."""
        self.close(slot)

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Backend interface

    def open(self, transport: asyncio.Transport, first_bytes: bytes, topics: tuple[str, ...]) -> int | None:
        """Make the connection a stream that starts with `first_bytes`. Returns the slot
        if the caller's protocol stays responsible for noticing the disconnect."""
        raise NotImplementedError

    def _write_slice(self, slots: array[int], data: bytes, droppable: bool) -> None:
        raise NotImplementedError

    def _is_open(self, slot: int) -> bool:
        raise NotImplementedError

    def _shut(self, slot: int, abort: bool) -> None:
        """Stop using the slot: no more reads or writes. `abort` drops unsent bytes."""
        raise NotImplementedError

    def _release(self, slot: int) -> None:
        """Free the slot for reuse (close the fd); called when no pass can still see it."""
        raise NotImplementedError

    def _has_pending(self) -> bool:
        raise NotImplementedError

    def sweep(self, now: float) -> None:
        """Periodic check (once a second): close streams stuck past the send timeout."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Close every stream and the backend's own resources."""
        raise NotImplementedError
