"""Topic names: one allow-list, one length cap, checked once after the query is decoded."""

from __future__ import annotations

import re

from rawsse.errors import TopicError

MAX_TOPIC_LENGTH = 255
"""Centrifugo's channel length cap; long enough for `tenant:user:1234:feed` style names."""

# Letters, digits and a few separators. No '/', '%', spaces or control characters, so a
# name reads the same in a URL, a log line and a metric; '$' is kept for system topics.
_TOPIC = re.compile(r"[A-Za-z0-9_.:@-]+")

SYSTEM_PREFIX = "$"
"""Names that start with this are reserved for topics the server itself publishes."""

STATS_TOPIC = "$stats"
"""The server's own figures, one JSON event a second while anyone subscribes (the
dashboard reads them); see rawsse.dashboard.stats."""

SYSTEM_TOPICS = frozenset({STATS_TOPIC})
"""Reserved topics a stream may subscribe to; no publisher may write to any `$` topic."""


def check_topic(name: str, max_length: int = MAX_TOPIC_LENGTH) -> str:
    """Return `name` if it is a valid publisher topic, else raise TopicError."""
    if not name:
        raise TopicError("topic must not be empty")
    if len(name) > max_length:
        raise TopicError(f"topic longer than {max_length} characters")
    if name.startswith(SYSTEM_PREFIX):
        raise TopicError(f"topics starting with {SYSTEM_PREFIX!r} are reserved for the server")
    if not _TOPIC.fullmatch(name):
        raise TopicError("topic may contain only letters, digits and _ . : @ -")
    return name


PRESENCE_PREFIX = "$presence:"
"""The meta topic of a topic's join and leave events: `$presence:chat` for `chat`."""


def check_subscribe_topic(name: str, max_length: int = MAX_TOPIC_LENGTH, meta: bool = False) -> str:
    """Like check_topic, but also lets a stream name a system topic, and with `meta` (only
    where tokens are checked) a `$presence:` topic."""
    if name in SYSTEM_TOPICS:
        return name
    if name.startswith(PRESENCE_PREFIX):
        if not meta:
            raise TopicError("presence topics need tokens: set a token key or --auth-url")
        check_topic(name[len(PRESENCE_PREFIX) :], max_length)
        return name
    return check_topic(name, max_length)
