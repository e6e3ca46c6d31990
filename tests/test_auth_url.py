"""`--auth-url`: an application written here, on a loopback port, decides who may
subscribe from its own session cookies. It answers, refuses, is slow, fails and is down;
rawsse caches its answers briefly, shares one call among a credential's waiting streams,
never queues more calls than its bound, and answers 503 (or public topics only) when the
application cannot answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import connect

from rawsse.auth.app import AnswerCache, AppUnavailable, app_call, grant_from_answer
from rawsse.auth.tokens import AuthError, Forbidden, Grant
from rawsse.core.slots import Framing
from rawsse.reactor.app_client import AppClient
from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, StreamClient, free_port, get, post, publish, run_with_server, wait_for

KIND = "integration"

DEFAULT = ("uvloop", "epoll")
SESSIONS = {"alice-session": "alice", "bob-session": "bob"}


class Application:
    """A tiny HTTP/1.1 application: POST /auth with a `sid` cookie; keeps its connections
    alive and counts the calls. `behaviour` can make it slow or failing."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.connections = 0
        self.behaviour = "answer"
        self.delay = 0.0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Down: the port refuses, and the kept-alive connections are cut."""
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                body = json.loads(await reader.readexactly(int(headers["Content-Length"])))
                self.calls.append({"body": body, "cookie": headers.get("Cookie", "")})
                if self.delay:
                    await asyncio.sleep(self.delay)  # the slow application under test
                status, answer = self._answer(headers.get("Cookie", ""), body["topics"])
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test ended
        finally:
            writer.close()

    def _answer(self, cookie: str, topics: list[str]) -> tuple[int, bytes]:
        """A user may read the team topics and the topics named after them; the answer
        lists exactly those of the topics asked about."""
        if self.behaviour == "fail":
            return 500, b"oops"
        sid = cookie.partition("sid=")[2].split(";")[0]
        user = SESSIONS.get(sid)
        if user is None:
            return 401, b""
        allowed = [topic for topic in topics if topic.startswith(("team:", f"{user}:", "swap:", "brief:"))]
        lasting = 2 if any(topic.startswith("brief:") for topic in topics) else 600
        if any(topic.startswith("brief:past") for topic in topics):
            lasting = -10
        sub = "mallory" if any(topic.startswith("swap:") for topic in topics) else user
        grant = {"sub": sub, "subscribe": allowed, "until": time.time() + lasting}
        return 200, json.dumps(grant).encode()


async def status_of(port: int, query: str, cookie: str | None) -> int:
    client = await StreamClient.open(port, query, {"Cookie": cookie} if cookie else {})
    client.close()
    return client.status


def with_application(scenario: Callable[[Server, Application], Awaitable[None]], **options: Any) -> Server:
    application = Application()
    port = free_port()

    async def run(server: Server) -> None:
        await application.start(port)
        try:
            await scenario(server, application)
        finally:
            application.close()

    defaults = {"auth_url": f"http://127.0.0.1:{port}/auth", "public_topics": "news", "auth_timeout": 0.5}
    return run_with_server(DEFAULT, run, **{**defaults, **options})


def test_the_application_decides_from_its_session_cookie() -> None:
    async def scenario(server: Server, app: Application) -> None:
        port = server.port
        alice = await StreamClient.open(
            port, "topic=notes@alice&topic=team:red", {"Cookie": "sid=alice-session"}
        )
        assert alice.status == 200
        assert app.calls[0] == {
            "body": {"topics": ["notes@alice", "team:red"], "transport": "sse"},
            "cookie": "sid=alice-session",
        }
        event_id = await publish(port, "notes@alice", "for alice")
        assert (await alice.next_event()).id == event_id
        alice.close()
        assert await status_of(port, "topic=notes@alice", "sid=bob-session") == 403
        assert await status_of(port, "topic=team:red", "sid=stolen") == 401
        assert await status_of(port, "topic=news", None) == 200  # public: the application is not asked
        assert await status_of(port, "topic=team:red", None) == 401
        assert await status_of(port, "topic=team:blue", "sid=alice-session") == 200
        calls = len(app.calls)
        for _ in range(5):  # reconnects within the cache's time reuse the answer
            assert await status_of(port, "topic=team:blue", "sid=alice-session") == 200
        assert len(app.calls) == calls
        assert app.connections == 1  # one kept-alive connection served every call

    with_application(scenario)


def test_a_websockets_later_subscribes_are_asked_about_too() -> None:
    async def scenario(server: Server, app: Application) -> None:
        url = f"ws://127.0.0.1:{server.port}/ws?topic=team:red"
        async with connect(url, additional_headers={"Cookie": "sid=alice-session"}) as ws:
            assert app.calls[-1]["body"] == {"topics": ["team:red"], "transport": "ws"}
            await ws.send(json.dumps({"type": "subscribe", "topics": ["alice:inbox"], "ref": 1}))
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {
                "type": "subscribed",
                "topics": ["team:red", "alice:inbox"],
                "ref": 1,
            }
            assert app.calls[-1]["body"] == {"topics": ["alice:inbox"], "transport": "ws"}
            await ws.send(json.dumps({"type": "subscribe", "topics": ["bob:inbox"], "ref": 2}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert (refused["type"], refused["code"], refused["ref"]) == ("error", "forbidden", 2)
            # An answer for another user is no answer for this connection.
            await ws.send(json.dumps({"type": "subscribe", "topics": ["swap:x"], "ref": 3}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert refused["message"] == "the application named another user for this connection"
            event_id = await publish(server.port, "alice:inbox", "for alice")
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["id"] == event_id

    with_application(scenario)


def test_a_stream_ends_when_the_applications_until_passes() -> None:
    async def scenario(server: Server, app: Application) -> None:
        client = await StreamClient.open(server.port, "topic=brief:a", {"Cookie": "sid=alice-session"})
        assert client.status == 200
        events = await client.until_closed()
        assert [(e.event, json.loads(e.data)) for e in events] == [
            ("rawsse-reset", {"reason": "token-expired"})
        ]
        # A grant already over opens nothing (else every reconnect would ask again, in a loop).
        assert await status_of(server.port, "topic=brief:past", "sid=alice-session") == 401

    with_application(scenario)


def test_the_pools_bound_holds_for_calls_made_in_one_tick() -> None:
    async def scenario() -> None:
        client = AppClient(f"http://127.0.0.1:{free_port()}/auth", connections=1, timeout=1.0, max_waiting=2)
        outcomes: list[object] = []
        for n in range(20):  # one accept batch: no call has run yet when the next is made
            client.ask(app_call(f"sid={n}", "", ("t",), Framing.SSE.transport), outcomes.append)
        assert outcomes == ["too many calls waiting for the application"] * 17
        assert client.in_flight == 3
        await wait_for(lambda: len(outcomes) == 20, "the three calls to fail: nothing listens")
        assert client.in_flight == 0
        await client.close()

    asyncio.run(scenario())


def test_one_call_for_a_credentials_waiting_streams_and_a_bound_on_the_rest() -> None:
    async def scenario(server: Server, app: Application) -> None:
        app.delay = 0.2
        same = await asyncio.gather(
            *(status_of(server.port, "topic=team:a", "sid=alice-session") for _ in range(10))
        )
        assert same == [200] * 10 and len(app.calls) == 1
        # 1 connection and 4 waiting calls: of 12 distinct credentials, the rest get 503 at once.
        cookies = [f"sid=unknown-{n}" for n in range(12)]
        started = time.monotonic()
        statuses = await asyncio.gather(*(status_of(server.port, "topic=team:a", c) for c in cookies))
        assert statuses.count(503) >= 12 - 5 and set(statuses) <= {401, 503}
        assert len(app.calls) <= 1 + 5
        assert time.monotonic() - started < TIMEOUT

    with_application(scenario, auth_connections=1, auth_cache=0)


def test_a_slow_failing_or_absent_application_means_503_and_never_a_hang() -> None:
    async def scenario(server: Server, app: Application) -> None:
        port = server.port
        app.delay = 2.0  # beyond --auth-timeout
        client = await StreamClient.open(port, "topic=team:a", {"Cookie": "sid=alice-session"})
        assert (client.status, client.headers.get("retry-after")) == (503, "2")
        body = await asyncio.wait_for(client.reader.read(), TIMEOUT)
        assert body == b"authorization unavailable: no answer within 0.5 s\n"
        # An EventSource would stop for good on a 503: it is told to come back instead.
        headers = {"Cookie": "sid=bob-session", "Accept": "text/event-stream"}
        browser = await StreamClient.open(port, "topic=team:a", headers)
        retry = await browser.next_event()
        assert (browser.status, retry.event) == (200, "rawsse-retry")
        assert json.loads(retry.data)["reason"] == "authorization-unavailable"
        browser.close()
        app.delay = 0
        app.behaviour = "fail"
        assert await status_of(port, "topic=team:a", "sid=bob-session") == 503
        app.close()
        app.behaviour = "answer"
        assert await status_of(port, "topic=team:a", "sid=other") == 503  # down: nothing listens

    with_application(scenario, auth_cache=0)


def test_with_the_public_fallback_a_down_application_still_serves_public_topics() -> None:
    async def scenario(server: Server, app: Application) -> None:
        app.close()
        assert await status_of(server.port, "topic=news", "sid=alice-session") == 200
        assert (
            await status_of(server.port, "topic=team:a", "sid=alice-session") == 503
        )  # not a 401: come back
        assert await status_of(server.port, "topic=news&topic=team:a", "sid=alice-session") == 503

    with_application(scenario, auth_fallback="public")


def test_answers_and_their_cache_without_sockets() -> None:
    grant = grant_from_answer(200, b'{"sub": "7", "subscribe": ["a:*"], "until": 100}', 255)
    assert isinstance(grant, Grant) and grant.sub == "7" and grant.expires == 100
    assert isinstance(grant_from_answer(401, b"", 255), AuthError)
    assert isinstance(grant_from_answer(403, b"", 255), Forbidden)
    for status, body in [
        (500, b""),
        (200, b"not json"),
        (200, b"[]"),
        (200, b'{"until": "soon"}'),
        (200, b'{"subscribe": "a"}'),
    ]:
        assert isinstance(grant_from_answer(status, body, 255), AppUnavailable), body
    cache = AnswerCache(ttl=10)
    cache.put("k", grant, now=50)
    assert cache.get("k", 55) is grant
    assert cache.get("k", 100) is None  # the grant's own end comes before the cache's
    cache.put("u", AppUnavailable("down"), now=50)
    assert cache.get("u", 51) is None  # unavailability is never cached


def test_the_application_names_who_acknowledges_and_whose_unread_events_are_counted(tmp_path: Path) -> None:
    async def scenario(server: Server, app: Application) -> None:
        port = server.port
        sent = [await publish(port, "notes@alice", f"note {n}") for n in range(2)]
        alice, bob = {"Cookie": "sid=alice-session"}, {"Cookie": "sid=bob-session"}
        query = urlencode({"topic": "notes@alice", "id": sent[0]})
        answer = await post(port, f"/ack?{query}", b"", headers=alice)
        assert answer.status == 200 and answer.json() == {"topic": "notes@alice", "acked": sent[0]}
        assert app.calls[-1]["body"] == {"topics": ["notes@alice"], "transport": "sse"}
        calls = len(app.calls)
        counted = await get(port, "/unacked?topic=notes@alice", alice)  # the answer cached: no call
        assert counted.status == 200 and counted.json()["count"] == 1 and len(app.calls) == calls
        assert (await post(port, f"/ack?{query}", b"", headers=bob)).status == 403  # not bob's
        assert (await get(port, "/unacked?topic=notes@alice", {"Cookie": "sid=stolen"})).status == 401

    with_application(scenario, data_dir=str(tmp_path))
