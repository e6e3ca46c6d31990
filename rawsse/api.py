"""The HTTP API: turns a parsed request into a response, or into a stream to open.

No I/O: it reads and changes the hub and returns bytes. The routes are documented in the
README; their names are part of the public interface.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from rawsse.broker.base import Broker, BrokerUnavailable
from rawsse.config import Config
from rawsse.dashboard.static import StaticFiles, is_static_path
from rawsse.hub.hub import EventTooLarge, NotYetTaken, Overloaded
from rawsse.metrics import Metrics
from rawsse.proto.cors import CorsPolicy, allow_headers
from rawsse.proto.http import HttpError, Request, response, stream_head
from rawsse.proto.publish import PublishError, parse_publish
from rawsse.proto.sse import encode_retry
from rawsse.proto.topics import TopicError, check_subscribe_topic

MAX_QUERY_FIELDS = 200
"""Bounds the work of parsing one /events query string."""

ROUTES = {
    "/events": ("GET",),
    "/publish": ("POST",),
    "/disconnect": ("POST",),
    "/healthz": ("GET", "HEAD"),
    "/metrics": ("GET",),
}
"""The dashboard's `/` and `/static/*` come on top, unless it is switched off."""

BROWSER_PATHS = ("/events", "/publish", "/disconnect")
"""Where pages of other origins may come (see rawsse.proto.cors); OPTIONS answers here."""

ADMIN_PATHS = ("/publish", "/disconnect")

RESUME_WAIT = 1.0
"""How long a resume waits for an id another worker or node has already delivered; past
it the client gets a reset (unknown-id)."""


@dataclass(frozen=True, slots=True)
class OpenStream:
    """The request asks for an event stream; `preamble` holds its first bytes. When
    `live` is False the preamble is one page of a long replay: send it and close, and the
    client's reconnect asks for the next page."""

    topics: tuple[str, ...]
    preamble: bytes
    live: bool = True


@dataclass(frozen=True, slots=True)
class CloseStreams:
    """An admin asks to close every stream subscribed to one of `topics` (the clients
    reconnect by themselves and resume); `answer` is the response once that is done."""

    topics: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    keep_alive: bool = True

    def answer(self, closed: int) -> bytes:
        body = json.dumps({"closed": closed}).encode()
        return response(200, body, "application/json", self.headers, self.keep_alive)


@dataclass(frozen=True, slots=True)
class PendingResponse:
    """The answer waits on the broker: await `waiting`, then act on `finish(value)`; an
    exception gets the error `publish_error` maps it to."""

    waiting: Awaitable[Any]
    finish: Callable[[Any], bytes | OpenStream]


def publish_error(exc: Exception) -> HttpError | None:
    """The response to a publish the broker refused; None for an unexpected error."""
    if isinstance(exc, Overloaded):
        return HttpError(503, str(exc), [("Retry-After", "1")])
    if isinstance(exc, BrokerUnavailable):
        return HttpError(503, f"broker unavailable: {exc}", [("Retry-After", "1")])
    if isinstance(exc, EventTooLarge):
        return HttpError(413, str(exc))
    return None


