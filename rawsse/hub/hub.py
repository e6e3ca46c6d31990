"""Publishing: assign ids, encode each event once, keep history, queue events for the next
fan-out pass, and build what a new or resuming stream must receive first."""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Callable, Iterable

from rawsse.hub.event import Event
from rawsse.hub.history import History
from rawsse.hub.subscriptions import Group, Subscriptions
from rawsse.metrics import Metrics
from rawsse.proto.ids import format_id, new_epoch, parse_id
from rawsse.proto.publish import PublishItem
from rawsse.proto.sse import HEARTBEAT, encode_event

RESET_EVENT = "rawsse-reset"
"""The event a resuming stream receives when events may have been missed. Its data is JSON
`{"reason": ...}` with one of the reasons below; a client should reload its state."""

MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""Bytes published but not yet taken by a fan-out pass. Past this, publishers get 503 until
the pass catches up: a publish burst can never grow memory without bound."""


class Overloaded(Exception):
    """Publishing is refused for now: the fan-out queue is full."""


class EventTooLarge(ValueError):
    """An event whose encoding exceeds the per-stream pending cap: a stream could never
    hold it while behind, and a resume page could not carry it."""


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


class Hub:
    def __init__(
        self,
        subscriptions: Subscriptions,
        history: History,
        metrics: Metrics,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        clock: Callable[[], float] = time.monotonic,
        max_event_bytes: int = 1 << 62,
    ) -> None:
        self.subscriptions = subscriptions
        self.history = history
        self.metrics = metrics
        self.epoch = new_epoch()
        self.on_queued: Callable[[], None] = lambda: None
        self._max_queued_bytes = max_queued_bytes
        self._max_event_bytes = max_event_bytes
        self._clock = clock
        self._sequence = 0
        self._taken = 0
        self._queue: list[Event] = []
        self._queued_bytes = 0

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def publish(self, items: Iterable[PublishItem]) -> list[str]:
        """Accept events (all or none), return their ids; fan-out happens later."""
        if self._queued_bytes > self._max_queued_bytes:
            raise Overloaded("fan-out is behind; retry shortly")
        now = self._clock()
        sequence = self._sequence
        encoded: list[Event] = []
        ids: list[str] = []
        for item in items:  # encode all first: a batch is accepted whole or not at all
            sequence += 1
            event_id = format_id(self.epoch, sequence)
            wire = encode_event(item.data, event_id, item.event)
            if len(wire) > self._max_event_bytes:
                raise EventTooLarge(
                    f"event is {len(wire)} bytes encoded; the limit is {self._max_event_bytes}"
                )
            encoded.append(Event(sequence, item.topics, wire, now))
            ids.append(event_id)
        self._sequence = sequence
        for event in encoded:
            self.history.add(event)
            self._queue.append(event)
            self._queued_bytes += len(event.wire)
        self.metrics.events_published += len(ids)
        if ids:
            self.on_queued()
        return ids

    def take_batch(self) -> list[Delivery]:
        """Take every queued event for one pass: one write per group, holding the group's
        events in id order (coalesced when several queued up during the previous pass)."""
        events, self._queue = self._queue, []
        self._queued_bytes = 0
        if not events:
            return []
        self._taken = events[-1].sequence
        per_group: dict[Group, list[Event]] = {}
        for event in events:
            for topic in event.topics:
                for group in self.subscriptions.groups_of_topic(topic):
                    queued = per_group.get(group)
                    if queued is None:
                        per_group[group] = [event]
                    elif queued[-1] is not event:  # an event on two topics of one group
                        queued.append(event)
        deliveries = []
        for group, queued in per_group.items():
            data = queued[0].wire if len(queued) == 1 else b"".join(e.wire for e in queued)
            deliveries.append(Delivery(group.members[:], data, len(queued)))
        return deliveries

    def heartbeat(self) -> list[Delivery]:
        return [Delivery(g.members[:], HEARTBEAT, 0, True) for g in self.subscriptions.groups()]

    def catch_up(
        self, topics: tuple[str, ...], last_event_id: str | None, page_bytes: int = 1 << 62
    ) -> tuple[bytes, bool]:
        """What a stream opening now must receive before live events: the events after
        `last_event_id` that passes already took (later ones reach it live), or a reset
        event when that cannot be done without a possible gap.

        A replay longer than `page_bytes` is cut after the last whole event that fits (at
        least one) and the second value is False: the caller sends that page and closes,
        and the client's reconnect fetches the next page. So a resume never holds more
        than a page of memory, however far behind the client is."""
        if not last_event_id:
            return b"", True
        self.metrics.resumes += 1
        parsed = parse_id(last_event_id)
        if parsed is None:
            return self._reset("malformed-id"), True
        if parsed.epoch != self.epoch:
            return self._reset("unknown-epoch"), True
        if parsed.sequence > self._taken:
            return self._reset("unknown-id"), True
        events, complete = self.history.since(topics, parsed.sequence, self._taken)
        size = 0
        for count, event in enumerate(events):
            size += len(event.wire)
            if size > page_bytes and count:
                events = events[:count]
                whole = False
                break
        else:
            whole = True
        replay = b"".join(event.wire for event in events)
        if not complete:
            # The replayed events carry ids; without any, the reset itself moves the client on.
            replay = self._reset("history-exceeded", with_id=not events) + replay
        return replay, whole

    def _reset(self, reason: str, with_id: bool = True) -> bytes:
        self.metrics.resets += 1
        event_id = format_id(self.epoch, self._taken) if with_id else None
        return encode_event(json.dumps({"reason": reason}), event_id, RESET_EVENT)
