"""Every stream's life, over one slot table (rawsse.core.slots) whatever backend holds the
connections: opening a stream in its slot, its WebSocket close handshake or failure, and
closing it, which releases everything kept for the slot in one place.

A backend (bare fds in epoll or kqueue, rawsse.reactor.fd_streams; or the loop's
transports, rawsse.reactor.transport_streams) only writes and watches; what a stream is
owed and when it ends is decided here and in the core.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Iterable
from typing import Protocol

from rawsse.auth.ledger import NO_ACCESS, Ledger
from rawsse.core.effects import OpenStream
from rawsse.core.metrics import Metrics
from rawsse.core.slots import Framing, SlotState, SlotTable, Why
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.ws.session import CLOSE_TIMEOUT, FAIL_LINGER, RECONNECT_FRAME, Sessions
from rawsse.reactor.presence import PresenceEvents


class Backend(Protocol):
    """What holds the streams' connections: it writes and watches; the registry decides."""

    def adopt(self, transport: asyncio.Transport) -> int:
        """Take the connection over; returns its slot. Raises OSError (no fd, no room in
        the poller), leaving the transport untouched."""
        ...

    def write_slice(self, slots: array[int], data: bytes, droppable: bool) -> int:
        """Write `data` to every open slot (queue it behind a blocked one, unless
        `droppable`); returns how many streams got it."""
        ...

    def write(self, slot: int, data: bytes) -> None:
        """Write to one stream that is not behind; what does not go out is its pending
        write (the stream is blocked then)."""
        ...

    def end_writing(self, slot: int) -> None:
        """End our side of the connection after what was written (a TCP FIN); the slot
        is still read until the client ends its side."""
        ...

    def detach(self, slot: int, abort: bool) -> None:
        """Stop watching and writing the slot (`abort`: drop unsent bytes, tell the peer
        at once); its fd or place is freed by `free`, once no pass can see it."""
        ...

    def free(self, slot: int) -> None: ...

    def dispose(self) -> None:
        """Release the backend's own resources (after every stream is closed)."""
        ...


class Quiet:
    """Who waits for the streams to go quiet (the shutdown's drain), told whenever
    something that could end the wait happens: a pass ends, a stream closes, a stream's
    pending bytes are out."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, quiet: Callable[[], bool], timeout: float) -> bool:
        """Until `quiet()`, or False once `timeout` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not quiet():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), remaining)
            except TimeoutError:
                pass
        return True