class Api:
    def __init__(self, broker: Broker, metrics: Metrics, config: Config) -> None:
        self._broker = broker
        self._hub = broker.hub
        self._metrics = metrics
        self._config = config
        label = broker.worker_label
        worker = [] if label is None else [("X-Rawsse-Worker", label)]
        self._stream_prefix = stream_head(worker) + encode_retry(config.retry)
        self._cors = CorsPolicy(config.cors_origin)
        # Stream heads for allowed origins are built here, once, not per stream.
        self._cors_stream_prefixes = {
            allowed: stream_head([*worker, *allow_headers(allowed)]) + encode_retry(config.retry)
            for allowed in self._cors.allowed_values()
        }
        self._static = StaticFiles.load() if config.dashboard else None

    def handle(
        self, request: Request, from_loopback: bool
    ) -> bytes | OpenStream | CloseStreams | PendingResponse:
        """Answer one request; raises HttpError for anything refused."""
        methods = ROUTES.get(request.path)
        if methods is None:
            if self._static is not None and is_static_path(request.path):
                return self._static.answer(request)
            raise HttpError(404, f"no such path: {request.path}")
        if request.method not in methods:
            if request.method == "OPTIONS" and request.path in BROWSER_PATHS:
                return self._cors.preflight(request, methods)
            raise HttpError(405, f"use {' or '.join(methods)}", [("Allow", ", ".join(methods))])
        if request.path == "/events":
            return self._events(request)
        if request.path in ADMIN_PATHS:
            allowed = self._cors.check(request)
            cors = allow_headers(allowed) if allowed else ()
            try:
                if request.path == "/disconnect":
                    return self._disconnect(request, from_loopback, cors)
                return self._publish(request, from_loopback, cors)
            except HttpError as error:
                error.headers += cors  # so a page of an allowed origin can read why
                raise
        if request.path == "/metrics":
            text = self._metrics.render(self._broker.worker_metrics())
            return response(200, text, "text/plain; version=0.0.4", keep_alive=request.keep_alive)
        body = b"" if request.method == "HEAD" else b"ok\n"
        return response(200, body, keep_alive=request.keep_alive)

    def _events(self, request: Request) -> OpenStream | PendingResponse:
        allowed = self._cors.check(request)
        params = _query(request)
        topics: dict[str, None] = {}
        last_event_id = request.headers.get("last-event-id") or None
        for name, value in params:
            if name == "topic":
                topics[self._topic(value)] = None
            elif name == "lastEventId" and last_event_id is None:
                # For clients that cannot set headers; the header wins because a browser
                # sends the newer id in it when it reconnects to the same URL.
                last_event_id = value or None
        if not topics:
            raise HttpError(400, "name at least one topic: /events?topic=NAME")
        if len(topics) > self._config.max_topics:
            raise HttpError(400, f"at most {self._config.max_topics} topics per stream")
        names = tuple(topics)
        prefix = self._stream_prefix if allowed is None else self._cors_stream_prefixes[allowed]
        if self._broker.shares_order:
            try:
                return self._open(names, last_event_id, prefix, may_wait=True)
            except NotYetTaken as exc:
                return PendingResponse(
                    self._broker.wait_taken(exc.sequence, RESUME_WAIT),
                    lambda _: self._open(names, last_event_id, prefix),
                )
        return self._open(names, last_event_id, prefix)

    def _open(
        self, topics: tuple[str, ...], last_event_id: str | None, prefix: bytes, may_wait: bool = False
    ) -> OpenStream:
        page = self._config.max_pending_bytes
        replay, whole = self._hub.catch_up(topics, last_event_id, page, may_wait)
        return OpenStream(topics, prefix + replay, live=whole)

    def _topic(self, value: str) -> str:
        try:
            return check_subscribe_topic(value, self._config.max_topic_length)
        except TopicError as exc:
            raise HttpError(400, f"{exc}: {value[:64]!r}") from None

    def _disconnect(
        self, request: Request, from_loopback: bool, cors: tuple[tuple[str, str], ...]
    ) -> CloseStreams:
        self._authorize(request, from_loopback)
        topics = tuple(dict.fromkeys(self._topic(v) for k, v in _query(request) if k == "topic"))
        if not topics:
            raise HttpError(400, "name at least one topic: /disconnect?topic=NAME")
        return CloseStreams(topics, cors, request.keep_alive)

    def _publish(
        self, request: Request, from_loopback: bool, cors: tuple[tuple[str, str], ...] = ()
    ) -> bytes | PendingResponse:
        self._authorize(request, from_loopback)
        try:
            parsed = parse_publish(
                request.query,
                request.headers.get("content-type", ""),
                request.body,
                self._config.max_topic_length,
            )
        except PublishError as exc:
            raise HttpError(exc.status, str(exc)) from None
        try:
            ids = self._broker.publish(parsed.items)
        except (Overloaded, EventTooLarge, BrokerUnavailable) as exc:
            error = publish_error(exc)
            assert error is not None
            raise error from None

        def finish(ids: list[str]) -> bytes:
            document = {"ids": ids} if parsed.batch else {"id": ids[0]}
            body = json.dumps(document).encode()
            return response(200, body, "application/json", cors, keep_alive=request.keep_alive)

        if isinstance(ids, list):
            return finish(ids)
        return PendingResponse(ids, finish)

    def _authorize(self, request: Request, from_loopback: bool) -> None:
        token = self._config.publish_token
        if token is None:
            if not from_loopback:
                raise HttpError(403, "publishing is allowed from loopback only (set a publish token)")
            if not is_loopback_host(request.headers.get("host", "")):
                # A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) is "same
                # origin" to the browser and arrives from loopback; only its Host gives it away.
                raise HttpError(403, "without a publish token, Host must be 127.0.0.1, [::1] or localhost")
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HttpError(401, "a valid bearer token is required", [("WWW-Authenticate", "Bearer")])


def _query(request: Request) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            request.query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "malformed query string") from None


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port); an absent one
    (HTTP/1.0) does too."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    else:
        name = name.rpartition(":")[0] or name if name.count(":") == 1 else name
    if name in ("", "localhost", "::1") or name.endswith(".localhost"):
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)
