"""Carrying out what the core decides for open streams: a WebSocket client's frames
(rawsse.core.ws.session turns them into actions: send, set topics, publish, ask the
application, close, fail), the end of a stream's authorization (its token expired, its
user was disconnected), and the server's words to every process (a kick)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Protocol

from rawsse.auth.app import AppCall, answer_of
from rawsse.auth.ledger import AccessEnded, Ledger, StreamAccess
from rawsse.broker.base import Publish
from rawsse.core.access import Asking
from rawsse.core.acks import AckBook, Acked, AckedDone, AcksUnavailable, acknowledged_sequence
from rawsse.core.control import Kick, PresenceAnswer, PresenceAsk, Word, is_fresh
from rawsse.core.hub import RESET_EVENT
from rawsse.core.ids import IdScheme, id_or_none
from rawsse.core.metrics import Metrics
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing, SlotState, Why
from rawsse.core.sse import encode_event
from rawsse.core.ws.messages import error_reply, reply
from rawsse.core.ws.session import (
    ACCESS_ENDED_FRAMES,
    AckTopics,
    AskToSubscribe,
    BeginClose,
    Fail,
    Finish,
    PublishItems,
    Send,
    Sessions,
    SetTopics,
    check_topic_count,
    failed,
    published,
    subscribed,
)
from rawsse.errors import HttpError, RawsseError, TopicError
from rawsse.reactor.presence import PresenceEvents
from rawsse.reactor.registry import StreamRegistry

log = logging.getLogger("rawsse")


class Acknowledging:
    """A WebSocket's ack command carried out: its id read back to a sequence of the order
    (after catching up with it: another worker may have given it out), then recorded."""

    def __init__(self, book: AckBook, ids: IdReader, catch_up: Callable[[], None]) -> None:
        """`ids`: the hub, which reads an id back to the sequence of an event it took
        (`position_of`) and writes one (`ids.format`)."""
        self._book, self._ids, self._catch_up = book, ids, catch_up

    def id_of(self, sequence: int) -> str | None:
        return id_or_none(self._ids.ids, sequence)

    def acknowledge(self, topics: tuple[str, ...], event_id: str, done: AckedDone) -> None:
        if not self._book.kept:  # a server without a store: unavailable, whatever the id
            done(AcksUnavailable())
            return
        self._catch_up()
        try:
            sequence = acknowledged_sequence(self._ids, event_id)
        except HttpError as error:
            done(error)
            return
        self._book.acknowledge(topics, sequence, done)


class IdReader(Protocol):
    """What Acknowledging reads ids with (the hub)."""

    @property
    def ids(self) -> IdScheme: ...

    def position_of(self, event_id: str) -> int: ...


"""How a WebSocket's publish command is published (rawsse.reactor.effects.Publishing)."""

AskApp = Callable[[AppCall, Callable[[tuple[int, bytes] | str], None]], None]
"""How the application of --auth-url is asked (rawsse.reactor.app_client.AppClient.ask)."""

ACCESS_ENDED_EVENTS = {
    reason: encode_event(json.dumps({"reason": reason}), None, RESET_EVENT) for reason in ACCESS_ENDED_FRAMES
}
"""The last event of an SSE stream whose authorization ended: a `rawsse-reset` without
an id, so the client's Last-Event-ID still resumes it once it has a fresh credential."""


