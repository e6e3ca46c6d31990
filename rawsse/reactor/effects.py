"""The one place the API's effects (their types are in rawsse.core.effects) are carried
out: publishing through the broker, waiting for an id with the loop's timer, closing
streams. Each ends in an answer for the connection that asked — bytes or a stream to
open — or in a RawsseError."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from rawsse.broker.base import Broker, Outcome, publish_now
from rawsse.core.effects import Answer, CloseStreams, Effect, OpenStream, Publish, Respond, WaitTaken
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.publish import PublishItem
from rawsse.errors import HttpError, RawsseError

log = logging.getLogger("rawsse")

Reply = Callable[[Answer | RawsseError], None]
Cancel = Callable[[], None]

INTERNAL_ERROR = HttpError(500, "internal error")


class EffectRunner:
    def __init__(
        self,
        broker: Broker,
        hub: Hub,
        close_topics: Callable[[tuple[str, ...]], int],
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._broker, self._hub, self._metrics, self._loop = broker, hub, metrics, loop
        self._close_topics = close_topics

    def run(self, effect: Effect, reply: Reply) -> Cancel | None:
        """Carry `effect` out; `reply` gets how it ended (at once, or later). Returns a
        way to give up on it when its connection goes away first, if it waits."""
        match effect:
            case Respond() | OpenStream():
                reply(effect)
            case Publish(items, answer_ids):
                self._broker.publish(items, lambda outcome: self._published(outcome, answer_ids, reply))
            case CloseStreams(topics, answer_count):
                closed = self._close_topics(topics)
                self._then(lambda: answer_count(closed), reply)
            case WaitTaken(sequence, timeout, then):
                return self._wait(sequence, timeout, then, reply)
        return None

    def publish_for_stream(
        self, items: list[PublishItem], done: Callable[[list[str] | RawsseError], None]
    ) -> None:
        """A WebSocket's publish command: the broker's path and checks, as POST /publish."""

        def published(outcome: Outcome) -> None:
            if not isinstance(outcome, RawsseError):
                self._metrics.events_published += len(outcome)
            done(outcome)

        self._broker.publish(items, published)

    def publish_now(self, items: list[PublishItem]) -> list[str]:
        """Publish for embedding code, with a broker of this machine; raises what refused."""
        ids = publish_now(self._broker, items)
        self._metrics.events_published += len(ids)
        return ids

    def _published(self, outcome: Outcome, answer: Callable[[list[str]], Effect], reply: Reply) -> None:
        if isinstance(outcome, RawsseError):
            reply(outcome)
            return
        self._metrics.events_published += len(outcome)  # a publisher's events, once accepted
        self._then(lambda: answer(outcome), reply)

    def _then(self, next_effect: Callable[[], Effect], reply: Reply) -> None:
        """Carry out what an effect leads to; what goes wrong on the way is the answer
        (a failing `reply` itself is the driver's to deal with, not answered twice)."""
        try:
            effect = next_effect()
        except RawsseError as error:
            reply(error)
            return
        except Exception:
            log.exception("request failed")
            reply(INTERNAL_ERROR)
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
