"""Presence: how many streams a topic has, and which users they belong to.

Counted when asked, from the subscriptions and the ledger of who holds each stream: no
table to keep up to date as streams come and go. Across workers and nodes the asking
process puts a word in the event order (rawsse.core.control) and every other process
answers with its own count; the answers are added up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rawsse.core.control import PresenceAnswer
from rawsse.core.publish import PublishItem
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.topics import PRESENCE_PREFIX

MAX_PRESENCE_USERS = 1000
"""Users listed in one presence answer at most (the count of streams is always whole);
beyond, `users_truncated` says so."""

MAX_PRESENCE_NAME_BYTES = 60_000
"""Bytes of user names in one answer at most, so that a process's answer is an event of
moderate size whatever its users' names."""

PRESENCE_WAIT = 1.0
"""How long the asking process waits for the others' answers; one that did not answer by
then (a worker restarting, a node cut off) makes the answer `complete: false`."""


@dataclass
class Tally:
    streams: int = 0
    users: set[str] = field(default_factory=set)
    truncated: bool = False

    def add_users(self, names: Iterable[str]) -> None:
        size = sum(len(name) for name in self.users)
        for name in names:
            if name in self.users:
                continue
            if len(self.users) >= MAX_PRESENCE_USERS or size + len(name) > MAX_PRESENCE_NAME_BYTES:
                self.truncated = True
                return
            self.users.add(name)
            size += len(name)

    def merge(self, other: PresenceAnswer) -> None:
        """Add another process's answer."""
        self.streams += other.streams
        self.add_users(other.users)
        if other.truncated:
            self.truncated = True

    def answer(self, ask_id: str, now: float) -> PresenceAnswer:
        """This tally as the answer to ask `ask_id`."""
        return PresenceAnswer(ask_id, self.streams, tuple(sorted(self.users)), self.truncated, now)


def local_tally(subscriptions: Subscriptions, holders: Sequence[str | None], topic: str) -> Tally:
    """This process's streams on `topic`, and the users (`sub`s) they belong to."""
    tally = Tally()
    for group in subscriptions.groups_of_topic(topic):
        tally.streams += len(group.members)
        if holders:  # none without credentials: streams have no users then
            tally.add_users(holder for slot in group.members if (holder := holders[slot]) is not None)
    return tally


def answer_body(topic: str, tally: Tally, complete: bool) -> bytes:
    return json.dumps(
        {
            "topic": topic,
            "streams": tally.streams,
            "users": sorted(tally.users),
            "users_truncated": tally.truncated,
            "complete": complete,
        }
    ).encode()


def presence_event(kind: str, topic: str, sub: str | None) -> PublishItem:
    """A join or leave event on `$presence:<topic>`."""
    data = json.dumps({"type": kind, "topic": topic, "sub": sub})
    return PublishItem((PRESENCE_PREFIX + topic,), data, kind)
