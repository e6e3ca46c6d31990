"""Presence across processes: the asking side waits for the other processes' answers (or
PRESENCE_WAIT), every side answers the asks it sees. The words travel in the event order
(rawsse.core.control), so this works alike over the workers' log and over Redis. And the
join and leave events of --presence-events."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable

from rawsse.auth.rules import TopicRules
from rawsse.broker.base import Outcome, Publish
from rawsse.core.control import PresenceAnswer, PresenceAsk, word_item
from rawsse.core.presence import PRESENCE_WAIT, Tally, presence_event
from rawsse.core.topics import PRESENCE_PREFIX

Done = Callable[[Tally, bool], None]
"""The summed tally, and whether every process answered."""

"""How words are put in the order (rawsse.reactor.effects.Publishing.put_words)."""


def _best_effort(outcome: Outcome) -> None:
    """A word or event the order would not take is not retried (an asker counts without
    the answer; a join or leave is missed, as on a restart)."""


class _Asking:
    __slots__ = ("dones", "expected", "tally", "timer", "topic")

    def __init__(self, topic: str, tally: Tally, expected: int, timer: asyncio.TimerHandle) -> None:
        self.topic, self.tally, self.expected, self.timer = topic, tally, expected, timer
        self.dones: list[Done] = []


class PresenceBoard:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        put_words: Publish,
        process_count: Callable[[], int],
        local: Callable[[str], Tally],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._loop, self._put_words, self._wall = loop, put_words, wall
        self._process_count = process_count
        """How many processes take the order (each answers an ask)."""
        self._local = local
        """This process's own tally of a topic."""
        self._asking: dict[str, _Asking] = {}
        self._by_topic: dict[str, str] = {}
        """The ask in flight for each topic: a second ask for it waits for the same answers
        (so a client asking in a loop cannot make every process answer each time)."""
        self.name = secrets.token_hex(8)
        """This process's name in the asks it puts (so it does not answer its own)."""

    def ask(self, topic: str, done: Done) -> Callable[[], None]:
        """Count `topic` here and in every other process; `done` once all answered or
        PRESENCE_WAIT passed. Returns a way to give up (the asker went away)."""
        others = self._process_count() - 1
        if others <= 0:
            done(self._local(topic), True)
            return lambda: None
        ask_id = self._by_topic.get(topic)
        if ask_id is None:
            ask_id = secrets.token_hex(8)
            timer = self._loop.call_later(PRESENCE_WAIT, self._finish, ask_id, False)
            self._asking[ask_id] = _Asking(topic, self._local(topic), others, timer)
            self._by_topic[topic] = ask_id

            def published(outcome: object) -> None:
                if isinstance(outcome, Exception):  # the order would not take the ask
                    self._finish(ask_id, False)

            self._put_words([word_item(PresenceAsk(ask_id, topic, self.name, self._wall()))], published)
        asking = self._asking[ask_id]
        asking.dones.append(done)

        def forget() -> None:
            if done in asking.dones:
                asking.dones.remove(done)

        return forget

    def on_word(self, word: PresenceAsk | PresenceAnswer) -> None:
        """Another process asks (answered with this process's tally), or answers one of
        this process's asks. Fresh words only (the dispatcher drops stale ones)."""
        match word:
            case PresenceAsk(ask_id, topic, asker):
                if asker != self.name:
                    answer = self._local(topic).answer(ask_id, self._wall())
                    self._put_words([word_item(answer)], _best_effort)
            case PresenceAnswer(ask_id):
                asking = self._asking.get(ask_id)
                if asking is not None:
                    asking.tally.merge(word)
                    asking.expected -= 1
                    if asking.expected <= 0:
                        self._finish(ask_id, True)

    def _finish(self, ask_id: str, complete: bool) -> None:
        asking = self._asking.pop(ask_id, None)
        if asking is not None:
            self._by_topic.pop(asking.topic, None)
            asking.timer.cancel()
            for done in asking.dones:
                done(asking.tally, complete)


class PresenceEvents:
    """Join and leave events on `$presence:<topic>`, for the topics --presence-events
    names, published as a stream opens, changes its topics and closes."""

    def __init__(self, rules: TopicRules, publish: Publish) -> None:
        self._rules = rules
        self._publish = publish
        self.enabled = bool(rules)
        """Whether any topic asks for them (the streams skip the work otherwise)."""

    def announce(self, kind: str, sub: str | None, topics: Iterable[str]) -> None:
        rules = self._rules
        items = [
            presence_event(kind, topic, sub)
            for topic in topics
            if rules.allows(topic) and not topic.startswith(PRESENCE_PREFIX)  # none of its own
        ]
        if items:
            self._publish(items, _best_effort)  # a refused one is not retried
