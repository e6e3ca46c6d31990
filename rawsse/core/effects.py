"""What the API asks for, as values: the effects of answering a request.

The API (rawsse.core.api) decides, and never touches a broker, a stream or a clock's
timer; rawsse.reactor.effects is the one place that carries effects out. An effect ends
in an Answer — bytes to send, or a stream to open — or in a RawsseError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from rawsse.auth.app import AppCall
from rawsse.auth.ledger import NO_ACCESS, StreamAccess
from rawsse.core.acks import Acked, Unacked
from rawsse.core.presence import Tally
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing
from rawsse.errors import RawsseError


class Respond(NamedTuple):
    """Send `data`, a whole response; with `close` it is the last on the connection."""

    data: bytes
    close: bool = False


class OpenStream(NamedTuple):
    """Make the connection a stream on `topics` that starts with `preamble` (the response
    head, the retry line or nothing, and any replay). `head` is the response head alone,
    to answer "come back later" instead if no stream can be opened after all. A WebSocket
    stream (`framing` WS) may publish any topic when `publisher` says so; `access` is who
    opened it and what its credential allows, until when."""

    topics: tuple[str, ...]
    preamble: bytes
    head: bytes
    framing: Framing = Framing.SSE
    publisher: bool = False
    access: StreamAccess = NO_ACCESS


class Publish(NamedTuple):
    """Give `items` their place in the event order, all or none; then `answer(ids)`."""

    items: Sequence[PublishItem]
    answer: Callable[[list[str]], Respond]


class WaitTaken(NamedTuple):
    """Wait until this process has taken event `sequence` (another worker or node
    delivered it and it is on its way), at most `timeout` seconds; then `then()`."""

    sequence: int
    timeout: float
    then: Callable[[], Effect]


class CloseStreams(NamedTuple):
    """Close every stream on one of `topics`; then `answer(how many)`."""

    topics: tuple[str, ...]
    answer: Callable[[int], Effect]


class DisconnectUser(NamedTuple):
    """Close every stream of user `sub`, in every process of the server (the order
    carries the word to each); then `answer()`."""

    sub: str
    answer: Callable[[], Effect]


class CountPresence(NamedTuple):
    """Count the streams on `topic` and their users, in every process of the server;
    then `answer(tally, complete)` (complete: every process answered in time)."""

    topic: str
    answer: Callable[[Tally, bool], Effect]


class AskApplication(NamedTuple):
    """Ask the application (--auth-url) what a credential allows; then `then(outcome)`
    with its answer's status and body, or why there was none."""

    call: AppCall
    then: Callable[[tuple[int, bytes] | str], Effect]


class Acknowledge(NamedTuple):
    """Record `topics` acknowledged up to `sequence` (0: nothing, only read where they
    stand; rawsse.core.acks); then `then(acked)`, or `then(why not)`."""

    topics: tuple[str, ...]
    sequence: int
    then: Callable[[Acked | RawsseError], Effect]


class CountUnacked(NamedTuple):
    """Count what `topic`'s user has not acknowledged, up to the sequence `until`; then
    `answer(unacked)`."""

    topic: str
    until: int
    answer: Callable[[Unacked], Effect]


Answer = Respond | OpenStream
Effect = (
    Respond
    | OpenStream
    | Publish
    | WaitTaken
    | CloseStreams
    | DisconnectUser
    | CountPresence
    | AskApplication
    | Acknowledge
    | CountUnacked
)
