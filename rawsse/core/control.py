"""Words from one process of the server to all of them, carried in the event order itself:
an event on the reserved `$control` topic, which no stream may subscribe to and no
publisher may write. Every process's hub takes it as it takes events — from memory, the
workers' shared log or the Redis stream — so a word reaches every worker and every node,
in order with the events around it, with no channel of its own.

Three words, one class each, with one encoder (`word_item`) and one decoder
(`read_word`, from the event's data); their JSON is what every process of a cluster reads, whatever version:

    Kick            {"disconnect": "<sub>", "at": <unix seconds>}
    PresenceAsk     {"presence-ask": {"id": ..., "topic": ..., "from": ...}, "at": ...}
    PresenceAnswer  {"presence-answer": {"id": ..., "streams": n, "users": [...],
                     "truncated": bool}, "at": ...}

Each word says when it was put (`at`). A process that reads it much later — a Redis node
catching up after an outage — drops it (`is_fresh`, the one rule for every word): a kick
of then must not close a stream the user opened since, nor a presence question long
given up be answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rawsse.auth.tokens import numeric_date
from rawsse.core.publish import PublishItem
from rawsse.core.topics import STATS_TOPIC

CONTROL_TOPIC = "$control"

MAX_WORD_AGE = 10.0
"""Seconds after which a word is dropped unread; clocks of a cluster's nodes kept by NTP
agree far better than that."""


@dataclass(frozen=True, slots=True)
class Kick:
    """Close every stream of user `sub` (POST /disconnect?user=)."""

    sub: str
    at: float


@dataclass(frozen=True, slots=True)
class PresenceAsk:
    """Count `topic` and answer (rawsse.reactor.presence): asked by process `asker`."""

    id: str
    topic: str
    asker: str
    at: float


@dataclass(frozen=True, slots=True)
class PresenceAnswer:
    """One process's count of the topic an ask named."""

    id: str
    streams: int
    users: tuple[str, ...]
    truncated: bool
    at: float


Word = Kick | PresenceAsk | PresenceAnswer


def word_item(word: Word) -> PublishItem:
    """The event that carries `word` to every process."""
    match word:
        case Kick(sub, at):
            body: dict[str, Any] = {"disconnect": sub, "at": at}
        case PresenceAsk(ask_id, topic, asker, at):
            body = {"presence-ask": {"id": ask_id, "topic": topic, "from": asker}, "at": at}
        case PresenceAnswer(ask_id, streams, users, truncated, at):
            answer = {"id": ask_id, "streams": streams, "users": list(users), "truncated": truncated}
            body = {"presence-answer": answer, "at": at}
    return PublishItem((CONTROL_TOPIC,), json.dumps(body))


def read_word(data: str) -> Word | None:
    """The word a control event's data carries (JSON, as `word_item` makes it); None for
    anything that is not one of the three, whole and of the right types."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    at = numeric_date(body.get("at"))
    if at is None:
        return None
    sub, ask, answer = body.get("disconnect"), body.get("presence-ask"), body.get("presence-answer")
    if isinstance(sub, str):
        return Kick(sub, at)
    if isinstance(ask, dict):
        fields = (ask.get("id"), ask.get("topic"), ask.get("from"))
        if all(isinstance(value, str) for value in fields):
            return PresenceAsk(*fields, at)  # type: ignore[arg-type]
        return None
    if isinstance(answer, dict):
        ask_id, streams, users = answer.get("id"), answer.get("streams"), answer.get("users")
        if not isinstance(ask_id, str) or not isinstance(streams, int) or isinstance(streams, bool):
            return None
        names = tuple(name for name in users if isinstance(name, str)) if isinstance(users, list) else ()
        return PresenceAnswer(ask_id, streams, names, answer.get("truncated") is True, at)
    return None


def is_fresh(word: Word, now: float) -> bool:
    return now - word.at <= MAX_WORD_AGE


def is_control(topics: tuple[str, ...]) -> bool:
    return topics[0] == CONTROL_TOPIC


def is_kept(topics: tuple[str, ...]) -> bool:
    """Whether an event is kept for resumes (memory history, the durable log): not the
    server's words to its processes, nor its once-a-second `$stats` snapshots, which mean
    nothing a second later. (Kept, a snapshot of sixty workers' figures, some 50 KB a
    second, filled every worker's history up to its byte cap, and the durable log too.)"""
    first = topics[0]
    return first != CONTROL_TOPIC and first != STATS_TOPIC