class StreamRegistry:
    def __init__(
        self,
        clock: Callable[[], float],
        table: SlotTable,
        subscriptions: Subscriptions,
        backend: Backend,
        sessions: Sessions,
        ledger: Ledger,
        metrics: Metrics,
        presence_events: PresenceEvents,
        quiet: Quiet,
    ) -> None:
        self.table, self.subscriptions, self.backend = table, subscriptions, backend
        self._clock, self._sessions, self._ledger, self._metrics = clock, sessions, ledger, metrics
        self._presence_events, self._quiet = presence_events, quiet
        self._closing: dict[int, float] = {}
        """WebSocket streams whose close frame is out, with when they are dropped if the
        client's close (or, failed, its end) has not come."""
        self.serial = array("Q", bytes(8 * table.capacity))
        """Which stream (its number in `streams_opened`) holds each slot, so a late answer
        (a publish's, the application's) never reaches a later stream on a reused slot."""

    @property
    def count(self) -> int:
        """Streams that hold a connection: open ones, and WebSocket ones closing."""
        return self.subscriptions.count + len(self._closing)

    @property
    def closing(self) -> bool:
        return bool(self._closing)

    def holds(self, slot: int, serial: int) -> bool:
        """Whether stream `serial` is still the open WebSocket stream of `slot`."""
        table = self.table
        return self.serial[slot] == serial and table.is_open(slot) and table.framing[slot] == Framing.WS

    def send(self, slot: int, data: bytes) -> None:
        """Write to one stream (an answer, a close frame, a preamble): behind what it
        already owes if it is behind, where a backlog over --max-pending-bytes cuts it as a
        slow consumer. The fan-out's slices keep the same rule inline (rawsse.reactor.
        fd_streams.FdBackend.write_slice): one call per stream is what they save."""
        table = self.table
        if slot in table.pending:  # behind, or closing behind a backlog
            if not table.queue(slot, data):
                self.close(slot, Why.SLOW)
            return
        self.backend.write(slot, data)

    # Opening

    def open(self, transport: asyncio.Transport, stream: OpenStream) -> int:
        """Make the connection the stream the API decided on; returns its slot. Raises
        OSError when no slot can be had; the connection is then untouched."""
        slot = self.backend.adopt(transport)
        self.open_slot(slot, stream)
        return slot

    def open_slot(self, slot: int, stream: OpenStream) -> None:
        """Make the connection in `slot` — one the backend holds already (accepted on the
        raw path) — the stream the API decided on, starting with its preamble."""
        topics, framing = stream.topics, stream.framing
        self.table.open(slot, framing)
        self.subscriptions.add(slot, topics, framing)
        if self._presence_events.enabled:
            self._presence_events.announce("join", stream.access.sub, topics)
        metrics = self._metrics
        metrics.streams_open += 1
        metrics.streams_opened += 1
        metrics.stream_slots = self.table.used
        self.serial[slot] = metrics.streams_opened
        if stream.access is not NO_ACCESS:
            self._ledger.add(slot, stream.access, keep_rules=framing == Framing.WS)
        if framing == Framing.WS:
            metrics.ws_streams_open += 1
            self._sessions.open(slot, stream.publisher)
        self.send(slot, stream.preamble)

    # Closing

    def close(self, slot: int, why: Why) -> None:
        """Close one stream; safe to call twice and from inside a pass. A WebSocket
        closed by the server gets a close frame first (1012: reconnect and resume) and
        its connection ends when the client answers (or CLOSE_TIMEOUT passes). Everything
        kept for the slot is released here."""
        table = self.table
        if not table.is_live(slot):
            return
        metrics = self._metrics
        if table.framing[slot] == Framing.WS:
            if why is Why.SERVER and table.state[slot] != SlotState.CLOSING:
                self.begin_close(slot, RECONNECT_FRAME)
                return
            self._closing.pop(slot, None)
            metrics.ws_streams_open -= 1
        self.unsubscribe(slot)  # before the ledger's column goes: a leave names its user
        metrics.streams_open -= 1
        metrics.streams_closed += 1
        if why is Why.SLOW:
            metrics.slow_consumers += 1
        elif why is Why.STALLED:
            metrics.send_timeouts += 1
        self.backend.detach(slot, abort=why in (Why.SLOW, Why.STALLED, Why.BROKEN))
        if table.close(slot):  # every column released
            self.backend.free(slot)
        metrics.stream_slots = table.used
        self._quiet.wake()

    def unsubscribe(self, slot: int) -> None:
        """Out of its group: no more events (its user leaves, where presence is told)."""
        events = self._presence_events
        if events.enabled:
            events.announce("leave", self._ledger.sub[slot], self.subscriptions.topics_of(slot))
        self.subscriptions.remove(slot)

    def begin_close(self, slot: int, frame: bytes) -> None:
        """Send a WebSocket stream's close frame (behind what it still owes its client)
        and nothing after it; the connection ends when the client's close comes."""
        table = self.table
        if not table.is_open(slot):
            return
        self.unsubscribe(slot)  # no more events: they would follow the close frame
        self.send(slot, frame)
        if table.is_open(slot):  # not cut as a slow consumer by that
            table.begin_closing(slot)
            self._closing[slot] = self._clock() + CLOSE_TIMEOUT

    def fail(self, slot: int, frame: bytes) -> None:
        """Fail a WebSocket stream for a protocol fault (RFC 6455 7.1.7): its close frame
        goes out and our end of the TCP connection right after it, so the client reads
        both at once and closes; what it sends meanwhile is read and dropped, for
        FAIL_LINGER at most. A client that is behind gets no close frame (it would wait
        behind bytes the client is not reading): its connection is cut."""
        table = self.table
        if not table.is_open(slot):
            self.close(slot, Why.PEER)
            return
        self.unsubscribe(slot)
        if slot not in table.pending:
            self.send(slot, frame)
        if not table.is_open(slot) or slot in table.pending:
            self.close(slot, Why.BROKEN)
            return
        table.begin_closing(slot)
        self.backend.end_writing(slot)
        self._closing[slot] = self._clock() + FAIL_LINGER

    def close_websockets(self, frame: bytes) -> None:
        """Begin the close handshake of every WebSocket stream (the shutdown's 1001)."""
        for group in self.subscriptions.groups():
            if group.framing == Framing.WS:
                for slot in list(group.members):  # begin_close edits members
                    self.begin_close(slot, frame)

    def close_topics(self, topics: Iterable[str]) -> int:
        """Close every stream subscribed to one of `topics` (an admin's /disconnect, a
        broker's loss); their clients reconnect and resume. Returns how many."""
        subscriptions = self.subscriptions
        groups = {group for topic in topics for group in subscriptions.groups_of_topic(topic)}
        slots = [slot for group in groups for slot in group.members]  # close() edits members
        for slot in slots:
            self.close(slot, Why.SERVER)
        return len(slots)

    def close_open_streams(self) -> None:
        """Close every stream subscribed to anything (a broker's loss of events this
        process had not read); their clients reconnect and resume."""
        slots = [slot for group in self.subscriptions.groups() for slot in group.members]
        for slot in slots:  # a list first: close() edits the members
            self.close(slot, Why.SERVER)

    def close_every_stream(self) -> None:
        """At shutdown, once the grace period is over: every stream and closing one."""
        self.close_open_streams()
        for slot in list(self._closing):
            self.close(slot, Why.SERVER)

    def sweep(self, now: float, send_timeout: float) -> None:
        """Once a second: close the streams whose pending bytes made no progress, and the
        WebSocket streams whose client did not answer our close (or end) in time."""
        for slot in self.table.stalled(now, send_timeout):
            self.close(slot, Why.STALLED)
        for slot in [slot for slot, deadline in self._closing.items() if deadline <= now]:
            self.close(slot, Why.PEER)
