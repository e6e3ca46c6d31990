"""Word from one process of the server to all of them, carried in the event order itself:
an event on the reserved `$control` topic, which no stream may subscribe to and no
publisher may write. Every process's hub takes it as it takes events — from memory, the
workers' shared log or the Redis stream — so a word reaches every worker and every node,
in order with the events around it, with no channel of its own.

    {"disconnect": "<sub>", "at": <unix seconds>}   close every stream of that user

Each word says when it was put (`at`). A process that reads it much later — a Redis node
catching up after an outage — drops it: a kick of then must not close a stream the user
opened since, nor a presence question long given up be answered.
"""

from __future__ import annotations

import json
from typing import Any

from rawsse.core.publish import PublishItem

CONTROL_TOPIC = "$control"

MAX_WORD_AGE = 10.0
"""Seconds after which a word is dropped unread; clocks of a cluster's nodes kept by NTP
agree far better than that."""


def disconnect_item(sub: str, now: float) -> PublishItem:
    return PublishItem((CONTROL_TOPIC,), json.dumps({"disconnect": sub, "at": now}))


def is_fresh(word: dict[str, Any], now: float) -> bool:
    at = word.get("at")
    return isinstance(at, int | float) and now - at <= MAX_WORD_AGE


def is_control(topics: tuple[str, ...]) -> bool:
    return topics[0] == CONTROL_TOPIC


def control_word(wire: bytes) -> dict[str, Any]:
    """The word of a control event, from its SSE encoding (one `data:` line of JSON, as
    `disconnect_item` makes it); {} for anything else."""
    start = wire.find(b"data: ")
    if start < 0:
        return {}
    end = wire.find(b"\n", start)
    try:
        word = json.loads(wire[start + 6 : end])
    except ValueError:
        return {}
    return word if isinstance(word, dict) else {}
