"""The client of `--auth-url`: a bounded pool of keep-alive HTTP/1.1 connections to the
application, with a timeout on every call and a bounded number of calls waiting for a
connection. Past that bound a call fails at once (the stream gets 503): a reconnect wave
must never become an unbounded queue of requests against the application. Calls for the
same credential while one is in flight wait for that one instead of asking again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

from rawsse.auth.app import MAX_ANSWER_BYTES, AppCall

AUTH_WAITING_PER_CONNECTION = 4
"""Calls that may wait for a busy connection, per connection; past them a new stream gets
503 at once."""

log = logging.getLogger("rawsse")

Answered = Callable[[tuple[int, bytes] | str], None]
"""What a call comes to: the status and body, or why there was none."""


class _Response:
    """httptools callbacks: one response, its body bounded."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False
        self.keep_alive = False
        self.too_large = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_ANSWER_BYTES:
            self.too_large = True
        else:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AppClient:
    def __init__(self, url: str, connections: int, timeout: float, max_waiting: int) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        self._head = (
            f"POST {self._path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
        )
        self._connections = connections
        self._timeout = timeout
        self._max_waiting = max_waiting
        self._idle: list[Connection] = []
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._in_flight: dict[str, list[Answered]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def ask(self, call: AppCall, answered: Answered) -> None:
        """Put `call` to the application; `answered` is called once, from the loop."""
        sharing = self._in_flight.get(call.key)
        if sharing is not None:
            sharing.append(answered)
            return
        if len(self._in_flight) >= self._connections + self._max_waiting:
            # Counted by the calls begun, not by those already waiting: a whole accept
            # batch arrives in one tick, before any of its calls has run.
            answered("too many calls waiting for the application")
            return
        self._in_flight[call.key] = [answered]
        task = asyncio.get_running_loop().create_task(self._call(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, call: AppCall) -> None:
        outcome: tuple[int, bytes] | str = "the call was given up"
        try:
            outcome = await asyncio.wait_for(self._exchange(call), self._timeout)
        except TimeoutError:
            outcome = f"no answer within {self._timeout:g} s"
        except (OSError, asyncio.IncompleteReadError, httptools.HttpParserError) as exc:
            outcome = f"cannot reach the application ({type(exc).__name__})"
        except Exception:
            log.exception("calling the application failed")
            outcome = "calling the application failed"
        finally:
            waiting = self._in_flight.pop(call.key, [])  # whatever happened: none left behind
        for answered in waiting:
            try:
                answered(outcome)
            except Exception:
                log.exception("handling the application's answer failed")

    async def _exchange(self, call: AppCall) -> tuple[int, bytes]:
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            keep = False
            try:
                status, body, keep = await self._send(connection, call)
                return status, body
            except (OSError, asyncio.IncompleteReadError):
                if not reused or attempt == 2:
                    raise
                # The application closed a kept-alive connection meanwhile: once more, fresh.
            finally:
                if not keep:
                    connection[1].close()
                self._release(connection if keep else None)
        raise AssertionError("unreachable")

    async def _send(self, connection: Connection, call: AppCall) -> tuple[int, bytes, bool]:
        reader, writer = connection
        extra = "".join(f"{name}: {value}\r\n" for name, value in call.headers if _one_line(value))
        writer.write(
            f"{self._head}Content-Length: {len(call.body)}\r\n{extra}\r\n".encode("latin-1") + call.body
        )
        response = _Response()
        while not response.complete:
            chunk = await reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            response.parser.feed_data(chunk)
        if response.too_large:
            return 502, b"", False
        return response.parser.get_status_code(), bytes(response.body), response.keep_alive

    async def _acquire(self) -> tuple[Connection, bool]:
        """A connection (and whether it was kept alive from an earlier call), once fewer
        than the pool's size are busy."""
        while self._busy >= self._connections:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then timed out: pass the turn on
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self._busy += 1
        while self._idle:
            connection = self._idle.pop()
            if not connection[0].at_eof():
                return connection, True
            connection[1].close()
        try:
            return await asyncio.open_connection(self._host, self._port, ssl=self._ssl), False
        except BaseException:
            self._release(None)
            raise

    def _release(self, connection: Connection | None) -> None:
        self._busy -= 1
        if connection is not None:
            self._idle.append(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _one_line(value: str) -> bool:
    return "\r" not in value and "\n" not in value
