"""Event ids, and turning a Last-Event-ID back into a position in the one event order.

Every broker keeps one sequence for all topics, so a single Last-Event-ID resumes a stream
of several topics. Two spellings:

- `<epoch>-<sequence>` (the in-memory and worker brokers): the epoch changes with every
  run of the server, so an id from an earlier run is recognised instead of being mistaken
  for a position in this run's history;
- `<milliseconds>-<n>` (the Redis broker): Redis stream entry ids, one order for the whole
  cluster that survives any node's restart.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from rawsse.errors import UnusableId

MAX_ID_LENGTH = 128
"""Longer Last-Event-ID values are refused unparsed; ours are under 32 bytes."""

STREAM_ID_BITS = 20
"""A Redis entry id `<ms>-<n>` is kept as the integer `ms << 20 | n`: one ordered number,
with room for a million entries in one millisecond."""


class IdScheme(Protocol):
    longest_id: str
    """As long as any id this scheme gives (a size check's stand-in for an unknown id)."""

    def format(self, sequence: int) -> str: ...

    def sequence_of(self, text: str) -> int:
        """The sequence an id names; raises UnusableId."""
        ...


def id_or_none(ids: IdScheme, sequence: int) -> str | None:
    """The id of event `sequence`, or None for 0: no event (nothing acknowledged yet, a
    topic that never had one)."""
    return ids.format(sequence) if sequence else None


def new_epoch() -> str:
    """A random epoch: 8 hex digits, different for each server run."""
    return secrets.token_hex(4)


def _split(text: str) -> tuple[str, int]:
    if len(text) > MAX_ID_LENGTH:
        raise UnusableId("malformed-id")
    head, sep, digits = text.partition("-")
    if not sep or not head or not head.isascii() or not head.isalnum():
        raise UnusableId("malformed-id")
    if not digits.isascii() or not digits.isdigit():
        raise UnusableId("malformed-id")
    return head, int(digits)


class EpochIds:
    """`<epoch>-<sequence>`."""

    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or new_epoch()
        self.longest_id = f"{self.epoch}-{'9' * 19}"  # a sequence fills at most 63 bits

    def format(self, sequence: int) -> str:
        return f"{self.epoch}-{sequence}"

    def sequence_of(self, text: str) -> int:
        epoch, sequence = _split(text)
        if epoch != self.epoch:
            raise UnusableId("unknown-epoch")
        return sequence


class StreamIds:
    """Redis stream entry ids `<ms>-<n>`."""

    longest_id = "9" * 13 + "-" + "9" * 7
    """Any entry id of this century with up to a million entries in a millisecond."""

    def format(self, sequence: int) -> str:
        return f"{sequence >> STREAM_ID_BITS}-{sequence & ((1 << STREAM_ID_BITS) - 1)}"

    def sequence_of(self, text: str) -> int:
        milliseconds, n = _split(text)
        if not milliseconds.isdigit() or n >> STREAM_ID_BITS:
            raise UnusableId("malformed-id")
        return int(milliseconds) << STREAM_ID_BITS | n
