"""The stream reactor: fan-out passes in slices, coalescing, heartbeats, the shutdown
drain and the life of every stream, over one slot table (rawsse.core.slots) whatever
backend holds the connections: bare file descriptors in an epoll/kqueue poller
(rawsse.reactor.fd_streams), or the loop's transports (rawsse.reactor.transport_streams).
A backend only performs writes and registrations.

A pass takes every queued event from the hub and writes each group's bytes to each of its
members. It runs in slices of `slice_size` writes with a loop iteration between them, so a
broadcast to tens of thousands of streams never stops the loop from accepting and
answering; events published meanwhile wait for the next pass, which sends them coalesced,
in order, in one write per stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from rawsse.auth.app import AppCall, answer_of
from rawsse.auth.ledger import NO_ACCESS, AccessEnded, Ledger
from rawsse.auth.rules import NO_TOPICS, TopicRules
from rawsse.config import FANOUT_SLICE, MAX_PENDING_BYTES, SEND_TIMEOUT
from rawsse.core.access import Asking
from rawsse.core.control import is_fresh
from rawsse.core.effects import OpenStream
from rawsse.core.hub import RESET_EVENT, Delivery, Hub
from rawsse.core.metrics import Metrics
from rawsse.core.presence import presence_event
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing, SlotState, SlotTable, Why
from rawsse.core.sse import encode_event
from rawsse.core.topics import PRESENCE_PREFIX
from rawsse.core.ws.messages import error_reply
from rawsse.core.ws.session import (
    ACCESS_ENDED_FRAMES,
    CLOSE_TIMEOUT,
    FAIL_LINGER,
    RECONNECT_FRAME,
    STUCK_FRAME,
    AskToSubscribe,
    BeginClose,
    Fail,
    Finish,
    PublishItems,
    Send,
    Sessions,
    SetTopics,
    failed,
    published,
    subscribed,
)
from rawsse.errors import RawsseError, TopicError

log = logging.getLogger("rawsse")


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_pending_bytes: int = MAX_PENDING_BYTES
    send_timeout: float = SEND_TIMEOUT
    slice_size: int = FANOUT_SLICE


class StreamEvents(Protocol):
    """What a backend reports of the streams it holds (Streams is this), given to the
    backend when it starts: a backend is started last, once what it reports to is built."""

    def close(self, slot: int, why: Why) -> None:
        """A stream must close: its client went away, or is too slow."""
        ...

    def drained(self) -> None:
        """A stream's pending bytes are all out."""
        ...

    def receive(self, slot: int, data: bytes) -> None:
        """A WebSocket stream's client sent `data` (SSE streams' input is read and dropped)."""
        ...


class Backend(Protocol):
    """What holds the streams' connections: it writes and watches; Streams decides."""

    def adopt(self, transport: asyncio.Transport) -> int:
        """Take the connection over; returns its slot. Raises OSError (no fd, no room in
        the poller), leaving the transport untouched."""
        ...

    def write_slice(self, slots: array[int], data: bytes, droppable: bool) -> int:
        """Write `data` to every open slot (queue it behind a blocked one, unless
        `droppable`); returns how many streams got it."""
        ...

    def send(self, slot: int, data: bytes) -> None:
        """Write to one stream, queueing what does not go out."""
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


Publisher = Callable[[list[PublishItem], Callable[[list[str] | RawsseError], None]], None]
"""How a WebSocket's publish command, and a presence event, are published."""

AskApp = Callable[[AppCall, Callable[[tuple[int, bytes] | str], None]], None]
"""How the application of --auth-url is asked (rawsse.reactor.app_client.AppClient.ask)."""

def _best_effort(outcome: list[str] | RawsseError) -> None:
    """A presence event the order would not take is not retried."""


ACCESS_ENDED_EVENTS = {
    reason: encode_event(json.dumps({"reason": reason}), None, RESET_EVENT)
    for reason in ACCESS_ENDED_FRAMES
}
"""The last event of an SSE stream whose authorization ended: a `rawsse-reset` without
an id, so the client's Last-Event-ID still resumes it once it has a fresh credential."""


