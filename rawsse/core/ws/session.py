"""What a WebSocket stream's client says, and what follows: the sans-I/O side of every
WebSocket connection, tested without sockets and with a fake clock.

The reactor hands over each read of a connection's bytes (`receive`) and carries out the
actions that come back: bytes to send, a new set of topics, events to publish, a close
handshake to begin, the TCP connection to end. Per connection this keeps two bytes (how
many keep-alive checks passed since the client last spoke; may it publish), a frame parser only
while a frame is half-read, and a count of commands only while the client sends some.

The client's commands are JSON objects in text frames, each with a `type` and an optional
`ref` that the answer carries back:

    {"type": "subscribe", "topics": ["a", "b"]}    -> {"type": "subscribed", "topics": [...]}
    {"type": "unsubscribe", "topics": ["a"]}       -> {"type": "unsubscribed", "topics": [...]}
    {"type": "ping"}                               -> {"type": "pong"}
    {"type": "publish", "topic": "a", "data": "…"} -> {"type": "published", "id": "…"}
    {"type": "ack", "id": "…", "topic": "n@42"}     -> {"type": "acked", "topics": [...], "id": "…"}

`ack` acknowledges the user's private topics up to an event (rawsse.core.acks): `topic`
names one of the stream's, or, without it, every topic of the stream that is its user's.

A command that cannot be carried out is answered `{"type": "error", "code": …, "message":
…}`; the connection stays open. The answers to subscribe and unsubscribe list every topic
the connection is on afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from rawsse.auth.ledger import AccessEnded, StreamAccess
from rawsse.core.access import Access, Asking
from rawsse.core.acks import users_topics
from rawsse.core.publish import PublishItem, json_item
from rawsse.core.state import ServerState
from rawsse.core.topics import check_subscribe_topic
from rawsse.core.ws.frames import (
    Binary,
    Close,
    CloseCode,
    Fault,
    FrameParser,
    Opcode,
    Ping,
    Text,
    close_frame,
    encode_frame,
)
from rawsse.core.ws.messages import error_reply, reply
from rawsse.errors import RawsseError, TopicError

COMMAND_BUDGET = 100
"""Commands a connection may send in one second. Past it each command is answered with a
`rate-limited` error and not carried out; past twice it the connection is closed (1008).
Input is read a chunk per readiness notice, so a flood is never buffered either."""

MISSED_PINGS = 2
"""Keep-alive pings a WebSocket client may leave unanswered in a row: the check that finds
this many overdue drops it, the third check after its last word (about three heartbeat
intervals)."""

CLOSE_TIMEOUT = 5.0
"""How long a connection we closed has to send its close frame back before the TCP
connection is dropped."""

FAIL_LINGER = 1.0
"""How long a connection failed for a protocol fault is still read (and its input
dropped) after our close frame and our end of the TCP connection went out, so that
input it sent meanwhile cannot make the kernel reset the connection before the client
has read why (nginx's lingering close, shorter: the client was told twice). A client
closes at once on the end it reads, so the slot is usually free within milliseconds; the
sweep that enforces this runs once a second."""


class Send(NamedTuple):
    data: bytes


class SetTopics(NamedTuple):
    """Put the stream on exactly `topics` from now on, then send `answer`."""

    topics: tuple[str, ...]
    answer: bytes


class PublishItems(NamedTuple):
    """Publish `items` as POST /publish does, and answer with `published(ids, ref)` or
    `failed(error, ref)`."""

    items: list[PublishItem]
    ref: Any


class AskToSubscribe(NamedTuple):
    """Ask the application (--auth-url) about `topics`, beyond what the stream was
    granted; then subscribe to them too (answered as SetTopics is), or answer why not."""

    asking: Asking[StreamAccess]
    topics: tuple[str, ...]
    ref: Any


class AckTopics(NamedTuple):
    """Acknowledge `topics` up to the event `event_id`, then answer `acked`, or why not."""

    topics: tuple[str, ...]
    event_id: str
    ref: Any


class BeginClose(NamedTuple):
    """Send this close frame, write nothing more, and wait for the client's close."""

    frame: bytes


class Fail(NamedTuple):
    """Fail the connection (RFC 6455 7.1.7): send this close frame, end our side of the
    TCP connection at once, and process nothing more the client sends."""

    frame: bytes


class Finish(NamedTuple):
    """End the TCP connection now (after what was sent)."""


Action = Send | SetTopics | PublishItems | AskToSubscribe | AckTopics | BeginClose | Fail | Finish


class SessionLimits(NamedTuple):
    max_topics: int
    max_topic_length: int
    max_message: int
    """The largest client message, in bytes: the publish body limit (--max-body-bytes)."""


ERROR_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    413: "too-large",
    501: "unavailable",
    503: "unavailable",
}