class StreamActions:
    def __init__(
        self,
        registry: StreamRegistry,
        sessions: Sessions,
        ledger: Ledger,
        metrics: Metrics,
        publish: Publish,
        catch_up: Callable[[], None],
        presence_events: PresenceEvents,
        on_word: Callable[[PresenceAsk | PresenceAnswer], None],
        wall: Callable[[], float],
        acknowledging: Acknowledging,
        ask_app: AskApp | None = None,
    ) -> None:
        self._registry, self._sessions, self._ledger, self._metrics = registry, sessions, ledger, metrics
        self._publish, self._presence_events = publish, presence_events
        self._catch_up = catch_up
        """Read what this process has not of the order yet, before a stream's topics change
        (what was published before is not live for a topic it takes now)."""
        self._on_word = on_word
        """Where the words of `$control` events go that are not the streams' (presence
        asks and answers: rawsse.reactor.presence.PresenceBoard.on_word)."""
        self._wall, self._ask_app = wall, ask_app
        """(`ask_app` is None without --auth-url: then no stream waits for an application.)"""
        self._asking: dict[int, int] = {}
        """WebSocket streams (their serial) whose subscribe waits for --auth-url's answer."""
        self._acknowledging = acknowledging

    # A WebSocket client's frames

    def receive(self, slot: int, data: bytes) -> None:
        """A WebSocket stream's client sent `data`: do what its frames ask. A fault here
        closes this stream only."""
        table = self._registry.table
        if table.framing[slot] != Framing.WS or not table.is_live(slot):
            return
        try:
            self._receive(slot, data)
        except Exception:
            log.exception("handling a WebSocket client's input failed; closing its stream")
            self._registry.close(slot, Why.PEER)

    def _receive(self, slot: int, data: bytes) -> None:
        registry = self._registry
        table = registry.table
        closing = table.state[slot] == SlotState.CLOSING
        topics = registry.subscriptions.topics_of(slot)
        for action in self._sessions.receive(slot, data, topics, closing):
            if not table.is_live(slot):
                return
            match action:
                case Send(frame):
                    registry.send(slot, frame)
                case SetTopics(after, answer):
                    self._set_topics(slot, after, answer)
                case PublishItems(items, ref):
                    self._publish_for(slot, items, ref)
                case AskToSubscribe(asking, topics, ref):
                    if slot in self._asking:  # one question at a time per connection
                        busy = error_reply("rate-limited", "a subscribe is being authorized", ref)
                        registry.send(slot, busy)
                    else:
                        self._ask_to_subscribe(slot, asking, topics, ref)
                case AckTopics(topics, event_id, ref):
                    self._ack_for(slot, topics, event_id, ref)
                case BeginClose(frame):
                    registry.begin_close(slot, frame)
                case Fail(frame):
                    registry.fail(slot, frame)
                case Finish():
                    registry.close(slot, Why.PEER)

    def _set_topics(self, slot: int, after: tuple[str, ...], answer: bytes) -> None:
        self._catch_up()
        subscriptions = self._registry.subscriptions
        before = subscriptions.topics_of(slot)
        subscriptions.remove(slot)
        subscriptions.add(slot, after, Framing.WS)
        events = self._presence_events
        if events.enabled:
            sub = self._ledger.sub[slot]
            events.announce("leave", sub, [t for t in before if t not in after])
            events.announce("join", sub, [t for t in after if t not in before])
        self._registry.send(slot, answer)

    def _ask_to_subscribe(
        self, slot: int, asking: Asking[StreamAccess], topics: tuple[str, ...], ref: object
    ) -> None:
        """A subscribe beyond the stream's grant, put to the application: on its answer
        the stream is on those topics too, or is told why not."""
        registry = self._registry
        serial = registry.serial[slot]
        self._asking[slot] = serial

        def answered(outcome: tuple[int, bytes] | str) -> None:
            if self._asking.get(slot) == serial:
                del self._asking[slot]
            if not registry.holds(slot, serial):
                return  # the stream is gone (its slot may serve another by now)
            limits = self._sessions.limits
            try:
                asking.finish(answer_of(outcome, limits.max_topic_length))
            except RawsseError as error:
                registry.send(slot, failed(error, ref))
                return
            after = tuple(dict.fromkeys((*registry.subscriptions.topics_of(slot), *topics)))
            try:  # again: other subscribes may have been answered meanwhile
                check_topic_count(after, limits.max_topics)
            except TopicError as too_many:
                registry.send(slot, failed(too_many, ref))
                return
            self._set_topics(slot, after, subscribed(after, ref))

        if self._ask_app is None:
            answered("no --auth-url")
        else:
            self._ask_app(asking.call, answered)

    def _publish_for(self, slot: int, items: list[PublishItem], ref: object) -> None:
        registry = self._registry
        serial = registry.serial[slot]

        def done(outcome: list[str] | RawsseError) -> None:
            if not registry.holds(slot, serial):
                return  # the stream is gone (its slot may serve another by now)
            answer = failed(outcome, ref) if isinstance(outcome, RawsseError) else published(outcome, ref)
            registry.send(slot, answer)

        self._publish(items, done)

    def _ack_for(self, slot: int, topics: tuple[str, ...], event_id: str, ref: object) -> None:
        registry = self._registry
        serial = registry.serial[slot]

        def done(outcome: Acked | RawsseError) -> None:
            if not registry.holds(slot, serial):
                return  # the stream is gone (its slot may serve another by now)
            if isinstance(outcome, RawsseError):
                registry.send(slot, failed(outcome, ref))
                return
            newest = self._acknowledging.id_of(max(outcome.values()))
            registry.send(slot, reply("acked", ref, topics=list(topics), id=newest))

        self._acknowledging.acknowledge(topics, event_id, done)

    # The end of a stream's authorization

    def end_access(self, slot: int, reason: AccessEnded) -> bool:
        """The stream's authorization is over: it gets a last word — a `rawsse-reset`
        event, or a WebSocket close 3000 or 3003 — and is closed. False for a stream
        already closing."""
        registry = self._registry
        table = registry.table
        if not table.is_open(slot):
            return False
        if table.framing[slot] == Framing.WS:
            registry.begin_close(slot, ACCESS_ENDED_FRAMES[reason])
            self._ledger.release(slot)  # no later subscribe or publish by this credential
            return True
        registry.send(slot, ACCESS_ENDED_EVENTS[reason])
        registry.close(slot, Why.SERVER)
        return True

    def disconnect_user(self, sub: str) -> int:
        """Close every stream of user `sub` held here; returns how many."""
        streams = self._ledger.streams_of(sub)
        ended = sum(self.end_access(slot, AccessEnded.DISCONNECTED) for slot in streams)
        self._metrics.users_disconnected += ended
        return ended

    def expire(self) -> None:
        """Once a second: end the streams whose token (or grant) expired."""
        expired = self._ledger.expired(self._wall())
        ended = sum(self.end_access(slot, AccessEnded.TOKEN_EXPIRED) for slot in expired)
        self._metrics.tokens_expired += ended

    def on_word(self, word: Word) -> None:
        """The one dispatcher of the words to every process (rawsse.core.control): one
        read too late is dropped; a kick is the streams'; presence goes to `on_word`. A
        failure here must not stop the pass that carries it."""
        try:
            if not is_fresh(word, self._wall()):
                return
            match word:
                case Kick(sub):
                    self.disconnect_user(sub)
                case PresenceAsk() | PresenceAnswer():
                    self._on_word(word)
        except Exception:
            log.exception("acting on a control word failed")
