"""The HTTP API: turns a parsed request into its effect (rawsse.core.effects): bytes to
answer, a stream to open, events to publish, an id to wait for, streams to close.

No I/O: it reads the hub and returns values; rawsse.reactor.effects carries them out. The
routes are documented in the README; their names are part of the public interface.

One piece, though long: the routing table and its handlers, each a few lines that read
the request and return an effect. The decisions they take are others': who is let in
(rawsse.core.admission), who may publish (rawsse.core.publishers), who may read a topic
(rawsse.core.access), what a publish holds (rawsse.core.publish), CORS (rawsse.core.cors).
"""

from __future__ import annotations

import enum
import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from rawsse.auth.app import AppUnavailable, answer_of
from rawsse.auth.ledger import NO_ACCESS, Ledger, StreamAccess
from rawsse.auth.tokens import MAX_SUB_LENGTH, Forbidden, Grant
from rawsse.core.access import Access, AccessOptions, Asking, owner_of
from rawsse.core.acks import (
    AckBook,
    Acked,
    AcksUnavailable,
    NoAcks,
    Start,
    Unacked,
    acknowledged_sequence,
    check_ackable,
    parse_start,
    users_topics,
)
from rawsse.core.admission import AcceptBudget
from rawsse.core.connection import BUSY
from rawsse.core.cors import CorsPolicy
from rawsse.core.effects import (
    Acknowledge,
    Answer,
    AskApplication,
    CloseStreams,
    CountPresence,
    CountUnacked,
    DisconnectUser,
    Effect,
    OpenStream,
    Publish,
    Respond,
    WaitTaken,
)
from rawsse.core.http import Request, error_response, query_pairs, query_values, response, stream_head
from rawsse.core.hub import RETRY_EVENT, Hub
from rawsse.core.ids import id_or_none
from rawsse.core.metrics import Metrics
from rawsse.core.presence import Tally, answer_body
from rawsse.core.publish import parse_publish
from rawsse.core.publishers import PublisherRights
from rawsse.core.slots import Framing
from rawsse.core.sse import encode_event, encode_retry
from rawsse.core.state import ServerState
from rawsse.core.static import StaticFiles, is_static_path
from rawsse.core.topics import check_subscribe_topic
from rawsse.core.ws.frames import CloseCode, close_frame
from rawsse.core.ws.handshake import check_upgrade, switching_head
from rawsse.core.ws.session import check_topic_count
from rawsse.errors import RETRY_AFTER, HttpError, RawsseError, TopicError, UnusableId


class RouteKind(enum.Enum):
    STREAM = "stream"
    """A stream request: its refusals are counted; an EventSource may come from a page of
    another origin (CORS)."""
    ADMIN = "admin"
    """Publishing and the operator's routes: who may is checked (rawsse.core.publishers);
    pages of listed origins may call them, and read why they were refused."""
    PLAIN = "plain"
    """Health and metrics."""


Cors = tuple[tuple[str, str], ...]
Handler = Callable[[Request, Callable[[], bool], Callable[[], str | None], Cors], Effect]
"""A route's handler: the request, whether its client is on loopback, its address, and the
CORS headers its answer carries (ADMIN routes)."""


class Route(NamedTuple):
    methods: tuple[str, ...]
    kind: RouteKind
    handler: Handler
    from_browsers: bool = False
    """Pages of other origins may call it with fetch/XHR: OPTIONS (a CORS preflight) is
    answered here. A WebSocket handshake has no preflight: /ws checks Origin itself."""


RESUME_WAIT = 1.0
"""How long a resume waits for an id another worker or node has already delivered; past
it the client gets a reset (unknown-id)."""

OVERLOADED = "overloaded"
SHUTTING_DOWN = "shutting-down"
AUTH_UNAVAILABLE = "authorization-unavailable"
STORE_UNAVAILABLE = "store-unavailable"
"""The reasons of a stream refused for load: the server is at its connection or
accept-rate limit, it is draining to stop, the application of --auth-url cannot answer
now, or the store cannot tell what a `from=unacked` stream's user acknowledged. Nothing
was missed: the client's Last-Event-ID is kept, and its reconnect resumes."""


