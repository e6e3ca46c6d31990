"""Tokens on real loopback connections, for SSE and WebSocket streams: who may subscribe
and publish to what, a user's own topics reaching all of that user's connections and no
one else's, expiry while connected, a user's kick, the per-user and per-address limits,
and key rotation on SIGHUP."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from rawsse.core.publish import PublishItem
from rawsse.errors import ConfigError
from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, StreamClient, get, post, publish, run_with_server, wait_for
from tests.processes import Served, parse_metrics
from tests.tokens import SECRET, bearer, token

KIND = "integration"

DEFAULT = ("uvloop", "epoll")
TOKENS = {"jwt_secret": SECRET, "public_topics": "news,open:*", "token_cookie": "session"}


async def stream(port: int, query: str, **headers: str) -> StreamClient:
    return await StreamClient.open(port, query, headers)


async def ws_connect(server: Server, query: str = "", **headers: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/ws" + (f"?{query}" if query else "")
    return await connect(url, additional_headers=headers)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return result


async def close_of(ws: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(websockets.ConnectionClosed) as caught:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    received = caught.value.rcvd
    return (received.code, received.reason) if received else (None, "")


async def refusal(port: int, query: str, **headers: str) -> tuple[int, str]:
    client = await stream(port, query, **headers)
    body = await asyncio.wait_for(client.reader.read(), TIMEOUT)
    client.close()
    return client.status, body.decode()


def test_sse_accept_and_refuse_paths(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        news = await stream(port, "topic=news")  # public: no token needed
        assert news.status == 200
        news.close()
        assert await refusal(port, "topic=secret") == (401, "topic 'secret' needs a token\n")
        status, body = await refusal(port, "topic=secret", **bearer("not.a.token"))
        assert (status, body) == (401, "token signature or format is invalid\n")
        status, body = await refusal(port, "topic=secret", **bearer(token("1", ttl=-60)))
        assert (status, body) == (401, "token expired\n")
        status, body = await refusal(
            port, "topic=secret&topic=news", **bearer(token("1", subscribe=["other"]))
        )
        assert (status, body) == (403, "the token does not allow subscribing to 'secret'\n")
        status, _ = await refusal(port, f"topic=secret&token={token('1', subscribe=['secret'])}")
        assert status == 401  # a URL token, where --token-query is not set
        allowed = await stream(port, "topic=secret&topic=news", **bearer(token("1", subscribe=["secret"])))
        by_cookie = await stream(
            port, "topic=secret", Cookie=f"theme=x; session={token('2', subscribe=['sec*'])}"
        )
        assert (allowed.status, by_cookie.status) == (200, 200)
        event_id = await publish(port, "secret", "for the allowed")
        for client in (allowed, by_cookie):
            received = await client.next_event()
            assert (received.id, received.data) == (event_id, "for the allowed")
            client.close()
        metrics = parse_metrics((await get(port, "/metrics")).body.decode())
        assert metrics["rawsse_auth_refused_total"] == 5

    run_with_server(backend, scenario, **TOKENS)


def test_a_users_topic_reaches_all_of_that_users_streams_and_no_one_elses() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        mine = [await stream(port, "topic=notes@42", **bearer(token("42"))) for _ in range(2)]
        ws = await ws_connect(server, "topic=notes@42", **bearer(token("42")))
        other = await stream(port, "topic=notes@43", **bearer(token("43")))
        assert await refusal(port, "topic=notes@42", **bearer(token("43"))) == (
            403,
            "the token does not allow subscribing to 'notes@42'\n",
        )
        assert (await refusal(port, "topic=notes@42"))[0] == 401
        to_42 = await publish(port, "notes@42", "hello 42")
        to_43 = await publish(port, "notes@43", "hello 43")
        for client in mine:
            assert (await client.next_event()).id == to_42
        assert (await receive(ws))["id"] == to_42
        assert (await other.next_event()).id == to_43  # and nothing of 42's came first
        await ws.close()
        for client in (*mine, other):
            client.close()

    run_with_server(DEFAULT, scenario, **TOKENS)


def test_websocket_accept_and_refuse_paths(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        with pytest.raises(websockets.InvalidStatus) as caught:
            await ws_connect(server, "topic=secret")
        assert caught.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus) as caught:
            await ws_connect(server, "topic=secret", **bearer(token("1")))
        assert caught.value.response.status_code == 403
        by_cookie = await ws_connect(
            server, "topic=secret", Cookie=f"session={token('1', subscribe=['secret'])}"
        )
        await by_cookie.close()  # what a browser's WebSocket sends by itself
        rights = token("7", subscribe=["room:*"], publish=["room:{sub}"])
        ws = await ws_connect(server, "topic=news", **bearer(rights))
        await ws.send(json.dumps({"type": "subscribe", "topics": ["secret"], "ref": 1}))
        answer = await receive(ws)
        assert (answer["type"], answer["code"], answer["ref"]) == ("error", "forbidden", 1)
        await ws.send(json.dumps({"type": "subscribe", "topics": ["room:7", "room:8"], "ref": 2}))
        assert await receive(ws) == {"type": "subscribed", "topics": ["news", "room:7", "room:8"], "ref": 2}
        await ws.send(json.dumps({"type": "publish", "topic": "room:8", "data": "x", "ref": 3}))
        answer = await receive(ws)
        assert (answer["code"], answer["message"]) == (
            "forbidden",
            "the token does not allow publishing to 'room:8'",
        )
        await ws.send(json.dumps({"type": "publish", "topic": "room:7", "data": "mine", "ref": 4}))
        first, second = await receive(ws), await receive(ws)  # the answer and the event, in either order
        by_type = {message.get("type", "event"): message for message in (first, second)}
        assert by_type["published"]["ref"] == 4 and by_type["event"]["data"] == "mine"
        anonymous = await ws_connect(server, "topic=news")
        await anonymous.send(json.dumps({"type": "subscribe", "topics": ["room:7"]}))
        assert (await receive(anonymous))["code"] == "unauthorized"
        await anonymous.close()
        await ws.close()

    run_with_server(backend, scenario, **TOKENS)


def test_publishing_by_token_rights() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        writer = bearer(token("5", publish=["chat:*"]))
        reader = bearer(token("5", subscribe=["chat:*"]))
        ok = await post(port, "/publish", b"topic=chat:1&data=hi", headers=writer)
        assert ok.status == 200 and "id" in ok.json()
        refused = await post(port, "/publish", b"topic=news&data=hi", headers=writer)
        assert (refused.status, refused.body) == (403, b"the token does not allow publishing to 'news'\n")
        assert (await post(port, "/publish", b"topic=chat:1&data=hi", headers=reader)).status == 403
        assert (await post(port, "/publish", b"topic=chat:1&data=hi", headers=bearer("junk"))).status == 401
        kick = await post(port, "/disconnect?user=5", b"", headers=writer)
        assert kick.status == 403  # a client token may not disconnect users
        assert (
            await post(port, "/publish", b"topic=news&data=operator", headers={})
        ).status == 200  # loopback

    run_with_server(DEFAULT, scenario, **TOKENS)


def test_a_token_that_expires_while_connected_ends_its_streams(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        # The ledger's expiry is the token's exp, read by the once-a-second sweep.
        sse = await stream(port, "topic=secret", **bearer(token("9", ttl=2, subscribe=["secret"])))
        ws = await ws_connect(server, "topic=secret", **bearer(token("9", ttl=2, subscribe=["secret"])))
        lasting = await stream(port, "topic=secret", **bearer(token("10", ttl=600, subscribe=["secret"])))
        before = await publish(port, "secret", "before")
        assert (await sse.next_event()).id == before
        assert (await receive(ws))["id"] == before
        events = await sse.until_closed()
        assert [(e.event, json.loads(e.data), e.id) for e in events] == [
            ("rawsse-reset", {"reason": "token-expired"}, before)  # no id of its own: the last one stays
        ]
        assert await close_of(ws) == (3000, '{"reason": "token-expired"}')
        assert (await lasting.next_event()).id == before  # the other user's stream goes on
        after = await publish(port, "secret", "after")
        assert (await lasting.next_event()).id == after
        lasting.close()
        assert server.metrics.tokens_expired == 2

    run_with_server(backend, scenario, **TOKENS, jwt_leeway=0)


def test_expiry_by_the_sweep_on_a_fake_clock() -> None:
    """The server reads the wall clock it is given: moved past a token's exp, the next
    sweep ends the stream, with no timer of its own (the sweep is called here rather than
    waited for, so no real time passes)."""
    clock = [time.time()]

    async def scenario(server: Server) -> None:
        client = await stream(
            server.port, "topic=secret", **bearer(token("9", ttl=600, subscribe=["secret"]))
        )
        event_id = await publish(server.port, "secret", "live")
        assert (await client.next_event()).id == event_id
        clock[0] += 599  # not yet: exp and the leeway are still ahead
        server.streams.sweep(server.loop.time())
        assert server.metrics.tokens_expired == 0
        clock[0] += 10
        server.streams.sweep(server.loop.time())
        events = await client.until_closed()
        assert [(e.event, json.loads(e.data)) for e in events] == [
            ("rawsse-reset", {"reason": "token-expired"})
        ]
        assert server.metrics.tokens_expired == 1

    run_with_server(DEFAULT, scenario, wall=lambda: clock[0], **TOKENS)


def test_disconnecting_a_user_closes_every_stream_of_that_user() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        sse = await stream(port, "topic=news&topic=feed@42", **bearer(token("42")))
        ws = await ws_connect(server, "topic=news", **bearer(token("42")))
        other = await stream(port, "topic=news", **bearer(token("43")))
        answer = await post(port, "/disconnect?user=42", b"")
        assert (answer.status, answer.json()) == (200, {"user": "42"})
        events = await sse.until_closed()
        assert [(e.event, json.loads(e.data)) for e in events] == [
            ("rawsse-reset", {"reason": "disconnected"})
        ]
        assert (await close_of(ws))[0] == 3003
        event_id = await publish(port, "news", "still here")
        assert (await other.next_event()).id == event_id
        other.close()
        assert server.metrics.users_disconnected == 2
        assert (await post(port, "/disconnect?user=", b"")).status == 400

    run_with_server(DEFAULT, scenario, **TOKENS)


def test_per_user_and_per_address_limits() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        first = await stream(port, "topic=news", **bearer(token("42")))
        assert await refusal(port, "topic=news", **bearer(token("42"))) == (
            429,
            "at most 1 streams per user\n",
        )
        through_proxy = {"X-Forwarded-For": "203.0.113.7"}
        second = await stream(port, "topic=news", **through_proxy)  # loopback is the trusted proxy
        third = await stream(port, "topic=news", **through_proxy)
        status, body = await refusal(port, "topic=news", **through_proxy)
        assert (status, body) == (429, "at most 2 streams per client address\n")
        assert (await stream(port, "topic=news", **{"X-Forwarded-For": "203.0.113.8"})).status == 200
        first.close()
        await wait_for(lambda: server.access.ledger.held_by_user("42") == 0, "the user's stream closed")
        assert (await stream(port, "topic=news", **bearer(token("42")))).status == 200
        for client in (second, third):
            client.close()
        metrics = parse_metrics((await get(port, "/metrics")).body.decode())
        assert metrics["rawsse_streams_over_limit_total"] == 2
        assert metrics['rawsse_rejected_requests_total{status="429"}'] >= 2

    run_with_server(
        DEFAULT,
        scenario,
        **TOKENS,
        max_streams_per_user=1,
        max_streams_per_ip=2,
        trusted_proxy="127.0.0.0/8",
        publish_token="s3cret",  # a proxy on this machine: loopback is no operator
    )


def test_tokens_in_the_url_where_allowed_and_forged_ones_over_the_wire() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        allowed = await stream(port, f"topic=secret&token={token('1', subscribe=['secret'])}")
        assert allowed.status == 200
        allowed.close()
        ws = await ws_connect(server, f"topic=secret&token={token('1', subscribe=['secret'])}")
        await ws.close()
        header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        claims = {"sub": "1", "subscribe": ["secret"], "exp": int(time.time()) + 60}
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        assert await refusal(port, "topic=secret", **bearer(f"{header}.{body}.")) == (
            401,
            "token algorithm not accepted\n",
        )

    run_with_server(DEFAULT, scenario, jwt_secret=SECRET, token_query=True)


def test_keys_rotate_on_sighup(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    next_secret = "the-next-secret-after-rotation-is-long-too"
    old, new = token("1", subscribe=["t"]), token("1", subscribe=["t"], secret=next_secret)

    async def status_of(port: int, value: str) -> int:
        client = await stream(port, "topic=t", **bearer(value))
        client.close()
        return client.status

    with Served("--jwt-secret-file", str(secret_file)) as served:
        assert asyncio.run(status_of(served.port, old)) == 200
        secret_file.write_text(next_secret)
        served.process.send_signal(signal.SIGHUP)
        served.wait_for_lines("token keys reloaded")
        assert asyncio.run(status_of(served.port, old)) == 401
        assert asyncio.run(status_of(served.port, new)) == 200
        secret_file.write_text("short")
        served.process.send_signal(signal.SIGHUP)
        served.wait_for_lines("keeping the token keys in force")
        assert asyncio.run(status_of(served.port, new)) == 200
        assert served.process.poll() is None


def test_a_token_option_without_a_key_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"^public_topics needs a way to check credentials"):
        Server(public_topics="news")


def test_reserved_topics_stay_closed_to_clients_and_a_stale_kick_is_dropped() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        rights = token("42", subscribe=["*"], publish=["*"])
        ws = await ws_connect(server, "topic=news", **bearer(rights))
        for topic in ("$control", "$presence:news"):
            await ws.send(json.dumps({"type": "subscribe", "topics": [topic], "ref": 1}))
            assert (await receive(ws))["type"] == "error"
            await ws.send(json.dumps({"type": "publish", "topic": topic, "data": "x", "ref": 2}))
            assert (await receive(ws))["code"] == "invalid"
        assert (await refusal(port, "topic=$control", **bearer(rights)))[0] == 400
        # A kick read long after it was put (a node catching up) closes nothing.
        stale = PublishItem(("$control",), json.dumps({"disconnect": "42", "at": time.time() - 60}))
        server.broker.publish([stale], lambda outcome: None)
        await ws.send(json.dumps({"type": "ping", "ref": 3}))
        assert await receive(ws) == {"type": "pong", "ref": 3}  # still open, after the word passed
        await ws.close()

    run_with_server(DEFAULT, scenario, **TOKENS)


def test_listed_origins_may_send_cookies_when_a_cookie_carries_the_token() -> None:
    async def scenario(server: Server) -> None:
        headers = {"Origin": "http://page.example", "Cookie": f"session={token('1', subscribe=['secret'])}"}
        client = await stream(server.port, "topic=secret", **headers)
        assert client.status == 200
        assert client.headers["access-control-allow-origin"] == "http://page.example"
        assert client.headers["access-control-allow-credentials"] == "true"
        client.close()

    run_with_server(DEFAULT, scenario, **TOKENS, cors_origin="http://page.example")