def check_topic_count(topics: tuple[str, ...], limit: int) -> None:
    """Raise TopicError for a stream on more than `limit` topics (--max-topics)."""
    if len(topics) > limit:
        raise TopicError(f"at most {limit} topics per stream")


def published(ids: list[str], ref: Any) -> bytes:
    return reply("published", ref, id=ids[0]) if len(ids) == 1 else reply("published", ref, ids=ids)


def subscribed(topics: tuple[str, ...], ref: Any) -> bytes:
    return reply("subscribed", ref, topics=list(topics))


def failed(error: RawsseError, ref: Any) -> bytes:
    return error_reply(ERROR_CODES.get(error.status or 500, "internal"), error.message, ref)


class Sessions:
    """The input side of every WebSocket stream of one process, by slot."""

    def __init__(
        self,
        capacity: int,
        limits: SessionLimits,
        clock: Callable[[], float],
        state: ServerState,
        budget: int = COMMAND_BUDGET,
        access: Access | None = None,
    ) -> None:
        self.limits = limits
        self._access = access
        """What a stream's credential allows (its later subscribes and publishes); None
        when topics need no credential."""
        self._clock = clock
        self._state = state
        self._budget = budget
        self.unheard = bytearray(capacity)
        """How many keep-alive checks have passed since the client last sent anything."""
        self.publisher = bytearray(capacity)
        """1 when the connection may publish to any topic (decided once, at the handshake;
        a token's publish patterns are checked per command)."""
        self._parsers: dict[int, FrameParser] = {}
        self._held: dict[int, FrameParser] = {}
        """The parsers of half-read frames at the last check (see `stuck`)."""
        self._spent: dict[int, int] = {}
        self._window = clock()

    def open(self, slot: int, may_publish: bool) -> None:
        self.unheard[slot] = 0
        self.publisher[slot] = may_publish

    def release(self, slot: int) -> None:
        """The connection is gone: drop what was kept for it (nothing of it may pass to
        the next connection in the slot, least of all the right to publish)."""
        self._parsers.pop(slot, None)
        self._held.pop(slot, None)
        self._spent.pop(slot, None)
        self.publisher[slot] = 0
        self.unheard[slot] = 0

    def unanswered(self, slots: Iterable[int]) -> list[int]:
        """The keep-alive check, once a heartbeat interval, before the next pings go out:
        which of `slots` left MISSED_PINGS pings in a row unanswered (sent nothing at all
        through that many checks after the one that last heard them). A client thus gets
        a whole interval more than the one its ping was sent for: one that is alive but
        busy reads its ping behind everything queued before it, and a broadcast to a
        client that shares its cores may take longer than an interval."""
        unheard = self.unheard
        dropped = []  # whole before the caller closes any: closes edit the groups `slots` walks
        for slot in slots:
            checks = unheard[slot] + 1
            if checks > MISSED_PINGS:
                dropped.append(slot)
            else:
                unheard[slot] = checks
        return dropped

    def stuck(self) -> list[int]:
        """Once a heartbeat interval: the connections whose frame or message was already
        half-read at the last check and still is. They are closed, as an HTTP body that
        does not come within --body-timeout is: a client trickling a large frame may not
        hold its buffer for ever."""
        parsers = self._parsers
        stuck = [slot for slot, parser in self._held.items() if parsers.get(slot) is parser]
        self._held = dict(parsers)
        return stuck

    def receive(self, slot: int, data: bytes, topics: tuple[str, ...], closing: bool) -> list[Action]:
        """One read of the client's bytes. `topics`: what the stream is on now;
        `closing`: our close frame is out, only the client's close is awaited."""
        self.unheard[slot] = 0
        parser = self._parsers.pop(slot, None) or FrameParser(self.limits.max_message)
        incoming = parser.feed(data)
        if not parser.idle:
            self._parsers[slot] = parser
        actions: list[Action] = []
        for item in incoming:
            if closing:
                if isinstance(item, Close | Fault):
                    self.release(slot)
                    return [*actions, Finish()]
                continue
            if isinstance(item, Text):
                action = self._command(slot, item.text, topics)
                if isinstance(action, SetTopics):
                    topics = action.topics
                actions.append(action)
                if isinstance(action, BeginClose):
                    closing = True
            elif isinstance(item, Ping):
                actions.append(Send(encode_frame(Opcode.PONG, item.payload)))
            elif isinstance(item, Close):
                # The client closes: its code echoed (RFC 6455 5.5.1), then the TCP
                # connection ends, which is the server's to end.
                self.release(slot)
                actions.append(Send(close_frame(item.code, item.reason)))
                actions.append(Finish())
                return actions
            elif isinstance(item, Fault):
                if item.code != CloseCode.TOO_LARGE:  # the stream cannot be followed past the fault
                    actions.append(Fail(close_frame(item.code, item.reason)))
                    return actions  # the parser reads nothing more: neither do we
                # A message over the limit is skipped unread: the client's close after our
                # 1009 can still be found, so this is an ordinary close handshake.
                actions.append(BeginClose(close_frame(item.code, item.reason)))
                closing = True
            elif isinstance(item, Binary):
                actions.append(
                    BeginClose(close_frame(CloseCode.UNSUPPORTED_DATA, "binary messages are not understood"))
                )
                closing = True
        return actions

    # Commands

    def _command(self, slot: int, text: str, topics: tuple[str, ...]) -> Action:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window = now
            self._spent.clear()
        spent = self._spent[slot] = self._spent.get(slot, 0) + 1
        if spent > 2 * self._budget:
            return BeginClose(close_frame(CloseCode.POLICY_VIOLATION, "too many commands"))
        try:
            command = json.loads(text)
        except (ValueError, RecursionError):
            return Send(error_reply("invalid", "a command is a JSON object"))
        if not isinstance(command, dict):
            return Send(error_reply("invalid", "a command is a JSON object"))
        ref = command.get("ref")
        if not isinstance(ref, str | int | float | None) or isinstance(ref, bool):
            return Send(error_reply("invalid", "ref must be a string or a number"))
        if spent > self._budget:
            return Send(error_reply("rate-limited", f"at most {self._budget} commands a second", ref))
        kind = command.get("type")
        try:
            if kind == "subscribe" or kind == "unsubscribe":
                return self._subscription(slot, kind, command, topics, ref)
            if kind == "ping":
                return Send(reply("pong", ref))
            if kind == "publish":
                return self._publish(slot, command, ref)
            if kind == "ack":
                return self._ack(slot, command, topics, ref)
        except RawsseError as error:
            return Send(failed(error, ref))
        except ValueError as error:  # TopicError, FieldError
            return Send(error_reply("invalid", str(error), ref))
        except RecursionError:  # data nested deeper than json can write back
            return Send(error_reply("invalid", "nested too deeply", ref))
        return Send(error_reply("invalid", "type must be subscribe, unsubscribe, ping, publish or ack", ref))

    def _subscription(
        self, slot: int, kind: str, command: dict[str, Any], topics: tuple[str, ...], ref: Any
    ) -> Action:
        named = command.get("topics")
        if not isinstance(named, list) or not named or not all(isinstance(t, str) for t in named):
            return Send(error_reply("invalid", "topics must be a non-empty list of names", ref))
        limits = self.limits
        meta = self._access is not None
        checked = [check_subscribe_topic(name, limits.max_topic_length, meta) for name in named]  # TopicError
        if kind == "subscribe":
            after = tuple(dict.fromkeys((*topics, *checked)))
            check_topic_count(after, limits.max_topics)
            if self._access is not None:
                asking = self._access.check_stream_subscribe(slot, tuple(checked))  # 401, 403
                if asking is not None:
                    return AskToSubscribe(asking, tuple(checked), ref)
            answer = "subscribed"
        else:
            gone = set(checked)
            after = tuple(topic for topic in topics if topic not in gone)
            answer = "unsubscribed"
        return SetTopics(after, reply(answer, ref, topics=list(after)))

    def _publish(self, slot: int, command: dict[str, Any], ref: Any) -> Action:
        access = self._access
        by_token = not self.publisher[slot] and access is not None and bool(access.ledger.publish[slot])
        if not self.publisher[slot] and not by_token:
            return Send(
                error_reply("forbidden", "this connection may not publish (see POST /publish's rules)", ref)
            )
        if self._state.draining:
            return Send(error_reply("unavailable", "shutting down; publish to another server", ref))
        entry = {key: value for key, value in command.items() if key not in ("type", "ref")}
        item = json_item(entry, self.limits.max_topic_length)
        if by_token:
            assert access is not None
            ledger = access.ledger
            access.check_publish(item.topics, ledger.sub[slot], ledger.publish[slot])  # 403
        return PublishItems([item], ref)

    def _ack(self, slot: int, command: dict[str, Any], topics: tuple[str, ...], ref: Any) -> Action:
        event_id, topic = command.get("id"), command.get("topic")
        if not isinstance(event_id, str) or not event_id:
            return Send(error_reply("invalid", "id must be an event's id", ref))
        if topic is not None and not isinstance(topic, str):
            return Send(error_reply("invalid", "topic must be a topic's name", ref))
        if topic is not None and topic not in topics:
            return Send(error_reply("invalid", f"not a topic of this stream: {topic[:64]!r}", ref))
        access = self._access
        sub = None if access is None else access.ledger.sub[slot]
        named = topics if topic is None else (topic,)
        mine = users_topics(named, sub, users=access is not None)
        if topic is not None and not mine:
            return Send(
                error_reply("forbidden", f"not a private topic of this stream's user: {topic[:64]!r}", ref)
            )
        if not mine:
            return Send(
                error_reply("invalid", "none of this stream's topics is its user's own (NAME@USER)", ref)
            )
        return AckTopics(mine, event_id, ref)


RECONNECT_FRAME = close_frame(CloseCode.SERVICE_RESTART, "reconnect and resume")
"""How the server closes a WebSocket stream for /disconnect or a broker's gap: 1012 tells
the client to come back, and its last id resumes it."""

SHUTDOWN_FRAME = close_frame(CloseCode.GOING_AWAY, "server shutting down; reconnect and resume")
"""How the server closes every WebSocket stream when it stops (1001)."""

STUCK_FRAME = close_frame(CloseCode.POLICY_VIOLATION, "message not completed in time")
"""How a connection whose frame stays half-read is closed (see `Sessions.stuck`)."""

ACCESS_ENDED_FRAMES = {
    AccessEnded.TOKEN_EXPIRED: close_frame(CloseCode.UNAUTHORIZED, '{"reason": "token-expired"}'),
    AccessEnded.DISCONNECTED: close_frame(CloseCode.FORBIDDEN, '{"reason": "disconnected"}'),
}
"""How a WebSocket stream whose authorization ended is closed: 3000 when its token
expired (reconnect with a fresh one), 3003 when its user was disconnected."""