class Streams:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hub: Hub,
        metrics: Metrics,
        limits: StreamLimits,
        table: SlotTable,
        backend: Backend,
        sessions: Sessions,
        publish: Publisher,
        on_word: Callable[[dict[str, Any]], None],
        ledger: Ledger | None = None,
        wall: Callable[[], float] = time.time,
        ask_app: AskApp | None = None,
        presence_events: TopicRules = NO_TOPICS,
    ) -> None:
        self._loop, self._hub, self._metrics, self._limits = loop, hub, metrics, limits
        self.ledger = ledger or Ledger(table.capacity)
        """Who holds each authorized stream, until when (rawsse.auth.ledger)."""
        self.presence_events = presence_events
        """The topics whose streams' joins and leaves are published (--presence-events)."""
        self._wall = wall
        self.table = table
        self.backend = backend
        self.sessions = sessions
        self._publisher = publish
        self._on_word = on_word
        """Where the words of `$control` events go that are not for the streams (presence
        asks and answers: rawsse.reactor.presence.PresenceBoard.on_word)."""
        self._ask_app = ask_app
        """None without --auth-url: then no stream ever waits for an application."""
        self._asking: dict[int, int] = {}
        """WebSocket streams (their serial) whose subscribe waits for --auth-url's answer."""
        self._closing: dict[int, float] = {}
        """WebSocket streams whose close frame is out, with when they are dropped if the
        client's close has not come."""
        self._serial = array("Q", bytes(8 * table.capacity))
        """Which stream (its number in `streams_opened`) holds each slot, so a publish's
        late answer never reaches a later stream on a reused slot."""
        self.subscriptions = hub.subscriptions
        self._scheduled = False
        self._passing = False
        self._work: deque[Delivery] = deque()
        self._offset = 0
        self._heartbeat_due = False
        self._pinged = False
        """A heartbeat pass (with its pings) was taken since the last keep-alive check."""
        self._closed = False
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def count(self) -> int:
        return self.subscriptions.count + len(self._closing)

    # A stream's life

    def open(self, transport: asyncio.Transport, stream: OpenStream, early: bytes = b"") -> None:
        """Make the connection the stream the API decided on. Raises OSError when no
        slot can be had; the connection is then untouched."""
        self.open_slot(self.backend.adopt(transport), stream, early)

    def open_slot(self, slot: int, stream: OpenStream, early: bytes = b"") -> None:
        """Make the connection in `slot` — one the backend holds already (accepted on the
        raw path) — the stream the API decided on, starting with its preamble. A
        WebSocket's `early` bytes are what its client sent before the 101 was out."""
        topics, framing = stream.topics, stream.framing
        self.table.open(slot, framing)
        self.subscriptions.add(slot, topics, framing)
        if self.presence_events:
            self._announce("join", stream.access.sub, topics)
        metrics = self._metrics
        metrics.streams_open += 1
        metrics.streams_opened += 1
        metrics.stream_slots = self.table.used
        self._serial[slot] = metrics.streams_opened
        if stream.access is not NO_ACCESS:
            self.ledger.add(slot, stream.access, keep_rules=framing == Framing.WS)
        if framing == Framing.WS:
            metrics.ws_streams_open += 1
            self.sessions.open(slot, stream.publisher)
        self.backend.send(slot, stream.preamble)
        if early:
            self.receive(slot, early)

    def close(self, slot: int, why: Why) -> None:
        """Close one stream; safe to call twice and from inside a pass. A WebSocket
        closed by the server gets a close frame first (1012: reconnect and resume) and
        its connection ends when the client answers (or CLOSE_TIMEOUT passes)."""
        table = self.table
        if not table.is_live(slot):
            return
        if table.framing[slot] == Framing.WS:
            if why is Why.SERVER and table.state[slot] != SlotState.CLOSING:
                self.begin_close(slot, RECONNECT_FRAME)
                return
            self._closing.pop(slot, None)
            self.sessions.forget(slot)
            self._metrics.ws_streams_open -= 1
        self._unsubscribe(slot)
        if self.ledger.capacity:
            self.ledger.remove(slot)
        metrics = self._metrics
        metrics.streams_open -= 1
        metrics.streams_closed += 1
        if why is Why.SLOW:
            metrics.slow_consumers += 1
        elif why is Why.STALLED:
            metrics.send_timeouts += 1
        self.backend.detach(slot, abort=why in (Why.SLOW, Why.STALLED, Why.BROKEN))
        if self.table.close(slot):
            self.backend.free(slot)
        metrics.stream_slots = self.table.used
        self._wake_idle_waiters()

    # WebSocket streams

    def begin_close(self, slot: int, frame: bytes) -> None:
        """Send a WebSocket stream's close frame (behind what it still owes its client)
        and nothing after it; the connection ends when the client's close comes."""
        table = self.table
        if not table.is_open(slot):
            return
        self._unsubscribe(slot)  # no more events: they would follow the close frame
        self.backend.send(slot, frame)
        if table.is_open(slot):  # not cut as a slow consumer by that
            table.begin_closing(slot)
            self._closing[slot] = self._loop.time() + CLOSE_TIMEOUT

    def fail(self, slot: int, frame: bytes) -> None:
        """Fail a WebSocket stream for a protocol fault (RFC 6455 7.1.7): its close frame
        goes out and our end of the TCP connection right after it, so the client reads
        both at once and closes; what it sends meanwhile is read and dropped, for
        FAIL_LINGER at most. A client that is behind gets no close frame (it would wait
        behind bytes the client is not reading): its connection just ends."""
        table = self.table
        if not table.is_open(slot):
            self.close(slot, Why.PEER)
            return
        self._unsubscribe(slot)
        if slot not in table.pending:
            self.backend.send(slot, frame)
        if not table.is_open(slot) or slot in table.pending:
            self.close(slot, Why.BROKEN)
            return
        table.begin_closing(slot)
        self.backend.end_writing(slot)
        self._closing[slot] = self._loop.time() + FAIL_LINGER

    def close_websockets(self, frame: bytes) -> None:
        """Begin the close handshake of every WebSocket stream (the shutdown's 1001)."""
        for group in self.subscriptions.groups():
            if group.framing == Framing.WS:
                for slot in list(group.members):  # begin_close edits members
                    self.begin_close(slot, frame)

    def receive(self, slot: int, data: bytes) -> None:
        """A WebSocket stream's client sent `data`: do what its frames ask. A fault here
        closes this stream only."""
        if self.table.framing[slot] != Framing.WS or not self.table.is_live(slot):
            return
        try:
            self._receive(slot, data)
        except Exception:
            log.exception("handling a WebSocket client's input failed; closing its stream")
            self.close(slot, Why.PEER)

    def _receive(self, slot: int, data: bytes) -> None:
        table = self.table
        closing = table.state[slot] == SlotState.CLOSING
        topics = self.subscriptions.topics_of(slot)
        for action in self.sessions.receive(slot, data, topics, closing):
            if not table.is_live(slot):
                return
            match action:
                case Send(frame):
                    self.backend.send(slot, frame)
                case SetTopics(after, answer):
                    self._set_topics(slot, after, answer)
                case PublishItems(items, ref):
                    self._publish(slot, items, ref)
                case AskToSubscribe(asking, topics, ref):
                    if slot in self._asking:  # one question at a time per connection
                        busy = error_reply("rate-limited", "a subscribe is being authorized", ref)
                        self.backend.send(slot, busy)
                    else:
                        self._ask_to_subscribe(slot, asking, topics, ref)
                case BeginClose(frame):
                    self.begin_close(slot, frame)
                case Fail(frame):
                    self.fail(slot, frame)
                case Finish():
                    self.close(slot, Why.PEER)

    def _set_topics(self, slot: int, after: tuple[str, ...], answer: bytes) -> None:
        before = self.subscriptions.topics_of(slot)
        self.subscriptions.remove(slot)
        self.subscriptions.add(slot, after, Framing.WS)
        if self.presence_events:
            sub = self.ledger.sub[slot]
            self._announce("leave", sub, [t for t in before if t not in after])
            self._announce("join", sub, [t for t in after if t not in before])
        self.backend.send(slot, answer)

    def _ask_to_subscribe(self, slot: int, asking: Asking, topics: tuple[str, ...], ref: object) -> None:
        """A subscribe beyond the stream's grant, put to the application: on its answer
        the stream is on those topics too, or is told why not."""
        serial = self._serial[slot]
        self._asking[slot] = serial

        def answered(outcome: tuple[int, bytes] | str) -> None:
            if self._asking.get(slot) == serial:
                del self._asking[slot]
            table = self.table
            if self._serial[slot] != serial or not table.is_open(slot) or table.framing[slot] != Framing.WS:
                return  # the stream is gone (its slot may serve another by now)
            try:
                asking.finish(answer_of(outcome, self.sessions.limits.max_topic_length))
            except RawsseError as error:
                self.backend.send(slot, failed(error, ref))
                return
            after = tuple(dict.fromkeys((*self.subscriptions.topics_of(slot), *topics)))
            limit = self.sessions.limits.max_topics
            if len(after) > limit:  # other subscribes were answered meanwhile
                self.backend.send(slot, failed(TopicError(f"at most {limit} topics per stream"), ref))
                return
            self._set_topics(slot, after, subscribed(after, ref))

        if self._ask_app is None:
            answered("no --auth-url")
        else:
            self._ask_app(asking.call, answered)

    def _publish(self, slot: int, items: list[PublishItem], ref: object) -> None:
        serial = self._serial[slot]

        def done(outcome: list[str] | RawsseError) -> None:
            table = self.table
            if self._serial[slot] != serial or not table.is_open(slot) or table.framing[slot] != Framing.WS:
                return  # the stream is gone (its slot may serve another by now)
            answer = failed(outcome, ref) if isinstance(outcome, RawsseError) else published(outcome, ref)
            self.backend.send(slot, answer)

        self._publisher(items, done)

    def _check_keepalive(self) -> None:
        """Before a heartbeat's pings: drop the WebSocket streams that sent nothing (no
        pong, no frame) since the last pings went out. Those behind on their bytes are left
        to the send timeout: their pings may still be queued."""
        if not self._pinged:
            return  # the last pings have not gone out yet: nobody could answer them
        self._pinged = False
        table = self.table
        slots = [
            slot
            for group in self.subscriptions.groups()
            if group.framing == Framing.WS
            for slot in group.members
            if table.state[slot] != SlotState.BLOCKED
        ]
        for slot in self.sessions.unanswered(slots):
            self.close(slot, Why.PEER)

    # Authorization

    def end_access(self, slot: int, reason: AccessEnded) -> bool:
        """The stream's authorization is over (`token-expired`, `disconnected`): it gets
        a last word — a `rawsse-reset` event, or a WebSocket close 3000 or 3003 — and is
        closed. False for a stream already closing."""
        table = self.table
        if not table.is_open(slot):
            return False
        if table.framing[slot] == Framing.WS:
            self.begin_close(slot, ACCESS_ENDED_FRAMES[reason])
            self.ledger.remove(slot)  # no later subscribe or publish by this credential
            return True
        self.backend.send(slot, ACCESS_ENDED_EVENTS[reason])
        self.close(slot, Why.SERVER)
        return True

    def disconnect_user(self, sub: str) -> int:
        """Close every stream of user `sub` held here; returns how many."""
        ended = sum(self.end_access(slot, AccessEnded.DISCONNECTED) for slot in self.ledger.streams_of(sub))
        self._metrics.users_disconnected += ended
        return ended

    def _unsubscribe(self, slot: int) -> None:
        if self.presence_events:
            self._announce("leave", self.ledger.sub[slot], self.subscriptions.topics_of(slot))
        self.subscriptions.remove(slot)

    def _announce(self, kind: str, sub: str | None, topics: Iterable[str]) -> None:
        """Join or leave events on `$presence:<topic>`, for the topics that ask for them."""
        rules = self.presence_events
        items = [
            presence_event(kind, topic, sub)
            for topic in topics
            if rules.allows(topic) and not topic.startswith(PRESENCE_PREFIX)  # none of its own
        ]
        if items:
            self._publisher(items, _best_effort)

    def on_control(self, word: dict[str, Any]) -> None:
        """A word to every process (rawsse.core.control): a kick is the streams'; the
        others go on to `on_word`. A failure here must not stop the pass that carries it."""
        try:
            sub = word.get("disconnect")
            if isinstance(sub, str):
                if is_fresh(word, self._wall()):
                    self.disconnect_user(sub)
            else:
                self._on_word(word)
        except Exception:
            log.exception("acting on a control word failed")

    def close_topics(self, topics: Iterable[str]) -> int:
        """Close every stream subscribed to one of `topics` (an admin's /disconnect);
        their clients reconnect and resume. Returns how many were closed."""
        subscriptions = self.subscriptions
        groups = {group for topic in topics for group in subscriptions.groups_of_topic(topic)}
        slots = [slot for group in groups for slot in group.members]  # close() edits members
        for slot in slots:
            self.close(slot, Why.SERVER)
        return len(slots)

    def close_all(self) -> None:
        """Close every stream now, abandoning a pass still running (at shutdown, once the
        grace period is over), and release the backend."""
        self._closed = True
        self._work.clear()
        self._passing = False
        for slot in self.table.end_pass():
            self.backend.free(slot)
        for group in self.subscriptions.groups():
            for slot in list(group.members):
                self.close(slot, Why.SERVER)
        for slot in list(self._closing):
            self.close(slot, Why.SERVER)
        self.backend.dispose()
        self._wake_idle_waiters()

    def sweep(self, now: float) -> None:
        """Once a second: close the streams whose pending bytes made no progress, the
        WebSocket streams whose client did not answer our close in time, and the streams
        whose token expired."""
        for slot in self.table.stalled(now, self._limits.send_timeout):
            self.close(slot, Why.STALLED)
        for slot in [slot for slot, deadline in self._closing.items() if deadline <= now]:
            self.close(slot, Why.PEER)
        expired = self.ledger.expired(self._wall())
        ended = sum(self.end_access(slot, AccessEnded.TOKEN_EXPIRED) for slot in expired)
        self._metrics.tokens_expired += ended

    # Fan-out passes

    def schedule(self) -> None:
        if not self._scheduled and not self._passing and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._start_pass)

    def heartbeat(self) -> None:
        """A heartbeat is due: the next pass (at once, if none runs) carries it; first
        the WebSocket streams that did not answer the last pings are dropped, and those
        whose frame stayed half-read since the last heartbeat are closed."""
        self._check_keepalive()
        for slot in self.sessions.stuck():
            self.begin_close(slot, STUCK_FRAME)
        self._heartbeat_due = True
        self.schedule()

    def announce(self, deliveries: list[Delivery]) -> None:
        """Write `deliveries` to their streams at once, in one go, between two slices of
        any running pass (a write is whole, or its rest is pending, so nothing is cut in
        two): a drain's reconnect advice, which must not wait for a grace period that may
        be zero."""
        for delivery in deliveries:
            written = self.backend.write_slice(delivery.slots, delivery.data, delivery.droppable)
            self._metrics.bytes_written += len(delivery.data) * written

    def _start_pass(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        work: list[Delivery] = []
        if self._hub.has_queued:
            batch = self._hub.take_batch()
            work = batch.deliveries
            for word in batch.words:
                self.on_control(word)
        if self._heartbeat_due:  # with the events, if any: a steady stream of them must
            self._heartbeat_due = False  # not hold back the pings the keep-alive relies on
            self._pinged = True
            work.extend(self._hub.heartbeat_batch())
        if not work:
            self._wake_idle_waiters()
            return
        self._work.extend(work)
        self._offset = 0
        self._passing = True
        self.table.begin_pass()
        self._run_slice()

    def _run_slice(self) -> None:
        budget = self._limits.slice_size
        work = self._work
        metrics = self._metrics
        write_slice = self.backend.write_slice
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
                    self.close(slot, Why.SERVER)
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
        self._passing = False
        for slot in self.table.end_pass():
            self.backend.free(slot)
        metrics.stream_slots = self.table.used
        if self._hub.has_queued or self._heartbeat_due:
            self.schedule()
        else:
            self._wake_idle_waiters()

    # The shutdown drain

    @property
    def has_pending(self) -> bool:
        return bool(self.table.pending)

    async def drain(self, timeout: float) -> bool:
        """Wait until no pass runs, no stream has pending bytes and no WebSocket awaits
        its client's close; False on timeout."""
        deadline = self._loop.time() + timeout
        while self._passing or self._scheduled or self.has_pending or self._closing:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), remaining)
            except TimeoutError:
                pass
        return True

    def drained(self) -> None:
        """A backend's note that a stream's pending bytes are all out."""
        self._wake_idle_waiters()

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
