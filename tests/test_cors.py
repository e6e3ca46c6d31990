"""Cross-origin rules: which origins may open streams and publish, and the headers."""

from __future__ import annotations

import pytest

from rawsse.config import Config
from rawsse.core.cors import CorsPolicy, parse_origins
from rawsse.core.effects import OpenStream
from rawsse.errors import ConfigError, HttpError
from rawsse.reactor.server import Server
from tests.helpers import StreamClient, exchange, run_with_server
from tests.test_api import make_api, request

KIND = "integration"

PAGE = "http://127.0.0.1:9000"


def test_origin_settings_parse_and_bad_ones_are_refused() -> None:
    assert parse_origins(None) == frozenset() and parse_origins(" ") == frozenset()
    assert parse_origins("https://A.example:8443/, http://b.example") == {
        "https://a.example:8443",
        "http://b.example",
    }
    assert parse_origins("*") == {"*"}
    for bad in ("a.example", "ftp://a.example", "http://a.example/path", "http://*.example", "*, http://a"):
        with pytest.raises(ConfigError):
            parse_origins(bad)
    with pytest.raises(ValueError, match="cors_origin"):
        Config(cors_origin="example.com")


def test_policy_decisions() -> None:
    policy = CorsPolicy(parse_origins(PAGE))
    assert policy.check(request("GET", "/events")) is None  # no Origin: not a browser page
    assert policy.check(request("GET", "/events", origin=PAGE, host="x")) == PAGE
    assert policy.check(request("GET", "/events", origin="HTTP://127.0.0.1:9000", host="x")) == PAGE
    same = request("GET", "/events", origin="http://127.0.0.1:8080", host="127.0.0.1:8080")
    assert policy.check(same) is None  # the page's own origin needs no header
    for other in ("http://127.0.0.1:9001", "null", "http://evil.example"):
        with pytest.raises(HttpError) as caught:
            policy.check(request("GET", "/events", origin=other, host="127.0.0.1:8080"))
        assert caught.value.status == 403 and "--cors-origin" in caught.value.message
    assert CorsPolicy(parse_origins("*")).check(request("GET", "/events", origin="null")) == "*"
    with pytest.raises(HttpError):  # no setting: cross-origin pages are refused
        CorsPolicy(parse_origins(None)).check(request("GET", "/events", origin=PAGE, host="127.0.0.1:8080"))


def test_stream_head_carries_the_allowed_origin() -> None:
    api = make_api(cors_origin=f"{PAGE},http://other.example")
    result = api.handle(request("GET", "/events", "topic=a", origin=PAGE), True)
    assert isinstance(result, OpenStream)
    head = result.preamble.split(b"\r\n\r\n")[0]
    assert f"Access-Control-Allow-Origin: {PAGE}\r\nVary: Origin".encode() in head
    plain = api.handle(request("GET", "/events", "topic=a"), True)
    assert isinstance(plain, OpenStream) and b"Access-Control" not in plain.preamble
    with pytest.raises(HttpError) as caught:
        api.handle(request("GET", "/events", "topic=a", origin="http://evil.example"), True)
    assert caught.value.status == 403


def test_publish_and_its_preflight() -> None:
    api = make_api(cors_origin=PAGE)
    preflight = api.handle(
        request("OPTIONS", "/publish", origin=PAGE, access_control_request_method="POST"), True
    )
    assert isinstance(preflight, bytes) and preflight.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert f"Access-Control-Allow-Origin: {PAGE}\r\n".encode() in preflight
    assert b"Access-Control-Allow-Methods: POST\r\n" in preflight
    assert b"Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n" in preflight
    with pytest.raises(HttpError) as caught:
        api.handle(request("OPTIONS", "/publish", origin="http://evil.example"), True)
    assert caught.value.status == 403
    form = {"content_type": "application/x-www-form-urlencoded", "origin": PAGE}
    published = api.handle(request("POST", "/publish", body=b"topic=a&data=x", **form), True)
    assert isinstance(published, bytes) and f"Access-Control-Allow-Origin: {PAGE}".encode() in published
    with pytest.raises(HttpError) as caught:  # the page can read why it was refused
        api.handle(request("POST", "/publish", body=b"topic=a", **form), True)
    assert caught.value.status == 400 and ("Access-Control-Allow-Origin", PAGE) in caught.value.headers


def test_a_foreign_page_cannot_publish_through_a_local_browser() -> None:
    # A form on any web site can POST to loopback without a preflight; without the
    # origin check it would publish, since loopback needs no token.
    with pytest.raises(HttpError) as caught:
        make_api().handle(
            request(
                "POST",
                "/publish",
                body=b"topic=a&data=x",
                content_type="application/x-www-form-urlencoded",
                origin="http://evil.example",
                host="127.0.0.1:8080",
            ),
            True,
        )
    assert caught.value.status == 403


def test_cors_over_sockets(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        allowed = await StreamClient.open(server.port, "topic=a", {"Origin": PAGE})
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == PAGE
        assert allowed.headers["content-type"] == "text/event-stream"
        allowed.close()
        refused, closed = await exchange(
            server.port,
            b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n",
        )
        assert (refused.status, closed) == (403, True)
        assert "access-control-allow-origin" not in refused.headers

    server = run_with_server(backend, scenario, cors_origin=PAGE)
    assert server.metrics.rejected[403] == 1
