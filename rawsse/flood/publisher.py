"""The flooder's publisher: numbered events sent over keep-alive HTTP/1.1 connections to
any server's publish endpoint through URL and body templates, one request in flight per
connection as ordinary HTTP clients send them (`requests`, `httpx`, Go's `net/http`), or
pipelined when asked.

Templates may use `{topic}` and `{data}`; our payloads need no escaping in either.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlsplit

import httptools

from rawsse.flood.tally import make_payload


@dataclass(frozen=True)
class PublishTemplate:
    url: str
    body: str
    content_type: str

    @cached_property
    def _head(self) -> str:
        """The request head as a template of its own: the URL is split once, not per event."""
        parts = urlsplit(self.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return (
            f"POST {target} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {{length}}\r\n\r\n"
        )

    def request(self, topic: str, data: str) -> bytes:
        body = self.body.format(topic=topic, data=data).encode()
        return self._head.format(topic=topic, data=data, length=len(body)).encode() + body

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80


@dataclass
class PublishResult:
    sent: int = 0
    errors: int = 0
    unsent: int = 0
    """Events not sent because the publishing time limit ran out."""
    sent_per_key: dict[str, int] = field(default_factory=dict)
    refused_per_key: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    """Wall-clock time of the first request."""
    seconds: float = 0.0


class _Responses:
    """httptools callbacks counting complete responses, and the refused (non-2xx) ones per
    payload key: responses come in request order, so each matches the oldest sent key."""

    def __init__(self, refused_per_key: dict[str, int]) -> None:
        self.done = 0
        self.errors = 0
        self.awaiting: deque[str] = deque()
        self.refused_per_key = refused_per_key
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.done += 1
        key = self.awaiting.popleft() if self.awaiting else ""
        if not 200 <= self.parser.get_status_code() < 300:
            self.errors += 1
            self.refused_per_key[key] = self.refused_per_key.get(key, 0) + 1


async def publish_all(
    template: PublishTemplate,
    events: Iterable[tuple[str, str, int]],
    size: int,
    connections: int = 1,
    rate: float = 0.0,
    time_limit: float = 0.0,
    pipeline: int = 1,
) -> PublishResult:
    """Send each (topic, key, sequence) event with a payload of `size` bytes stamped when
    it is sent; with `rate`, at that many events per second in all, each stamped with the
    time it was due rather than sent: a server slow to answer holds back the next request
    on its connection, and that wait is its latency too, not a pause of the clock (the
    "coordinated omission" of fixed-rate load tests). With `time_limit`,
    what is not sent by then is counted as unsent; with `pipeline`, up to that many
    requests in flight per connection (1: the next is sent once the last is answered).
    Events for one topic always use the same connection, so their order is kept."""
    queues: list[list[tuple[int, str, str, int]]] = [[] for _ in range(connections)]
    topic_lane: dict[str, int] = {}
    for index, (topic, key, sequence) in enumerate(events):
        lane = topic_lane.setdefault(topic, len(topic_lane) % connections)
        queues[lane].append((index, topic, key, sequence))
    result = PublishResult(started=time.time())
    began = time.monotonic()
    began_ns = time.time_ns()  # the same moment on the payloads' clock
    stop_at = began + time_limit if time_limit else float("inf")
    await asyncio.gather(
        *(
            _publish_lane(template, lane, size, rate, (began, began_ns), stop_at, pipeline, result)
            for lane in queues
            if lane
        )
    )
    result.seconds = time.monotonic() - began
    return result


async def _publish_lane(
    template: PublishTemplate,
    lane: list[tuple[int, str, str, int]],
    size: int,
    rate: float,
    start: tuple[float, int],
    stop_at: float,
    pipeline: int,
    result: PublishResult,
) -> None:
    began, began_ns = start
    host, port = template.address
    responses = _Responses(result.refused_per_key)
    in_flight = sent = 0
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.errors += len(lane)
        return
    try:
        for index, topic, key, sequence in lane:
            if time.monotonic() > stop_at:
                result.unsent += len(lane) - sent
                break
            if rate:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    await writer.drain()
                    await asyncio.sleep(delay)
                stamp = began_ns + round(index / rate * 1e9)  # when it was due
            else:
                stamp = time.time_ns()
            data = make_payload(key, sequence, stamp, size)
            writer.write(template.request(topic, data))
            responses.awaiting.append(key)
            result.sent += 1
            result.sent_per_key[key] = sequence + 1
            sent += 1
            in_flight += 1
            while in_flight >= pipeline:
                in_flight -= await _read_responses(reader, responses)
        await writer.drain()
        while in_flight > 0:
            in_flight -= await _read_responses(reader, responses)
    except (OSError, httptools.HttpParserError):
        # The server closed or broke the connection: what was not answered counts as
        # refused, and so does what this lane never got to send.
        result.errors += in_flight + len(lane) - sent
        for key in responses.awaiting:  # sent, never answered: not known to be published
            result.refused_per_key[key] = result.refused_per_key.get(key, 0) + 1
    finally:
        result.errors += responses.errors
        writer.close()


async def _read_responses(reader: asyncio.StreamReader, responses: _Responses) -> int:
    before = responses.done
    chunk = await reader.read(65536)
    if not chunk:
        raise ConnectionError("the publish connection was closed by the server")
    responses.parser.feed_data(chunk)
    return responses.done - before
