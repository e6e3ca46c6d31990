"""The fan-out: passes that write every queued event to its streams, in slices, with the
heartbeats and the WebSocket keep-alive check.

A pass takes every queued event from the hub and writes each group's bytes to each of its
members. It runs in slices of `slice_size` writes with a loop iteration between them, so a
broadcast to tens of thousands of streams never stops the loop from accepting and
answering; events published meanwhile wait for the next pass, which sends them coalesced,
in order, in one write per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from rawsse.core.control import Word, is_control
from rawsse.core.events import Event
from rawsse.core.hub import FANOUT_SLICE, Delivery, Hub
from rawsse.core.metrics import Metrics
from rawsse.core.slots import Framing, SlotState, Why
from rawsse.core.ws.session import STUCK_FRAME, Sessions
from rawsse.reactor.registry import Quiet, StreamRegistry

log = logging.getLogger("rawsse")


class Fanout:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hub: Hub,
        registry: StreamRegistry,
        sessions: Sessions,
        metrics: Metrics,
        quiet: Quiet,
        on_word: Callable[[Word], None],
        slice_size: int = FANOUT_SLICE,
    ) -> None:
        self._loop, self._hub, self._registry, self._metrics = loop, hub, registry, metrics
        self._sessions, self._quiet = sessions, quiet
        self._on_word = on_word
        """Where the words of the `$control` events a pass takes go, in order."""
        self._slice_size = slice_size
        self._scheduled = False
        self.passing = False
        self._work: deque[Delivery] = deque()
        self._offset = 0
        self._timed: list[Event] = []
        """The events of the running pass, timed when it ends."""
        self._started = 0.0
        self._heartbeat_due = False
        self._pinged = False
        """A heartbeat pass (with its pings) was taken since the last keep-alive check."""
        self._stopped = False

    @property
    def busy(self) -> bool:
        """A pass runs or is about to."""
        return self.passing or self._scheduled

    def schedule(self) -> None:
        if not self._scheduled and not self.passing and not self._stopped:
            self._scheduled = True
            self._loop.call_soon(self._start_pass)

    def heartbeat(self) -> None:
        """A heartbeat is due: the next pass (at once, if none runs) carries it; first
        the WebSocket streams that left the last pings unanswered (`MISSED_PINGS` in a row)
        are dropped, and those whose frame stayed half-read since the last heartbeat are closed."""
        self._check_keepalive()
        for slot in self._sessions.stuck():
            self._registry.begin_close(slot, STUCK_FRAME)
        self._heartbeat_due = True
        self.schedule()

    def announce(self, deliveries: list[Delivery]) -> None:
        """Write `deliveries` to their streams at once, in one go, between two slices of
        any running pass (a write is whole, or its rest is pending, so nothing is cut in
        two): a drain's reconnect advice, which must not wait for a grace period that may
        be zero."""
        backend = self._registry.backend
        for delivery in deliveries:
            written = backend.write_slice(delivery.slots, delivery.data, delivery.droppable)
            self._metrics.bytes_written += len(delivery.data) * written

    def stop(self) -> None:
        """Abandon the pass still running (at shutdown, once the grace period is over)
        and free the slots it held back."""
        self._stopped = True
        self._work.clear()
        self.passing = False
        registry = self._registry
        for slot in registry.table.end_pass():
            registry.backend.free(slot)

    def _check_keepalive(self) -> None:
        """Before a heartbeat's pings: drop the WebSocket streams that sent nothing (no
        pong, no frame) through `MISSED_PINGS` pings in a row. Those behind on their bytes
        are left to the send timeout: their pings may still be queued."""
        if not self._pinged:
            return  # the last pings have not gone out yet: nobody could answer them
        self._pinged = False
        registry = self._registry
        state, blocked = registry.table.state, SlotState.BLOCKED
        slots = (  # one at a time: a list of them all would leave ~36 B a stream in free memory
            slot
            for group in registry.subscriptions.groups()
            if group.framing == Framing.WS
            for slot in group.members
            if state[slot] != blocked
        )
        for slot in self._sessions.unanswered(slots):  # taken whole before any close
            registry.close(slot, Why.PEER)

    def _time_pass(self, metrics: Metrics) -> None:
        """The pass is over: how long it took, and each of its events' time from arrival."""
        now = time.monotonic()
        metrics.fanout_pass.observe(now - self._started)
        latency = metrics.publish_latency
        observe = latency.observe
        for event in self._timed:
            if not is_control(event.topics):  # a word is written to no stream
                observe(now - event.time)
        self._timed = []

    def _start_pass(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        work: list[Delivery] = []
        hub = self._hub
        self._started = time.monotonic()  # the clock of the events' times, precise
        if hub.has_queued:
            batch = hub.take_batch()
            work = batch.deliveries
            self._timed = batch.events
            for word in batch.words:
                self._on_word(word)
        if self._heartbeat_due:  # with the events, if any: a steady stream of them must
            self._heartbeat_due = False  # not hold back the pings the keep-alive relies on
            self._pinged = True
            work.extend(hub.heartbeat_batch())
        if not work:
            self._timed = []
            self._quiet.wake()
            return
        self._work.extend(work)
        self._offset = 0
        self.passing = True
        self._registry.table.begin_pass()
        self._run_slice()

    def _run_slice(self) -> None:
        budget = self._slice_size
        work = self._work
        metrics = self._metrics
        registry = self._registry
        write_slice = registry.backend.write_slice
        while work and budget > 0:
            delivery = work[0]
            slots = delivery.slots
            start = self._offset
            stop = min(len(slots), start + budget)
            batch = slots if start == 0 and stop == len(slots) else slots[start:stop]
            try:
                written = write_slice(batch, delivery.data, delivery.droppable)
            except Exception:
                # A bug must not stop every later pass, nor leave a silent gap: the streams
                # of this slice are closed, and they resume with Last-Event-ID.
                log.exception("fan-out slice failed; closing its streams")
                written = 0
                for slot in batch:
                    registry.close(slot, Why.SERVER)
            metrics.deliveries += delivery.events * written
            metrics.bytes_written += len(delivery.data) * written
            budget -= stop - start
            if stop == len(slots):
                work.popleft()
                self._offset = 0
            else:
                self._offset = stop
        if work:
            self._loop.call_soon(self._run_slice)
            return
        self.passing = False
        self._time_pass(metrics)
        table = registry.table
        for slot in table.end_pass():
            registry.backend.free(slot)
        metrics.stream_slots = table.used
        if self._hub.has_queued or self._heartbeat_due:
            self.schedule()
        else:
            self._quiet.wake()
