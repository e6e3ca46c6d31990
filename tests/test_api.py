"""Routing and publish authorization, without sockets."""

from __future__ import annotations

import pytest

from rawsse.api import Api, OpenStream
from rawsse.broker.memory import MemoryBroker
from rawsse.config import Config
from rawsse.hub.history import History
from rawsse.hub.hub import Hub
from rawsse.hub.subscriptions import Subscriptions
from rawsse.metrics import Metrics
from rawsse.proto.http import HttpError, Request


def make_api(**options: object) -> Api:
    metrics = Metrics()
    hub = Hub(Subscriptions(8), History(), metrics)
    return Api(MemoryBroker(hub), metrics, Config(**options))  # type: ignore[arg-type]


def request(method: str, path: str, query: str = "", body: bytes = b"", **headers: str) -> Request:
    return Request(method, path, query, {k.replace("_", "-"): v for k, v in headers.items()}, body, True)


def test_events_opens_a_stream_with_retry_first() -> None:
    result = make_api(retry=1234).handle(request("GET", "/events", "topic=a&topic=b&topic=a&_=9"), True)
    assert isinstance(result, OpenStream)
    assert result.topics == ("a", "b")
    assert b"Content-Type: text/event-stream\r\n" in result.preamble
    assert result.preamble.endswith(b"\r\n\r\nretry: 1234\n")


def test_publishing_from_elsewhere_than_loopback_needs_a_token() -> None:
    form = request(
        "POST", "/publish", body=b"topic=a&data=x", content_type="application/x-www-form-urlencoded"
    )
    with pytest.raises(HttpError) as caught:
        make_api().handle(form, from_loopback=False)
    assert caught.value.status == 403
    assert b'"id"' in make_api().handle(form, from_loopback=True)  # type: ignore[operator]
    token_api = make_api(publish_token="t0k")
    with pytest.raises(HttpError) as caught:
        token_api.handle(form, from_loopback=True)  # with a token set, loopback needs it too
    assert caught.value.status == 401
    form.headers["authorization"] = "Bearer t0k"
    assert token_api.handle(form, from_loopback=False).startswith(b"HTTP/1.1 200 OK")  # type: ignore[union-attr]


def test_metrics_and_health() -> None:
    api = make_api()
    metrics = api.handle(request("GET", "/metrics"), True)
    assert isinstance(metrics, bytes)
    assert b"# TYPE rawsse_streams_open gauge\nrawsse_streams_open 0\n" in metrics
    assert api.handle(request("HEAD", "/healthz"), True).endswith(b"\r\n\r\n")  # type: ignore[union-attr]
