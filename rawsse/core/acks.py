"""Acknowledged delivery on private topics: what a user has received, and what not.

A private topic (`notifications@42`: see rawsse.core.access) has one user, its owner, and
the server keeps the last event that user acknowledged on it. Everything up to that event
was received; what follows is "unacknowledged": a stream opened with `from=unacked` (a
new device, a page opened tomorrow) receives exactly those events, then live ones, and
`GET /unacked` counts them (the unread badge).

A user acknowledges

- by resuming: an SSE stream opened with `from=unacked` that reconnects with its
  Last-Event-ID received every event of its user's topics up to it (what was not
  acknowledged, then live ones), so they are acknowledged up to it. A stream that started
  live did not, nor can a WebSocket's topics at its reconnect be taken for those it read:
  they acknowledge nothing by resuming;
- with a WebSocket command, `{"type": "ack", "id": ...}` (and `"topic"`, one of the
  stream's, or all the stream's topics of its user);
- with `POST /ack?topic=...&id=...` and their credential; the application may
  acknowledge for any user with the operator's rights (the publish token).

Only the owner's credential acknowledges a topic: a credential whose patterns let it read
another user's topic (a support console) never moves that user's acknowledgement. Without
a token option there are no users: any stream on a private topic may acknowledge it, and
`POST /ack` needs the operator's rights.

Acknowledgements are kept where the events are: in the durable log of --data-dir (shared
by the workers), or in Redis with the cluster broker. A server without either keeps none
and says so (AcksUnavailable), rather than promising what a restart forgets.

This module holds the decisions; the book that keeps acknowledgements is the store's
(rawsse.store.acks) or Redis's (rawsse.broker.redis_acks).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from rawsse.core.access import owner_of
from rawsse.errors import HttpError, RawsseError, UnusableId


class AcksUnavailable(HttpError):
    """This server keeps no acknowledgements (no --data-dir, no Redis): 501, since no retry
    helps, and an EventSource asked for `from=unacked` is meant to stop and be noticed."""

    def __init__(self) -> None:
        why = "acknowledgements need a durable store: start the server with --data-dir (or a Redis broker)"
        super().__init__(501, why)


class Start(enum.Enum):
    """Where a stream without a Last-Event-ID starts (`from=`)."""

    LIVE = "live"
    """With the events published from now on (the default)."""
    UNACKED = "unacked"
    """Its user's topics with what the user has not acknowledged, then live events."""


Acked = dict[str, int]
"""The sequence each topic's user acknowledged (0: none yet)."""


class Unacked(NamedTuple):
    """What a topic's user has not acknowledged."""

    events: int
    newest: int
    """The newest event's sequence (0: none)."""
    acked: int
    """The acknowledged sequence (0: none yet)."""
    complete: bool
    """False when events after the acknowledged one were trimmed (by retention) unread."""


AckedDone = Callable[[Acked | RawsseError], None]
UnackedDone = Callable[[Unacked | RawsseError], None]


class AckBook(Protocol):
    """Where acknowledgements are kept; each answer comes through a callback, at once
    (the store) or after a round trip (Redis), with the error that prevented it."""

    kept: bool
    """False for a server that keeps none (every question is answered AcksUnavailable)."""

    def acknowledge(self, topics: Sequence[str], sequence: int, done: AckedDone) -> None:
        """Record each topic acknowledged up to `sequence` (never moving one back; 0
        records nothing), then answer where each stands."""
        ...

    def unacked(self, topic: str, until: int, done: UnackedDone) -> None:
        """What `topic`'s user has not acknowledged, up to the sequence `until` (what this
        process has in its order: committed, never one a failed commit may give out again)."""
        ...

    async def close(self) -> None:
        """Release what the book holds (a connection), when the server stops."""
        ...


class NoAcks:
    """The book of a server without a durable store."""

    kept = False

    def acknowledge(self, topics: Sequence[str], sequence: int, done: AckedDone) -> None:
        done(AcksUnavailable())

    def unacked(self, topic: str, until: int, done: UnackedDone) -> None:
        done(AcksUnavailable())

    async def close(self) -> None:
        pass


def parse_start(value: str) -> Start:
    """`from=`'s value; raises HttpError 400."""
    try:
        return Start(value)
    except ValueError:
        raise HttpError(400, "from must be live or unacked") from None


def users_topics(topics: Iterable[str], sub: str | None, users: bool) -> tuple[str, ...]:
    """Which of `topics` the holder of `sub` may acknowledge: its own private topics; every
    private topic where there are no users (`users` False: no token option is set)."""
    if users:
        return tuple(topic for topic in topics if sub is not None and owner_of(topic) == sub)
    return tuple(topic for topic in topics if owner_of(topic) is not None)


def check_ackable(topic: str) -> None:
    """Raise HttpError 400 for a topic that keeps no acknowledgements (a shared one)."""
    if owner_of(topic) is None:
        name = topic[:64]
        raise HttpError(400, f"acknowledgements are kept on private topics (NAME@USER) only, not {name!r}")


class Positions(Protocol):
    """Where ids are read back to sequences (the hub: those of the events it has)."""

    def position_of(self, event_id: str) -> int: ...


def acknowledged_sequence(positions: Positions, event_id: str) -> int:
    """The sequence of the event an acknowledgement names; HttpError 400 for an id this
    process did not give out or take (malformed, of another epoch, not published)."""
    try:
        return positions.position_of(event_id)
    except UnusableId as exc:
        raise HttpError(400, f"no such event ({exc.reason}): {event_id[:64]!r}") from None
