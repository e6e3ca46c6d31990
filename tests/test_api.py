"""Routing and publish authorization, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from rawsse import __version__
from rawsse.config import Config
from rawsse.core.admission import AcceptBudget
from rawsse.core.api import Api, ServerView
from rawsse.core.effects import Answer, OpenStream, Respond
from rawsse.core.history import History
from rawsse.core.http import Request
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.subscriptions import Subscriptions
from rawsse.dashboard.files import load_dashboard
from rawsse.errors import HttpError, RawsseError
from tests.parts import effect_runner, memory_broker

KIND = "unit"


class Harness:
    """The API with an in-memory broker and the real effect runner, without a loop: what a
    request comes to, as bytes (or the stream to open), or the error raised."""

    def __init__(self, **options: Any) -> None:
        config = Config(**options)
        self.metrics = Metrics()
        self.hub = Hub(Subscriptions(8), History(), self.metrics)
        broker = memory_broker(self.hub, max_event_bytes=config.max_pending_bytes)
        view = ServerView(None, False, lambda: None, self.metrics.render, lambda: None)
        static = load_dashboard() if config.dashboard else None
        self.api = Api(config.api_options(), self.hub, self.metrics, view, static)
        self.closed: list[tuple[str, ...]] = []
        # No effect these tests meet waits on the loop's timer.
        self.runner = effect_runner(broker, self.hub, self.metrics, self._close)

    def _close(self, topics: tuple[str, ...]) -> int:
        self.closed.append(topics)
        return 3

    def handle(self, request: Request, from_loopback: bool = True) -> bytes | OpenStream:
        outcome: list[Answer | RawsseError] = []
        self.runner.run(self.api.handle(request, lambda: from_loopback), outcome.append)
        [result] = outcome
        if isinstance(result, RawsseError):
            raise result
        return result.data if isinstance(result, Respond) else result


def make_api(**options: Any) -> Harness:
    return Harness(**options)


WS_UPGRADE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec_websocket_version": "13",
    "sec_websocket_key": "dGhlIHNhbXBsZSBub25jZQ==",
}


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
    assert f'rawsse_build_info{{version="{__version__}",'.encode() in metrics
    assert api.handle(request("HEAD", "/healthz"), True).endswith(b"\r\n\r\n")  # type: ignore[union-attr]
    ready = api.handle(request("GET", "/readyz"), True)
    assert isinstance(ready, bytes) and ready.startswith(b"HTTP/1.1 200 OK") and ready.endswith(b"ready\n")
    api.api.state.draining = True
    assert api.handle(request("GET", "/readyz"), True).startswith(b"HTTP/1.1 503")  # type: ignore[union-attr]


def test_the_accept_budget_takes_a_second_worth_then_refills() -> None:
    budget = AcceptBudget(rate=10, now=0.0)
    assert [budget.take(0.0) for _ in range(11)] == [True] * 10 + [False]
    assert not budget.take(0.05)  # half a stream's worth of refill
    assert budget.take(0.1)
    assert AcceptBudget(rate=0, now=0.0).take(0.0)  # no limit


def test_without_a_token_a_loopback_peer_must_also_name_a_loopback_host() -> None:
    """A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) connects from
    loopback, and the browser calls it same-origin; its Host header gives it away."""
    api = make_api()
    for host in ("127.0.0.1:8080", "localhost", "[::1]:9", "127.3.0.1", "app.localhost:80", ""):
        assert api.handle(request("POST", "/publish", "topic=a", b"x", host=host), True)
    for host in ("evil.example:8080", "127.0.0.1.evil.example", "1.2.3.4", "localhost.evil.example"):
        with pytest.raises(HttpError) as refused:
            api.handle(request("POST", "/publish", "topic=a", b"x", host=host), True)
        assert refused.value.status == 403 and "Host" in refused.value.message
    # With a token, the token decides (a reverse proxy forwards any Host).
    token_api = make_api(publish_token="s3cret")
    assert token_api.handle(
        request("POST", "/publish", "topic=a", b"x", host="push.example", authorization="Bearer s3cret"),
        False,
    )


@pytest.mark.parametrize(
    "proxy_header",
    [
        ("x_forwarded_for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x_real_ip", "203.0.113.9"),
        ("x_forwarded_host", "push.example"),
        ("x_forwarded_proto", "https"),
        ("via", "1.1 nginx"),
    ],
    ids=lambda header: header[0],
)
def test_a_request_a_proxy_relayed_is_not_the_operator(proxy_header: tuple[str, str]) -> None:
    """Behind a proxy on this machine every request comes from loopback, with whatever
    Host the client sent: without a publish token, a relayed request may not publish,
    disconnect or ask for presence, nor open a WebSocket that publishes."""
    name, value = proxy_header
    api = make_api()
    relayed = {"host": "127.0.0.1", name: value}
    for method, path, query in [
        ("POST", "/publish", "topic=a"),
        ("POST", "/disconnect", "user=42"),
        ("GET", "/presence", "topic=a"),
    ]:
        with pytest.raises(HttpError) as refused:
            api.handle(request(method, path, query, b"x", **relayed), True)
        assert refused.value.status == 403 and "proxy" in refused.value.message
    ws = request("GET", "/ws", "topic=a", **relayed, **WS_UPGRADE)
    opened = api.handle(ws, True)
    assert isinstance(opened, OpenStream) and not opened.publisher
    # With the publish token the token decides, relayed or not.
    token_api = make_api(publish_token="s3cret")
    publish = request("POST", "/publish", "topic=a", b"x", **relayed, authorization="Bearer s3cret")
    assert token_api.handle(publish, True)


def test_loopback_peers_are_recognised_without_parsing() -> None:
    from rawsse.reactor.protocol import is_loopback_address

    for address in ("127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"):
        assert is_loopback_address(address), address
    for address in ("10.0.0.1", "::ffff:10.0.0.1", "1.127.0.0", "fe80::1", "::2"):
        assert not is_loopback_address(address), address


def test_options_is_answered_where_pages_may_call_and_refused_on_the_websocket_path() -> None:
    api = make_api(cors_origin="https://app.example")
    preflight = {"origin": "https://app.example", "access_control_request_method": "GET"}
    assert api.handle(request("OPTIONS", "/events", **preflight), True).startswith(b"HTTP/1.1 20")  # type: ignore[union-attr]
    with pytest.raises(HttpError) as refused:
        api.handle(request("OPTIONS", "/ws", **preflight), True)  # no preflight for a handshake
    assert refused.value.status == 405
