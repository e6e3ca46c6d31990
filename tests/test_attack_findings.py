"""The exact requests of the outside attack run's findings, over real loopback sockets:
a token whose exp is a numeric string, an operator's route reached through a proxy on
this machine, a URL token spelt with escapes, a token naming a kid no key has. (The
fifth, a WebSocket failed for a protocol fault, is in test_websocket.py.) The rules
themselves are tested without sockets in test_auth.py, test_api.py and test_config.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec

from rawsse.config import Config
from rawsse.core.admission import RELAYED
from rawsse.errors import ConfigError
from rawsse.reactor.server import Server
from tests.helpers import exchange, run_with_server
from tests.test_private_topics import refusal, stream, ws_connect
from tests.tokens import SECRET, bearer, token

KIND = "integration"

DEFAULT = ("uvloop", "epoll")


def test_a_token_whose_exp_is_a_numeric_string_is_refused() -> None:
    """Signed with the server's secret, exp written as a JSON string: 401 for SSE and
    WebSocket alike, never a stream without end."""
    exp = str(int(time.time()) + 2)
    value = jwt.encode({"sub": "42", "exp": exp}, SECRET, algorithm="HS256")

    async def scenario(server: Server) -> None:
        for _ in range(2):  # the second from the verified-token cache, were it there
            status, body = await refusal(server.port, "topic=notes@42", **bearer(value))
            assert status == 401
            assert body == "token exp must be a number of Unix seconds (RFC 7519 NumericDate)\n"
        with pytest.raises(websockets.InvalidStatus) as caught:
            await ws_connect(server, "topic=notes@42", **bearer(value))
        assert caught.value.response.status_code == 401
        numeric = jwt.encode({"sub": "42", "exp": int(exp)}, SECRET, algorithm="HS256")
        accepted = await ws_connect(server, "topic=notes@42", **bearer(numeric))  # the same, as a number
        await accepted.close()

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET, jwt_leeway=0)


def operator_requests(query_user: str = "42") -> list[bytes]:
    relayed = "Host: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n"
    body = b"topic=x&data=hi"
    return [
        (
            "POST /publish HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n{relayed}\r\n"
        ).encode()
        + body,
        f"POST /disconnect?user={query_user} HTTP/1.1\r\nContent-Length: 0\r\n{relayed}\r\n".encode(),
        f"GET /presence?topic=x HTTP/1.1\r\n{relayed}\r\n".encode(),
    ]


def test_a_request_relayed_by_a_proxy_on_this_machine_is_no_operator() -> None:
    """Without a publish token, a request from loopback with X-Forwarded-For and Host:
    127.0.0.1 (nginx on the same host) may not publish, disconnect or read presence."""

    async def scenario(server: Server) -> None:
        for raw in operator_requests():
            answer, closed = await exchange(server.port, raw)
            assert answer.status == 403, raw
            assert answer.body == RELAYED.encode() + b"\n"
            assert closed

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET)
    # Naming that proxy as trusted is refused at start without a publish token ...
    with pytest.raises(ConfigError, match="names a proxy on this machine"):
        Config(port=0, jwt_secret=SECRET, trusted_proxy="127.0.0.1")

    # ... and with one, the token decides for every request, relayed or not.
    async def with_token(server: Server) -> None:
        for raw in operator_requests():
            answer, _ = await exchange(server.port, raw)
            assert answer.status == 401, raw

    run_with_server(DEFAULT, with_token, jwt_secret=SECRET, trusted_proxy="127.0.0.1", publish_token="s3cret")


def test_a_url_token_spelt_with_escapes_is_refused_like_any_url_token() -> None:
    async def scenario(server: Server) -> None:
        value = token("1", subscribe=["news"])
        for name in ("token", "tok%65n", "%74oken"):
            status, body = await refusal(server.port, f"topic=news&{name}={value}")
            assert (status, body) == (401, "tokens in the URL are not accepted here (see --token-query)\n")

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET, public_topics="news")


def test_a_token_naming_a_kid_no_key_has_is_refused(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**entry, "kid": "current", "use": "sig", "alg": "ES256"}]}))
    claims = {"sub": "42", "exp": int(time.time()) + 60}

    async def scenario(server: Server) -> None:
        def signed(kid: str) -> str:
            return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})

        accepted = await stream(server.port, "topic=notes@42", **bearer(signed("current")))
        assert accepted.status == 200
        accepted.close()
        for kid in ("../../etc/passwd", "retired"):  # really signed by the trusted key
            assert await refusal(server.port, "topic=notes@42", **bearer(signed(kid))) == (
                401,
                "token names a key id this server does not know\n",
            )

    run_with_server(DEFAULT, scenario, jwt_jwks_file=str(jwks))