class Opening(NamedTuple):
    """A stream request, decided but for its start: what `_open` needs, now or after a
    wait for its id."""

    topics: tuple[str, ...]
    last_event_id: str | None
    framing: Framing
    prefix: bytes
    """What the stream starts with before any replay (the head, and SSE's retry line)."""
    head: bytes
    publisher: bool
    access: StreamAccess
    start: Start = Start.LIVE
    """Where it starts without a Last-Event-ID (with `from=unacked`, its user's topics
    start after what the user acknowledged, whatever the Last-Event-ID)."""


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """What the API needs of the configuration (built by rawsse.config.Config.api_options)."""

    retry: int
    retry_spread: float
    max_topics: int
    max_topic_length: int
    max_pending_bytes: int
    publish_token: str | None
    cors_origins: frozenset[str]
    """--cors-origin, parsed (rawsse.core.cors.parse_origins)."""
    accept_rate: float
    """This process's share of --max-accept-rate (0: no limit)."""
    cors_credentials: bool = False
    """Pages of listed origins may send cookies (a cookie carries the credential)."""


@dataclass(frozen=True, slots=True)
class ServerView:
    """What the API may know of the server around it, read-only."""

    worker_label: str | None
    """Which worker process this is, where there are several (X-Rawsse-Worker)."""
    shares_order: bool
    """True when other processes deliver the same events, so a client may resume here
    with an id this process has not taken yet."""
    unready_reason: Callable[[], str | None]
    """Why this process cannot take publishes now (its broker is unreachable), or None."""
    metrics_text: Callable[[], bytes]
    """The /metrics page."""
    catch_up: Callable[[], None]
    """Bring this process up to the order's present (where it shares the order, another
    process's events may not have been read here yet): before a stream is decided on, so
    that what was published before it is history, replayed if it resumes, never live."""


