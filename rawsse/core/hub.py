"""The hub: encode each numbered event once, keep history, queue events for the next
fan-out pass, and build what a new or resuming stream must receive first."""

from __future__ import annotations

import heapq
import json
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

from rawsse.core.control import Word, is_control, is_kept, read_word
from rawsse.core.events import Event
from rawsse.core.history import History
from rawsse.core.ids import EpochIds, IdScheme
from rawsse.core.metrics import Metrics
from rawsse.core.slots import Framing
from rawsse.core.sse import HEARTBEAT_COMMENT, encode_event
from rawsse.core.subscriptions import Group, Subscriptions
from rawsse.core.ws.frames import PING_FRAME
from rawsse.core.ws.messages import event_frame
from rawsse.errors import Overloaded, UnusableId

RESET_EVENT = "rawsse-reset"
"""The event a resuming stream receives when events may have been missed. Its data is JSON
`{"reason": ...}` with one of the reasons below; a client should reload its state."""

RETRY_EVENT = "rawsse-retry"
"""The event of a stream turned away for load or shutdown: JSON `{"reason": ...,
"retry": <ms>}`, reason `overloaded` or `shutting-down`. It has no id, and nothing was
missed: the client comes back after the delay and resumes with its own Last-Event-ID."""

MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""Bytes published but not yet taken by a fan-out pass. Past this, publishers get 503 until
the pass catches up: a publish burst can never grow memory without bound."""


FANOUT_SLICE = 2048
"""Writes per slice of a fan-out pass: at the ~5-8 us of a loopback write, about 10-15 ms,
short enough that accepting, publishing and /metrics stay responsive during a large
broadcast."""


class Delivery:
    """One write of `data` to every slot in `slots` (a snapshot taken when the pass began,
    so streams that join meanwhile wait for the next pass). `events` counts the events in
    `data`; a droppable delivery (a heartbeat) is skipped by streams already behind."""

    __slots__ = ("data", "droppable", "events", "slots")

    def __init__(self, slots: array[int], data: bytes, events: int, droppable: bool = False):
        self.slots = slots
        self.data = data
        self.events = events
        self.droppable = droppable


class Batch(NamedTuple):
    """What one fan-out pass takes from the hub."""

    deliveries: list[Delivery]
    words: list[Word]
    """The words of the `$control` events taken, for the process (rawsse.core.control)."""
    events: list[Event]
    """Every event taken, in order (the pass times them: rawsse_publish_latency_seconds)."""


class Archive(Protocol):
    """Events older than memory history keeps (the durable log of --data-dir)."""

    def since(self, starts: Mapping[str, int], until: int, page_bytes: int) -> tuple[list[Event], bool, bool]:
        """The events on each topic of `starts` after its sequence there, up to `until`,
        one page at most (at least one event); whether they are all (False: the page is
        full), and whether nothing of those topics after their starts is gone."""
        ...


class Hub:
    """One process's side of the event order: events arrive already numbered (from a
    broker), are encoded once, kept in history and queued for the next fan-out pass."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        history: History,
        metrics: Metrics,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        ids: IdScheme | None = None,
        archive: Archive | None = None,
    ) -> None:
        """`ids`: the scheme of the ids the broker gives (this hub reads them back for
        resumes); the broker's encoder makes them with the same scheme. `archive`: where a
        resume older than memory history is read from, a page at a time (None: such a
        resume is told it may have missed events)."""
        self._archive = archive
        self.subscriptions = subscriptions
        self.history = history
        self.metrics = metrics
        self.ids: IdScheme = ids or EpochIds()
        self._max_queued_bytes = max_queued_bytes
        self._taken = 0
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._queue: list[Event] = []
        self._queued_bytes = 0

    @property
    def has_queued(self) -> bool:
        """A pass has work: events queued, or waiters for events already taken (woken by
        the pass, never inside `accept`: a waiter opens a stream, which must not happen
        in the middle of a broker's delivery)."""
        return bool(self._queue) or bool(self._waiters and self._waiters[0][0] <= self._taken)

    @property
    def overloaded(self) -> bool:
        """True while the fan-out is so far behind that new events must wait."""
        return self._queued_bytes > self._max_queued_bytes

    def check_room(self) -> None:
        """Raise Overloaded while the fan-out is behind (see `overloaded`)."""
        if self.overloaded:
            raise Overloaded("fan-out is behind; retry shortly")

    def accept(self, events: list[Event]) -> bool:
        """Take numbered events, in order, for history and the next fan-out pass (which
        the process's intake schedules: see rawsse.reactor.intake); True when a pass is
        due. An event no stream of this process is on, with nothing queued before it, is
        taken at once: history alone, no pass (a stream that opens next replays it if it
        resumes, and never receives it live)."""
        queue = self._queue
        by_topic = self.subscriptions.groups_of_topic
        taken = self._taken
        for event in events:
            topics = event.topics
            if not is_control(topics):  # a word is for the processes: always queued
                if is_kept(topics):  # a `$stats` snapshot is for now: not for resumes
                    self.history.add(event)
                read = by_topic(topics[0]) if len(topics) == 1 else any(by_topic(t) for t in topics)
                if not read and not queue:
                    taken = event.sequence
                    continue
            queue.append(event)
            self._queued_bytes += len(event.wire)
        self.metrics.queued_bytes = self._queued_bytes
        self._taken = taken
        return self.has_queued

    def preload(self, events: Iterable[Event], dropped_before: int) -> None:
        """Fill history with events published before this process started (a restarted
        worker, a node joining a cluster), so resumes work here too; `dropped_before` is
        the highest sequence known to be gone."""
        self.history.mark_dropped(dropped_before)
        self._taken = max(self._taken, dropped_before)  # passed in the order, if not kept
        for event in events:
            if is_kept(event.topics):
                self.history.add(event)
            self._taken = event.sequence

    def take_batch(self) -> Batch:
        """Take every queued event for one pass: one write per group, holding the group's
        events in id order (coalesced when several queued up during the previous pass),
        and the words of the `$control` events among them, in order."""
        events, self._queue = self._queue, []
        self._queued_bytes = self.metrics.queued_bytes = 0
        if not events:
            self._wake_waiters()  # for events taken at once (see `accept`)
            return Batch([], [], events)
        self._taken = events[-1].sequence
        per_group: dict[Group, list[Event]] = {}
        words: list[Word] = []
        for event in events:
            if is_control(event.topics):
                word = read_word(event.item.data)
                if word is not None:
                    words.append(word)
                continue
            for topic in event.topics:
                for group in self.subscriptions.groups_of_topic(topic):
                    queued = per_group.get(group)
                    if queued is None:
                        per_group[group] = [event]
                    elif queued[-1] is not event:  # an event on two topics of one group
                        queued.append(event)
        deliveries = []
        for group, queued in per_group.items():
            if group.framing == Framing.SSE:
                data = queued[0].wire if len(queued) == 1 else b"".join(e.wire for e in queued)
            else:
                data = queued[0].frame if len(queued) == 1 else b"".join(e.frame for e in queued)
            deliveries.append(Delivery(group.members[:], data, len(queued)))
        # Only now, with every member snapshot taken: a waiter may open a stream at once,
        # whose replay already holds these events (it must not get them live as well).
        self._wake_waiters()
        return Batch(deliveries, words, events)

    def _wake_waiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._taken:
            heapq.heappop(self._waiters)[2]()

    def when_taken(self, sequence: int, callback: Callable[[], None]) -> None:
        """Call `callback` once a pass has taken the event `sequence` (at once if taken)."""
        if sequence <= self._taken:
            callback()
        else:
            heapq.heappush(self._waiters, (sequence, id(callback), callback))

    def forget(self, callback: Callable[[], None]) -> None:
        """Drop a `when_taken` callback that is no longer wanted (its wait timed out), so
        ids that never come cannot pile up waiters."""
        kept = [waiter for waiter in self._waiters if waiter[2] is not callback]
        if len(kept) != len(self._waiters):
            heapq.heapify(kept)
            self._waiters = kept

    def heartbeat_batch(self) -> list[Delivery]:
        """A heartbeat for every stream, for one pass: a comment for SSE, skipped by the
        streams behind; a ping frame for WebSocket, queued behind what a stream owes (the
        keep-alive check counts on every stream having been pinged)."""
        return [
            Delivery(g.members[:], HEARTBEAT_COMMENT, 0, True)
            if g.framing == Framing.SSE
            else Delivery(g.members[:], PING_FRAME, 0, False)
            for g in self.subscriptions.groups()
        ]

    def spread(self, choices: list[bytes], pick: Callable[[int], int]) -> list[Delivery]:
        """One of `choices` for every SSE stream, `pick(len(choices))` choosing which: the
        jittered `retry:` lines of a drain, each shared by the streams that drew it."""
        shares = [array("i") for _ in choices]
        count = len(choices)
        for group in self.subscriptions.groups():
            if group.framing != Framing.SSE:
                continue
            for slot in group.members:
                shares[pick(count)].append(slot)
        return [Delivery(share, data, 0) for share, data in zip(shares, choices, strict=True) if share]

    def not_yet_taken(self, last_event_id: str | None) -> int | None:
        """The sequence `last_event_id` names when this process has not taken it yet: with
        several processes sharing the order, another one may have delivered it and it is
        on its way here (see `when_taken`); None otherwise."""
        if not last_event_id:
            return None
        try:
            after = self.ids.sequence_of(last_event_id)
        except UnusableId:
            return None
        return after if after > self._taken else None

    def catch_up(
        self,
        topics: tuple[str, ...],
        last_event_id: str | None,
        page_bytes: int = 1 << 62,
        framing: Framing = Framing.SSE,
        acked: Mapping[str, int] | None = None,
    ) -> tuple[bytes, bool]:
        """What a stream opening now must receive before live events: the events after
        `last_event_id` that passes already took (later ones reach it live), or a reset
        event when that cannot be done without a possible gap. `acked`, for a stream that
        starts with what its user has not acknowledged (rawsse.core.acks): its user's
        topics start after the sequence acknowledged there, whatever the Last-Event-ID.

        A replay longer than `page_bytes` is cut after the last whole event that fits (at
        least one) and the second value is False: the caller sends that page and closes,
        and the client's reconnect fetches the next page. So a resume never holds more
        than a page of memory, however far behind the client is."""
        starts: dict[str, int] = {}
        unusable = None
        if last_event_id:
            self.metrics.resumes += 1
            try:
                after = self.ids.sequence_of(last_event_id)
                if after > self._taken:
                    raise UnusableId("unknown-id")
                starts = dict.fromkeys(topics, after)
            except UnusableId as exc:
                if not acked:
                    return self._reset(exc.reason, framing), True
                # Its user's topics still start after what the user acknowledged; the reset
                # comes first and, if nothing follows, moves the client on.
                unusable = exc.reason
        if acked:
            for topic, sequence in acked.items():
                starts[topic] = max(starts.get(topic, 0), sequence)
        if not starts:
            return b"", True
        taken = self._taken
        events, complete = self.history.since(starts, taken)
        archived_whole = True
        if not complete and self._archive is not None:  # older than memory: one page from disk
            events, archived_whole, complete = self._archive.since(starts, taken, page_bytes)
        size = 0
        for count, event in enumerate(events):
            size += len(event.wire)  # the page is measured in SSE bytes, whatever the framing
            if size > page_bytes and count:
                events = events[:count]
                whole = False
                break
        else:
            whole = True
        replay = b"".join(event.bytes_for(framing) for event in events)
        if not complete:
            # The replayed events carry ids; without any, the reset itself moves the client on.
            replay = self._reset("history-exceeded", framing, with_id=not events) + replay
        elif unusable is not None:
            replay = self._reset(unusable, framing, with_id=not events) + replay
        return replay, whole and archived_whole

    def unread(self, topic: str, after: int) -> tuple[int, int, bool]:
        """What history holds of `topic` after `after`: how many events, the newest's
        sequence (0: none), and whether none after `after` is gone from it."""
        events, complete = self.history.since({topic: after}, self._taken)
        return len(events), events[-1].sequence if events else 0, complete

    def holds(self, topic: str) -> bool:
        """Whether history holds events of `topic`."""
        return self.history.holds(topic)

    @property
    def newest(self) -> int:
        """The last sequence this process has in its order (taken, or queued)."""
        queue = self._queue
        return queue[-1].sequence if queue else self._taken

    def position_of(self, event_id: str) -> int:
        """The sequence of an event this process has in its order (taken by a pass, or
        queued for the next), by its id; raises UnusableId (malformed, of another epoch,
        or not here: `unknown-id`)."""
        sequence = self.ids.sequence_of(event_id)
        if sequence > self.newest:
            raise UnusableId("unknown-id")
        return sequence

    def _reset(self, reason: str, framing: Framing, with_id: bool = True) -> bytes:
        self.metrics.resets += 1
        event_id = self.ids.format(self._taken) if with_id else None
        data = json.dumps({"reason": reason})
        if framing == Framing.SSE:
            return encode_event(data, event_id, RESET_EVENT)
        return event_frame(event_id, (), RESET_EVENT, data)
