"""The default broker: one process numbers its own events; with --data-dir it writes each
batch to the durable log before the batch is delivered or answered.

With --data-dir, the batches of one loop turn share one commit (a group commit, as Redis
writes its append-only file once per event-loop turn, before that turn's replies): each
publish is written as it comes, and delivered and answered once the turn's commit is done
(synced too, with --fsync always). The commit comes at the end of the reactor's batch of
reads (`settle`), or at the turn's end (a callback) for publishes that came otherwise.
`publish_now` (embedding code, pipelined requests) commits at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rawsse.broker.base import BrokerNeeds, EventSink, LocalBroker, Outcome
from rawsse.core.events import Event
from rawsse.core.publish import PublishItem
from rawsse.errors import RawsseError, StoreUnavailable
from rawsse.store.durable import DurableLog, HistoryWindow

log = logging.getLogger("rawsse")


class Durability(NamedTuple):
    """What the memory broker needs for --data-dir."""

    log: DurableLog
    window: HistoryWindow
    """What memory history starts with from the log."""
    loop: asyncio.AbstractEventLoop
    """Where the turn's commit is called, if nothing settled it first."""


class MemoryBroker(LocalBroker):
    def __init__(self, needs: BrokerNeeds, durable: Durability | None = None) -> None:
        super().__init__(needs)
        self._durable = durable
        self._sequence = 0 if durable is None else durable[0].last_sequence
        self._committing: list[tuple[list[Event], list[str], Callable[[Outcome], None]]] = []
        """Batches written this turn, delivered and answered once its commit is done."""

    @property
    def answers_at_once(self) -> bool:
        return self._durable is None

    async def start(self, sink: EventSink) -> None:
        await super().start(sink)
        if self._durable is not None:
            events, before = self._durable.log.preload(self._durable.window)
            sink.preload(events, before)

    def publish_now(self, items: Sequence[PublishItem]) -> list[str]:
        while self._committing:  # the turn's earlier batches go first, in order, with any
            self._commit()  # that their answers brought (a pipelined request read next)
        events, ids = self._number(items)
        if self._durable is not None:
            self._write(events, commit=True)
        self._sequence = events[-1].sequence
        self.sink.deliver(events)
        return ids

    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        if self.answers_at_once:
            super().publish(items, done)
            return
        try:  # written now; committed, delivered and answered at the turn's end
            events, ids = self._number(items)
            self._write(events, commit=False)
        except StoreUnavailable as error:
            # The store rolled back the turn's whole transaction: its earlier batches too.
            refused, self._committing = self._committing, []
            for _, _, earlier in refused:
                _answer(earlier, error)
            done(error)
            return
        except RawsseError as error:
            done(error)
            return
        self._sequence = events[-1].sequence
        if not self._committing:
            assert self._durable is not None
            self._durable.loop.call_soon(self._commit)
        self._committing.append((events, ids, done))

    def _number(self, items: Sequence[PublishItem]) -> tuple[list[Event], list[str]]:
        """The items numbered and encoded, all or none (EventTooLarge, Overloaded)."""
        encode = self.encoder.encode
        format_id = self.encoder.ids.format
        now = self.clock()
        sequence = self._sequence
        ids = []
        events = []
        self.room.check_room()  # Overloaded while the fan-out is behind
        # A loop, not two comprehensions: each would be a call of its own, for the usual
        # single event.
        for item in items:
            sequence += 1
            event_id = format_id(sequence)
            events.append(encode(item, sequence, event_id, now))
            ids.append(event_id)
        return events, ids

    def _write(self, events: list[Event], commit: bool) -> None:
        assert self._durable is not None
        log = self._durable.log
        try:
            log.write(events)
            if commit:
                log.commit()
        except StoreUnavailable:
            self._sequence = log.forget_uncommitted()
            raise

    def settle(self) -> None:
        if self._committing:
            self._commit()

    def _commit(self) -> None:
        """The loop turn's group commit: its batches delivered and answered once
        committed (and synced, with --fsync always), or all refused."""
        batches, self._committing = self._committing, []
        if not batches:
            return  # settled already
        assert self._durable is not None
        try:
            self._durable.log.commit()
        except StoreUnavailable as error:
            self._sequence = self._durable.log.forget_uncommitted()
            for _, _, done in batches:
                _answer(done, error)
            return
        # Every batch delivered before any is answered: an answer that fails (a bug in
        # one connection's handling) never keeps a committed event from its subscribers.
        self.sink.deliver([event for events, _, _ in batches for event in events])
        for _, ids, done in batches:
            _answer(done, ids)

    def sweep(self) -> None:
        if self._durable is not None:
            self._durable.log.tick()

    def unready_reason(self) -> str | None:
        return None if self._durable is None else self._durable.log.unready_reason()

    async def stop(self) -> None:
        self.settle()  # the turn's publishes delivered and answered, not only committed
        if self._durable is not None:
            self._durable.log.close()


def _answer(done: Callable[[Outcome], None], outcome: Outcome) -> None:
    """One publisher's answer; a failure in it is that publisher's alone."""
    try:
        done(outcome)
    except Exception:
        log.exception("answering a publish failed")