class Api:
    """Requests in, effects out (rawsse.core.effects); refusals raise RawsseError."""

    def __init__(
        self,
        options: ApiOptions,
        hub: Hub,
        metrics: Metrics,
        view: ServerView,
        static: StaticFiles | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        access: Access | None = None,
        state: ServerState | None = None,
        acks: AckBook | None = None,
    ) -> None:
        """`acks`: where private topics' acknowledgements are kept (none without a
        durable store: see rawsse.core.acks)."""
        self._options, self._hub, self._metrics, self._view = options, hub, metrics, view
        self._acks = acks or NoAcks()
        state = state or ServerState()
        self.access = access or Access(AccessOptions(), None, Ledger(0))
        self._static = static
        self._clock = clock
        self._rng = rng or random.Random()
        self._accept_budget = AcceptBudget(options.accept_rate, clock())
        self._publishers = PublisherRights(options.publish_token, self.access)
        stream, admin, plain = RouteKind.STREAM, RouteKind.ADMIN, RouteKind.PLAIN
        self.routes: dict[str, Route] = {
            "/events": Route(("GET",), stream, self._events, from_browsers=True),
            "/ws": Route(("GET",), stream, self._websocket),
            "/publish": Route(("POST",), admin, self._publish, from_browsers=True),
            "/disconnect": Route(("POST",), admin, self._disconnect, from_browsers=True),
            "/presence": Route(("GET",), admin, self._presence, from_browsers=True),
            "/ack": Route(("POST",), admin, self._ack, from_browsers=True),
            "/unacked": Route(("GET",), admin, self._unacked, from_browsers=True),
            "/healthz": Route(("GET", "HEAD"), plain, self._healthz),
            "/readyz": Route(("GET", "HEAD"), plain, self._readyz),
            "/metrics": Route(("GET",), plain, self._metrics_page),
        }
        """The routes, by path; the dashboard's `/` and `/static/*` come on top, unless it
        is switched off."""
        self.state = state
        label = view.worker_label
        worker = [] if label is None else [("X-Rawsse-Worker", label)]
        self._worker_headers = tuple(worker)
        self._cors = CorsPolicy(options.cors_origins, options.cors_credentials)
        # Stream heads (by the Access-Control-Allow-Origin they carry, None for none) are
        # built here, once, not per stream; a live stream's head comes with its retry line.
        self._heads: dict[str | None, bytes] = {None: stream_head(worker)}
        for allowed in self._cors.allowed_values():
            self._heads[allowed] = stream_head([*worker, *self._cors.headers(allowed)])
        retry = encode_retry(options.retry)
        self._prefixes = {allowed: head + retry for allowed, head in self._heads.items()}

    def handle(
        self,
        request: Request,
        from_loopback: Callable[[], bool],
        peer: Callable[[], str | None] = lambda: None,
    ) -> Effect:
        """What answering `request` takes; raises RawsseError for anything refused.
        `from_loopback()` says whether the client connects from this machine (asked only
        where it matters: publishing without a token); `peer()` is its address (asked
        only to count streams per address)."""
        route = self.routes.get(request.path)
        if route is None:
            if self._static is not None and is_static_path(request.path):
                return self._respond(request, self._static.answer(request))
            raise HttpError(404, f"no such path: {request.path}")
        methods = route.methods
        if request.method not in methods:
            if request.method == "OPTIONS" and route.from_browsers:
                return self._respond(request, self._cors.preflight(request, methods))
            raise HttpError(405, f"use {' or '.join(methods)}", [("Allow", ", ".join(methods))])
        kind = route.kind
        if kind is RouteKind.ADMIN:
            allowed = self._cors.check(request)
            cors = self._cors.headers(allowed) if allowed else ()
            try:
                return route.handler(request, from_loopback, peer, cors)
            except RawsseError as error:
                if cors:  # so that a page of an allowed origin can read why
                    raise HttpError(error.status or 500, error.message, (*error.headers, *cors)) from None
                raise
        if kind is RouteKind.STREAM:
            try:
                return route.handler(request, from_loopback, peer, ())
            except HttpError as error:
                self._count_refusal(error)
                raise
        return route.handler(request, from_loopback, peer, ())

    def _metrics_page(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        text = self._view.metrics_text()
        page = response(200, text, "text/plain; version=0.0.4", keep_alive=request.keep_alive)
        return self._respond(request, page)

    def _readyz(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        return self._respond(request, self._readiness(request))

    def _healthz(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        return self._respond(request, self._liveness(request))

    @staticmethod
    def _respond(request: Request, data: bytes) -> Respond:
        return Respond(data, close=not request.keep_alive)

    def _liveness(self, request: Request) -> bytes:
        body = b"" if request.method == "HEAD" else b"ok\n"
        return response(200, body, keep_alive=request.keep_alive)

    def _readiness(self, request: Request) -> bytes:
        """200 while this process can take streams and publishes; 503 while it is
        draining or its broker is unreachable (liveness stays with /healthz)."""
        problem = "draining" if self.state.draining else self._view.unready_reason()
        headers: tuple[tuple[str, str], ...]
        if problem is None:
            status, text, headers = 200, "ready", ()
        else:
            status, text, headers = 503, f"not ready: {problem}", RETRY_AFTER
        body = b"" if request.method == "HEAD" else f"{text}\n".encode()
        return response(status, body, headers=headers, keep_alive=request.keep_alive)

    # Load shedding

    def shed(self, request: Request) -> bytes:
        """The answer to a request over the connection limit. A stream request gets a
        200 stream that only sets a jittered `retry:` and says why, then ends:
        EventSource reconnects by itself after a 200 (but never after a 503), and the
        jitter spreads the clients' return. Liveness stays 200 (a busy server is alive),
        readiness says 503, anything else gets 503 with Retry-After."""
        if request.method == "GET" and request.path == "/events":
            allowed = self._cors.check(request)  # a CORS failure would also stop EventSource
            return self.come_back_later(self._heads[allowed], OVERLOADED)
        if request.method == "GET" and request.path == "/ws":
            self._cors.check(request)
            return self.come_back_later(self._switching_head(check_upgrade(request)), OVERLOADED, Framing.WS)
        if request.path == "/healthz" and request.method in self.routes["/healthz"].methods:
            return self._liveness(request)
        if request.path == "/readyz":
            return error_response(HttpError(503, "not ready: at the connection limit", RETRY_AFTER))
        return self.busy()

    def busy(self) -> bytes:
        self._metrics.rejected[503] += 1
        return error_response(BUSY)

    def come_back_later(self, head: bytes, reason: str, framing: Framing = Framing.SSE) -> bytes:
        """A whole stream response: `head`, a jittered `retry:` and a `rawsse-retry`
        event saying why. The event has no id, so the client keeps its Last-Event-ID and
        resumes when it comes back; and it is no `rawsse-reset`, since nothing was
        missed and nothing needs reloading (a reload wave would move the overload onto
        the application behind rawsse). A WebSocket gets its 101 `head` and a close
        frame 1013 (try again later) whose reason is the same JSON."""
        self._metrics.streams_refused += 1
        delay = self.reconnect_delay()
        why = json.dumps({"reason": reason, "retry": delay})
        if framing == Framing.WS:
            return head + close_frame(CloseCode.TRY_AGAIN_LATER, why)
        return head + encode_retry(delay) + encode_event(why, None, RETRY_EVENT)

    def reconnect_delay(self) -> int:
        """A reconnection delay in ms drawn from [--retry, --retry + --retry-spread]."""
        options = self._options
        return options.retry + round(self._rng.random() * options.retry_spread * 1000)

    def _events(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        allowed = self._cors.check(request)
        names, last_event_id, start = self._stream_query(request)
        if not names:
            raise HttpError(400, "name at least one topic: /events?topic=NAME")
        head = self._heads[allowed]
        prefix = self._prefixes[allowed]
        opening = Opening(names, last_event_id, Framing.SSE, prefix, head, False, NO_ACCESS, start)
        return self._authorized(request, opening, peer)

    def _websocket(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        """A WebSocket stream: its topics are optional (it can subscribe later)."""
        self._cors.check(request)  # the CSWSH defence: pages of other origins need --cors-origin
        head = self._switching_head(check_upgrade(request))
        names, last_event_id, start = self._stream_query(request)
        publisher = self._publishers.may_publish(request, from_loopback)
        opening = Opening(names, last_event_id, Framing.WS, head, head, publisher, NO_ACCESS, start)
        return self._authorized(request, opening, peer)

    def _authorized(self, request: Request, opening: Opening, peer: Callable[[], str | None]) -> Effect:
        """The stream, once its client's credential allows its topics (asking the
        application first, where --auth-url says so)."""
        access = self.access
        if not access.enabled and not access.options.max_streams_per_ip:
            return self._stream(opening)  # the common case, without tokens or limits: nothing to ask
        decided = access.for_stream(request, opening.topics, peer(), opening.framing)
        if isinstance(decided, Asking):
            finish = decided.finish

            def then(outcome: tuple[int, bytes] | str) -> Effect:
                answer = answer_of(outcome, self._options.max_topic_length)
                try:
                    return self._stream(opening._replace(access=finish(answer)))
                except AppUnavailable:
                    event_source = "text/event-stream" in request.headers.get("accept", "")
                    if opening.framing == Framing.SSE and event_source:
                        # An EventSource stops for good on a 503: it is told to come back.
                        return Respond(self.come_back_later(opening.head, AUTH_UNAVAILABLE), close=True)
                    raise
                except HttpError as error:
                    self._count_refusal(error)
                    raise

            return AskApplication(decided.call, then)
        return self._stream(opening._replace(access=decided))

    def _count_refusal(self, error: HttpError) -> None:
        if error.status in (401, 403):
            self._metrics.auth_refused += 1
        elif error.status == 429:
            self._metrics.streams_over_limit += 1

    def _stream_query(self, request: Request) -> tuple[tuple[str, ...], str | None, Start]:
        """The topics, the id to resume after and where to start without one, of a stream
        request."""
        topics: dict[str, None] = {}
        last_event_id = request.headers.get("last-event-id") or None
        start = Start.LIVE
        for name, value in query_pairs(request):
            if name == "topic":
                topics[self._topic(value)] = None
            elif name == "lastEventId" and last_event_id is None:
                # For clients that cannot set headers; the header wins because a browser
                # sends the newer id in it when it reconnects to the same URL.
                last_event_id = value or None
            elif name == "from":
                start = parse_start(value)
        try:
            check_topic_count(tuple(topics), self._options.max_topics)
        except TopicError as exc:
            raise HttpError(400, str(exc)) from None
        if start is Start.UNACKED:
            if not self._acks.kept:
                raise AcksUnavailable()
            if not any(owner_of(topic) for topic in topics):
                raise HttpError(400, "from=unacked needs a private topic (NAME@USER) among the topics")
        return tuple(topics), last_event_id, start

    def _stream(self, opening: Opening) -> Effect:
        if self.state.draining:
            return Respond(self.come_back_later(opening.head, SHUTTING_DOWN, opening.framing), close=True)
        if not self._accept_budget.take(self._clock()):
            return Respond(self.come_back_later(opening.head, OVERLOADED, opening.framing), close=True)
        if self._view.shares_order:
            self._view.catch_up()
            ahead = self._hub.not_yet_taken(opening.last_event_id)
            if ahead is not None:
                return WaitTaken(ahead, RESUME_WAIT, lambda: self._open(opening))
        return self._open(opening)

    def _open(self, opening: Opening) -> Effect:
        """The stream; for `from=unacked`, once where its user's topics stand is read, and,
        where it resumes an EventSource's stream of the same URL, once they are
        acknowledged up to its Last-Event-ID: that stream received every event of them up
        to it (what was not acknowledged, then live ones). A stream that started live has
        not, and acknowledges nothing by resuming; nor does a WebSocket, whose topics may
        have changed since (it acknowledges with a command)."""
        if opening.start is not Start.UNACKED:
            return self._replayed(opening, None)
        mine = users_topics(opening.topics, opening.access.sub, self.access.enabled)
        if not mine:
            raise Forbidden("from=unacked: none of the topics is the credential's user's own")
        sequence = 0
        if opening.last_event_id and opening.framing == Framing.SSE:
            try:
                sequence = self._hub.position_of(opening.last_event_id)
            except UnusableId:
                pass  # the replay tells the client (a reset); nothing is acknowledged

        def then(acked: Acked | RawsseError) -> Effect:
            if isinstance(acked, RawsseError):
                return Respond(
                    self.come_back_later(opening.head, STORE_UNAVAILABLE, opening.framing), close=True
                )
            return self._replayed(opening, acked)

        return Acknowledge(mine, sequence, then)

    def _replayed(self, opening: Opening, acked: Acked | None) -> Answer:
        """The stream, or one page of a long replay: sent whole, then the connection
        closes and the client's reconnect asks for the next page."""
        topics, framing, prefix = opening.topics, opening.framing, opening.prefix
        page = self._options.max_pending_bytes
        replay, whole = self._hub.catch_up(topics, opening.last_event_id, page, framing, acked)
        preamble = prefix + replay if replay else prefix
        if not whole:
            if framing == Framing.WS:  # the page, then "reconnect for the next" (1012)
                preamble += close_frame(CloseCode.SERVICE_RESTART, "replay continues on reconnect")
            return Respond(preamble, close=True)
        return OpenStream(topics, preamble, opening.head, framing, opening.publisher, opening.access)

    def _switching_head(self, accept: str) -> bytes:
        return switching_head(accept, self._worker_headers)

    def _topic(self, value: str) -> str:
        try:
            return check_subscribe_topic(value, self._options.max_topic_length, self.access.enabled)
        except TopicError as exc:
            raise HttpError(400, f"{exc}: {value[:64]!r}") from None

    def _presence(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> CountPresence:
        """Who is on a topic: authorized as publishing to it is."""
        grant = self._publishers.check(request, from_loopback)
        topic = self._topic(self._one(request, "topic", "/presence?topic=NAME"))
        if grant is not None:
            self.access.check_publish([topic], grant.sub, grant.publish)

        def answer(tally: Tally, complete: bool) -> Respond:
            return _json(request, answer_body(topic, tally, complete), cors)

        return CountPresence(topic, answer)

    # Acknowledgements (rawsse.core.acks)

    def _ack(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        """POST /ack?topic=T&id=ID: T's user received everything up to ID."""
        usage = "?topic=NAME@USER&id=ID"
        topic = self._topic(self._one(request, "topic", usage))
        event_id = self._one(request, "id", usage)
        hub, view = self._hub, self._view

        def acknowledge() -> Effect:
            if view.shares_order:  # an id another process gave out, maybe not read here yet
                view.catch_up()
                ahead = hub.not_yet_taken(event_id)
                if ahead is not None:
                    return WaitTaken(ahead, RESUME_WAIT, acknowledge_now)
            return acknowledge_now()

        def acknowledge_now() -> Effect:
            return Acknowledge((topic,), acknowledged_sequence(hub, event_id), answer)

        def answer(acked: Acked | RawsseError) -> Effect:
            if isinstance(acked, RawsseError):
                raise acked
            body = {"topic": topic, "acked": id_or_none(self._hub.ids, acked[topic])}
            return _json(request, json.dumps(body).encode(), cors)

        return self._as_owner(request, from_loopback, topic, acknowledge)

    def _unacked(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Effect:
        """GET /unacked?topic=T: how many events T's user has not acknowledged (the badge)."""
        topic = self._topic(self._one(request, "topic", "?topic=NAME@USER"))

        def answer(found: Unacked) -> Effect:
            body = {
                "topic": topic,
                "count": found.events,
                "newest": id_or_none(self._hub.ids, found.newest),
                "acked": id_or_none(self._hub.ids, found.acked),
                "complete": found.complete,
            }
            return _json(request, json.dumps(body).encode(), cors)

        def count() -> Effect:
            if self._view.shares_order:
                self._view.catch_up()  # what other processes published is counted too
            return CountUnacked(topic, self._hub.newest, answer)

        return self._as_owner(request, from_loopback, topic, count)

    def _as_owner(
        self, request: Request, from_loopback: Callable[[], bool], topic: str, then: Callable[[], Effect]
    ) -> Effect:
        """`then()`, for the user whose private topic `topic` is (by their credential) or
        for the operator (publishing's rules); raises 400, 401, 403 or 501."""
        check_ackable(topic)
        if not self._acks.kept:
            raise AcksUnavailable()
        access = self.access
        if access.enabled and not self._publishers.holds_token(request):
            user = access.user(request, (topic,))
            if isinstance(user, Asking):
                finish, limit = user.finish, self._options.max_topic_length
                return AskApplication(
                    user.call, lambda outcome: self._owned(finish(answer_of(outcome, limit)), topic, then)
                )
            if user is not None:
                return self._owned(user, topic, then)
        if self._publishers.check(request, from_loopback) is not None:
            raise Forbidden("a topic is acknowledged by its user's credential, or the operator's")
        return then()

    @staticmethod
    def _owned(grant: Grant, topic: str, then: Callable[[], Effect]) -> Effect:
        if grant.sub is None or owner_of(topic) != grant.sub:
            raise Forbidden(f"a user acknowledges only their own topics, not {topic[:64]!r}")
        return then()

    @staticmethod
    def _one(request: Request, name: str, usage: str) -> str:
        """The one non-empty value of query parameter `name`, or 400 with `usage`."""
        values = query_values(request, name)
        if len(values) != 1 or not values[0]:
            raise HttpError(400, f"name one {name}: {usage}")
        return values[0]

    def _disconnect(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> CloseStreams | DisconnectUser:
        if self._publishers.check(request, from_loopback) is not None:
            raise Forbidden("disconnecting needs the publish token (or loopback without one)")
        pairs = query_pairs(request)
        users = [value for key, value in pairs if key == "user"]
        if users:
            if len(users) > 1 or any(key != "user" for key, _ in pairs):
                raise HttpError(400, "disconnect one user at a time: /disconnect?user=SUB")
            sub = users[0]
            if not 0 < len(sub) <= MAX_SUB_LENGTH:
                raise HttpError(400, f"user must be 1 to {MAX_SUB_LENGTH} characters")
            body = json.dumps({"user": sub}).encode()
            return DisconnectUser(sub, lambda: _json(request, body, cors))
        topics = tuple(dict.fromkeys(self._topic(v) for k, v in pairs if k == "topic"))
        if not topics:
            raise HttpError(400, "name at least one topic or a user: /disconnect?topic=NAME or ?user=SUB")

        return CloseStreams(topics, lambda closed: _json(request, b'{"closed": %d}' % closed, cors))

    def _publish(
        self, request: Request, from_loopback: Callable[[], bool], peer: Callable[[], str | None], cors: Cors
    ) -> Publish:
        grant = self._publishers.check(request, from_loopback)
        if self.state.draining:
            raise HttpError(503, "shutting down; publish to another server", RETRY_AFTER)
        parsed = parse_publish(
            request.query,
            request.headers.get("content-type", ""),
            request.body,
            self._options.max_topic_length,
        )
        if grant is not None:  # a client token: each topic by its publish patterns
            for item in parsed.items:
                self.access.check_publish(item.topics, grant.sub, grant.publish)

        def answer(ids: list[str]) -> Respond:
            # Ids are letters, digits and '-': the JSON is written out, not encoded.
            if parsed.batch:
                return _json(request, b'{"ids": [%s]}' % b", ".join(b'"%s"' % i.encode() for i in ids), cors)
            return _json(request, b'{"id": "%s"}' % ids[0].encode(), cors)

        return Publish(parsed.items, answer)


def _json(request: Request, body: bytes, cors: tuple[tuple[str, str], ...]) -> Respond:
    keep_alive = request.keep_alive
    prefix, suffix = _json_head(cors, keep_alive)
    return Respond(b"%s%d%s%s" % (prefix, len(body), suffix, body), not keep_alive)


@functools.lru_cache(maxsize=256)
def _json_head(cors: tuple[tuple[str, str], ...], keep_alive: bool) -> tuple[bytes, bytes]:
    """The head of a 200 JSON answer, around its Content-Length value: built once for
    each set of headers, not per answer."""
    head = response(200, b"", "application/json", cors, keep_alive)
    before, _, after = head.partition(b"Content-Length: 0\r\n")
    return before + b"Content-Length: ", b"\r\n" + after
