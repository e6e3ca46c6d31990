"""Event ids: `<epoch>-<sequence>`.

The sequence is one counter for all topics, so a single Last-Event-ID resumes a stream of
several topics. The epoch changes with every run of the server, so an id from an earlier
run is recognised instead of being mistaken for a position in this run's history.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_ID_LENGTH = 128
"""Longer Last-Event-ID values are refused unparsed; ours are under 32 bytes."""


def new_epoch() -> str:
    """A random epoch: 8 hex digits, different for each server run."""
    return os.urandom(4).hex()


def format_id(epoch: str, sequence: int) -> str:
    return f"{epoch}-{sequence}"


@dataclass(frozen=True, slots=True)
class ParsedId:
    epoch: str
    sequence: int


def parse_id(text: str) -> ParsedId | None:
    """Parse a Last-Event-ID; None when it is malformed or over-long."""
    if len(text) > MAX_ID_LENGTH:
        return None
    epoch, sep, digits = text.partition("-")
    if not sep or not epoch or not digits.isascii() or not digits.isdigit():
        return None
    if not epoch.isascii() or not epoch.isalnum():
        return None
    return ParsedId(epoch, int(digits))
