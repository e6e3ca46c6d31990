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
from rawsse.hub.hub import EventTooLarge, NotYetTaken, Overloaded
from rawsse.metrics import Metrics
from rawsse.proto.http import HttpError, Request, response, stream_head
from rawsse.proto.publish import PublishError, parse_publish
from rawsse.proto.sse import encode_retry
from rawsse.proto.topics import TopicError, check_topic

MAX_QUERY_FIELDS = 200
"""Bounds the work of parsing one /events query string."""

ROUTES = {"/events": ("GET",), "/publish": ("POST",), "/healthz": ("GET", "HEAD"), "/metrics": ("GET",)}


@dataclass(frozen=True, slots=True)
class OpenStream:
    """The request asks for an event stream; `preamble` holds its first bytes. When
    `live` is False the preamble is one page of a long replay: send it and close, and the
    client's reconnect asks for the next page."""

    topics: tuple[str, ...]
    preamble: bytes
    live: bool = True


RESUME_WAIT = 1.0
"""How long a resume waits for an id another worker or node has already delivered; past
it the client gets a reset (unknown-id)."""


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
        extra = [] if label is None else [("X-Rawsse-Worker", label)]
        self._stream_prefix = stream_head(extra) + encode_retry(config.retry)

    def handle(self, request: Request, from_loopback: bool) -> bytes | OpenStream | PendingResponse:
        """Answer one request; raises HttpError for anything refused."""
        methods = ROUTES.get(request.path)
        if methods is None:
            raise HttpError(404, f"no such path: {request.path}")
        if request.method not in methods:
            raise HttpError(405, f"use {' or '.join(methods)}", [("Allow", ", ".join(methods))])
        if request.path == "/events":
            return self._events(request)
        if request.path == "/publish":
            return self._publish(request, from_loopback)
        if request.path == "/metrics":
            text = self._metrics.render(self._broker.worker_metrics())
            return response(200, text, "text/plain; version=0.0.4", keep_alive=request.keep_alive)
        body = b"" if request.method == "HEAD" else b"ok\n"
        return response(200, body, keep_alive=request.keep_alive)

    def _events(self, request: Request) -> OpenStream | PendingResponse:
        try:
            params = parse_qsl(
                request.query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS
            )
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "malformed query string") from None
        topics: dict[str, None] = {}
        last_event_id = request.headers.get("last-event-id") or None
        for name, value in params:
            if name == "topic":
                try:
                    topics[check_topic(value, self._config.max_topic_length)] = None
                except TopicError as exc:
                    raise HttpError(400, f"{exc}: {value[:64]!r}") from None
            elif name == "lastEventId" and last_event_id is None:
                # For clients that cannot set headers; the header wins because a browser
                # sends the newer id in it when it reconnects to the same URL.
                last_event_id = value or None
        if not topics:
            raise HttpError(400, "name at least one topic: /events?topic=NAME")
        if len(topics) > self._config.max_topics:
            raise HttpError(400, f"at most {self._config.max_topics} topics per stream")
        names = tuple(topics)
        if self._broker.shares_order:
            try:
                return self._open(names, last_event_id, may_wait=True)
            except NotYetTaken as exc:
                return PendingResponse(
                    self._broker.wait_taken(exc.sequence, RESUME_WAIT),
                    lambda _: self._open(names, last_event_id),
                )
        return self._open(names, last_event_id)

    def _open(self, topics: tuple[str, ...], last_event_id: str | None, may_wait: bool = False) -> OpenStream:
        page = self._config.max_pending_bytes
        replay, whole = self._hub.catch_up(topics, last_event_id, page, may_wait)
        return OpenStream(topics, self._stream_prefix + replay, live=whole)

    def _publish(self, request: Request, from_loopback: bool) -> bytes | PendingResponse:
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
            return response(200, body, "application/json", keep_alive=request.keep_alive)

        if isinstance(ids, list):
            return finish(ids)
        return PendingResponse(ids, finish)

    def _authorize(self, request: Request, from_loopback: bool) -> None:
        token = self._config.publish_token
        if token is None:
            if not from_loopback:
                raise HttpError(403, "publishing is allowed from loopback only (set a publish token)")
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HttpError(401, "a valid bearer token is required", [("WWW-Authenticate", "Bearer")])
