"""Presence across processes: the asking side waits for the other processes' answers (or
PRESENCE_WAIT), every side answers the asks it sees. The words travel in the event order
(rawsse.core.control), so this works alike over the workers' log and over Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from rawsse.broker.base import Broker
from rawsse.core.presence import PRESENCE_WAIT, Tally, answer_item, ask_item

Done = Callable[[Tally, bool], None]
"""The summed tally, and whether every process answered."""


class _Asking:
    __slots__ = ("done", "expected", "tally", "timer")

    def __init__(self, tally: Tally, expected: int, done: Done, timer: asyncio.TimerHandle) -> None:
        self.tally, self.expected, self.done, self.timer = tally, expected, done, timer


class PresenceBoard:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, broker: Broker, local: Callable[[str], Tally]
    ) -> None:
        self._loop = loop
        self._broker = broker
        self._local = local
        self._asking: dict[str, _Asking] = {}
        self.name = secrets.token_hex(8)
        """This process's name in the asks it puts (so it does not answer its own)."""

    def ask(self, topic: str, done: Done) -> Callable[[], None]:
        """Count `topic` here and in every other process; `done` once all answered or
        PRESENCE_WAIT passed. Returns a way to give up (the asker went away)."""
        tally = self._local(topic)
        others = self._broker.process_count() - 1
        if others <= 0:
            done(tally, True)
            return lambda: None
        ask_id = secrets.token_hex(8)
        timer = self._loop.call_later(PRESENCE_WAIT, self._finish, ask_id, False)
        self._asking[ask_id] = _Asking(tally, others, done, timer)

        def published(outcome: object) -> None:
            if isinstance(outcome, Exception):  # the order would not take the ask
                self._finish(ask_id, False)

        self._broker.publish([ask_item(ask_id, topic, self.name)], published)
        return lambda: self._forget(ask_id)

    def on_word(self, word: dict[str, Any]) -> None:
        ask = word.get("presence-ask")
        if isinstance(ask, dict):
            if (
                ask.get("from") != self.name
                and isinstance(ask.get("topic"), str)
                and isinstance(ask.get("id"), str)
            ):
                self._broker.publish(
                    [answer_item(ask["id"], self._local(ask["topic"]))], lambda outcome: None
                )
            return
        answer = word.get("presence-answer")
        if isinstance(answer, dict):
            asking = self._asking.get(answer.get("id"))  # type: ignore[arg-type]
            if asking is not None:
                asking.tally.merge(answer)
                asking.expected -= 1
                if asking.expected <= 0:
                    self._finish(answer["id"], True)

    def _finish(self, ask_id: str, complete: bool) -> None:
        asking = self._asking.pop(ask_id, None)
        if asking is not None:
            asking.timer.cancel()
            asking.done(asking.tally, complete)

    def _forget(self, ask_id: str) -> None:
        asking = self._asking.pop(ask_id, None)
        if asking is not None:
            asking.timer.cancel()
