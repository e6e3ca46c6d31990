"""Where the API's effects (their types are in rawsse.core.effects) are carried out:
publishing through the broker, waiting for an id with the loop's timer, closing streams,
asking the application and counting presence. Each ends in an answer for the connection
that asked — bytes or a stream to open (which the connection's driver opens) — or in a
RawsseError. Publishing itself, for every publisher of the process, is `Publishing`."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from rawsse.auth.app import AppCall
from rawsse.broker.base import Broker, Outcome
from rawsse.core import effects as fx
from rawsse.core.acks import AckBook, Unacked
from rawsse.core.control import Kick, word_item
from rawsse.core.effects import Answer, Effect, Respond
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.presence import Tally
from rawsse.core.publish import PublishItem
from rawsse.errors import HttpError, RawsseError
from rawsse.reactor.app_client import AppClient
from rawsse.reactor.presence import PresenceBoard

log = logging.getLogger("rawsse")

Reply = Callable[[Answer | RawsseError], None]
Cancel = Callable[[], None]

INTERNAL_ERROR = HttpError(500, "internal error")

Outcome_ = TypeVar("Outcome_")


def internal_error() -> HttpError:
    """The answer to a request whose handling raised anything but a RawsseError: a bug,
    logged (called from the `except`), and answered 500 — the one place that rule is kept."""
    log.exception("request failed")
    return INTERNAL_ERROR


def decided(make: Callable[[], Outcome_]) -> Outcome_ | RawsseError:
    """What `make()` comes to, or why not: a refusal (RawsseError) as it is, anything else
    as `internal_error` says."""
    try:
        return make()
    except RawsseError as error:
        return error
    except Exception:
        return internal_error()


class Route(enum.Enum):
    """Where a publish came from, as /metrics counts them (rawsse_publishes_total)."""

    HTTP = "http"
    WS = "ws"
    LOCAL = "local"


class Publishing:
    """Publishing through the broker, for every publisher of this process (POST /publish,
    a WebSocket's publish command, embedding code), which counts what was accepted, by
    route; and the server's own words (kicks, presence), which are not publishes."""

    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._broker, self._metrics = broker, metrics
        self.at_once = broker.local
        """A publish can be answered before `publish_now` returns (a broker of this machine)."""
        self.in_turn = broker.local and not broker.answers_at_once
        """Publishes wait for their turn's commit (`settle`): --data-dir's group commit."""

    def publish(
        self, items: Sequence[PublishItem], done: Callable[[Outcome], None], route: Route = Route.HTTP
    ) -> None:
        def published(outcome: Outcome) -> None:
            if not isinstance(outcome, RawsseError):
                self._count(route, len(outcome))  # a publisher's, once accepted
            done(outcome)

        self._broker.publish(items, published)

    def publish_ws(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        """A WebSocket stream's publish command."""
        self.publish(items, done, Route.WS)

    def publish_now(self, items: Sequence[PublishItem], route: Route = Route.LOCAL) -> list[str]:
        """Publish with a broker of this machine (embedding code; a request answered
        where it was read); raises what refused."""
        ids = self._broker.publish_now(items)
        self._count(route, len(ids))
        return ids

    def _count(self, route: Route, count: int) -> None:
        metrics = self._metrics
        metrics.events_published += count
        if route is Route.HTTP:
            metrics.published_http += count
        elif route is Route.WS:
            metrics.published_ws += count
        else:
            metrics.published_local += count

    def settle(self) -> None:
        """Deliver and answer the publishes that wait for this turn's commit."""
        self._broker.settle()

    def put_words(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        """Put `$control` words in the order (rawsse.core.control)."""
        self._broker.publish(items, done)


class EffectRunner:
    def __init__(
        self,
        publishing: Publishing,
        hub: Hub,
        close_topics: Callable[[tuple[str, ...]], int],
        loop: asyncio.AbstractEventLoop,
        presence: PresenceBoard,
        acks: AckBook,
        app: AppClient | None = None,
    ) -> None:
        self._publishing, self._hub, self._loop = publishing, hub, loop
        self._presence = presence
        self._acks = acks
        self._app = app
        self._close_topics = close_topics

    def run_now(self, effect: Effect) -> Respond | RawsseError | None:
        """Carry out an effect whose answer is known at once — an answer, or a publish to
        a broker of this machine — and return it; None (nothing done) for one that
        waits, which `run` carries out."""
        if isinstance(effect, Respond):
            return effect
        if isinstance(effect, fx.Publish) and self._publishing.at_once:
            try:
                return effect.answer(self._publishing.publish_now(effect.items, Route.HTTP))
            except RawsseError as error:
                return error
            except Exception:
                return internal_error()
        return None

    @property
    def in_turn(self) -> bool:
        """A publish is answered when the turn settles (`settle`), not at once."""
        return self._publishing.in_turn

    def settle(self) -> None:
        self._publishing.settle()

    def publish(self, effect: fx.Publish, reply: Callable[[Respond | RawsseError], None]) -> None:
        """Carry out a publish: `reply` gets its answer once the broker gave the ids (at
        once, when its turn settles, or after a round trip), or why not."""
        answer = effect.answer

        def published(outcome: Outcome) -> None:
            reply(outcome if isinstance(outcome, RawsseError) else decided(lambda: answer(outcome)))

        self._publishing.publish(effect.items, published)

    def run(self, effect: Effect, reply: Reply) -> Cancel | None:
        """Carry `effect` out; `reply` gets how it ended (at once, or later). Returns a
        way to give up on it when its connection goes away first, if it waits."""
        match effect:
            case fx.Respond() | fx.OpenStream():
                reply(effect)
            case fx.Publish():
                self.publish(effect, reply)
            case fx.CloseStreams(topics, answer_count):
                closed = self._close_topics(topics)
                self._then(lambda: answer_count(closed), reply)
            case fx.DisconnectUser(sub, answer):
                item = word_item(Kick(sub, time.time()))
                self._publishing.put_words([item], lambda outcome: self._told(outcome, answer, reply))
            case fx.WaitTaken(sequence, timeout, then):
                return self._wait(sequence, timeout, then, reply)
            case fx.AskApplication(call, then):
                return self._ask(call, then, reply)
            case fx.Acknowledge(topics, sequence, then_acked):
                self._acks.acknowledge(
                    topics, sequence, lambda acked: self._then(lambda: then_acked(acked), reply)
                )
            case fx.CountUnacked(topic, until, answer_unacked):
                self._acks.unacked(topic, until, lambda found: self._counted(found, answer_unacked, reply))
            case fx.CountPresence(topic, answer_tally):

                def counted(tally: Tally, complete: bool) -> None:
                    self._then(lambda: answer_tally(tally, complete), reply)

                return self._presence.ask(topic, counted)
        return None

    def _counted(
        self, found: Unacked | RawsseError, answer: Callable[[Unacked], Effect], reply: Reply
    ) -> None:
        if isinstance(found, RawsseError):
            reply(found)
            return
        self._then(lambda: answer(found), reply)

    def _ask(self, call: AppCall, then: Callable[[tuple[int, bytes] | str], Effect], reply: Reply) -> Cancel:
        """Put `call` to the application, then carry on with its answer (unless the
        connection went away meanwhile)."""
        waiting = [True]

        def answered(outcome: tuple[int, bytes] | str) -> None:
            if waiting[0]:
                waiting[0] = False
                self._then(lambda: then(outcome), reply)

        if self._app is None:
            answered("no --auth-url")
        else:
            self._app.ask(call, answered)

        def forget() -> None:
            waiting[0] = False

        return forget

    def _told(self, outcome: Outcome, answer: Callable[[], Effect], reply: Reply) -> None:
        if isinstance(outcome, RawsseError):
            reply(outcome)
            return
        self._then(answer, reply)

    def _then(self, next_effect: Callable[[], Effect], reply: Reply) -> None:
        """Carry out what an effect leads to; what goes wrong on the way is the answer
        (a failing `reply` itself is the driver's to deal with, not answered twice)."""
        effect = decided(next_effect)
        if isinstance(effect, RawsseError):
            reply(effect)
            return
        self.run(effect, reply)

    def _wait(self, sequence: int, timeout: float, then: Callable[[], Effect], reply: Reply) -> Cancel:
        """`then()` once a pass took `sequence`, or after `timeout` (it then answers for
        an id that never came)."""
        hub = self._hub
        waiting = [True]  # until taken, timed out or given up on: whichever comes first

        def forget() -> None:
            waiting[0] = False
            timer.cancel()
            hub.forget(resolve)

        def resolve() -> None:
            if waiting[0]:
                forget()
                self._then(then, reply)

        timer = self._loop.call_later(timeout, resolve)
        hub.when_taken(sequence, resolve)
        return forget
