"""One HTTP connection on the asyncio loop: bytes to the request reader, requests to the
API, responses back. A request for a stream hands the connection to the stream backend,
after which this object is done with it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from rawsse.core.api import OVERLOADED, CloseStreams, OpenStream, PendingResponse
from rawsse.core.http import Request, RequestReader, error_response
from rawsse.errors import HttpError, RawsseError

if TYPE_CHECKING:
    from rawsse.reactor.server import Server

log = logging.getLogger("rawsse")

LINGER_TIME = 5.0
"""After an error response the connection is half-closed and read (and dropped) for this
long, so unread input cannot make the kernel reset the connection before the client has
read the response (nginx's lingering_timeout)."""

WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024
"""Responses a client leaves unread before we stop reading its requests (and resume once
it has read down to the low mark). Set explicitly: the loops' defaults differ."""

FEED_SLICE = 16 * 1024
"""Input is parsed this much at a time, and not at all while responses wait unread, so a
paused connection holds at most a slice's worth of parsed requests."""

PENDING_LIMIT = 10.0
"""A request waiting on the broker (a Redis round trip, a resume waiting for its id) gets
503 after this long, whatever the broker does."""

SHED_TIMEOUT = 1.0
"""Time a connection over the limit has to send its whole request head; it is then
answered (see Api.shed) or dropped."""

IDLE, HEAD, BODY, CLOSING, HANDED_OFF = range(5)
"""Connection phases. HEAD and BODY run the request timeouts, IDLE the keep-alive one;
CLOSING is the lingering close; HANDED_OFF means a stream backend owns the connection."""


class HttpProtocol(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self._server = server
        self._reader = RequestReader(server.http_limits)
        self._transport: asyncio.Transport | None = None
        self._phase = IDLE
        self._stream_slot = -1
        self._unanswered: deque[Request] = deque()
        self._unparsed = memoryview(b"")
        self._writing_paused = False
        self._waiting: asyncio.Task[None] | None = None
        self._input_ended = False
        self._unsent_at_deadline = 0
        self._shedding = False
        self.deadline = 0.0

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        deadline = server.config.header_timeout
        if server.connection_count >= server.connection_limit:
            if server.shedding >= server.shed_capacity:
                # No answer at all: a dropped connection is a network error, after which
                # EventSource reconnects by itself (a 503 would end it for good), and the
                # descriptor goes back at once, so the refusals cannot exhaust them.
                server.metrics.connections_dropped += 1
                self._phase = CLOSING
                self._transport.abort()
                return
            self._shedding = True  # its request is read and answered "come back later"
            server.shedding += 1
            deadline = SHED_TIMEOUT
        self._transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        server.http_connections.add(self)
        self.deadline = server.loop.time() + deadline

    def data_received(self, data: bytes) -> None:
        if self._phase >= CLOSING:
            return  # lingering or streaming: input is read and dropped
        self._unparsed = memoryview(bytes(self._unparsed) + data if self._unparsed else data)
        self._parse_and_answer()

    def eof_received(self) -> bool | None:
        if self._waiting is not None or self._unanswered:
            self._input_ended = True
            return True  # keep our side open to answer what was asked; closed after that
        return None  # close our side too: the requests received have all been answered

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shedding:
            self._shedding = False
            self._server.shedding -= 1
        self._reader.close()
        if self._waiting is not None:
            self._waiting.cancel()
        self._server.http_connections.discard(self)
        if self._stream_slot >= 0 and self._transport is not None:
            self._server.streams.connection_lost(self._stream_slot, self._transport)
        self._transport = None

    # Flow control: a client that pipelines requests without reading the responses is
    # not read from until it catches up, so unsent responses stay bounded.

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None and self._phase < CLOSING:
            self._transport.pause_reading()
            self.deadline = self._server.loop.time() + self._server.config.send_timeout

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and self._phase < CLOSING and self._waiting is None:
            self._transport.resume_reading()
            self._parse_and_answer()

    # Answering

    def _parse_and_answer(self) -> None:
        """Parse input a slice at a time, answering as requests complete, until the input
        is used up or the client stops reading our responses."""
        while True:
            self._answer()
            if not self._unparsed or self._writing_paused or self._waiting or self._phase >= CLOSING:
                return
            chunk, self._unparsed = self._unparsed[:FEED_SLICE], self._unparsed[FEED_SLICE:]
            try:
                self._unanswered.extend(self._reader.feed(chunk))  # type: ignore[arg-type]
            except HttpError as error:
                self._fail(error)
                return
            if self._shedding and self._reader.in_body and not self._unanswered:
                # A request with a body is no stream request: no need to read the body to
                # turn it away.
                self._end_shedding(self._server.api.busy())
                return
            if self._reader.interim:
                assert self._transport is not None
                self._transport.write(self._reader.interim)
                self._reader.interim = b""

    def _answer(self) -> None:
        transport = self._transport
        if transport is None:
            return
        answered = False
        while (
            self._unanswered and not self._writing_paused and not self._waiting and not transport.is_closing()
        ):
            request = self._unanswered.popleft()
            answered = True
            if self._shedding:
                self._shed(request)
                return
            try:
                result = self._server.api.handle(request, self._from_loopback())
            except RawsseError as error:
                self._fail(error)
                return
            if isinstance(result, OpenStream):
                self._open_stream(result)
                return  # anything pipelined after a stream request is dropped
            if isinstance(result, PendingResponse):
                # Later requests wait, so responses keep the order of the requests, and
                # nothing more is read meanwhile, so waiting input stays bounded.
                transport.pause_reading()
                self._waiting = self._server.loop.create_task(self._answer_later(request, result))
                return
            if isinstance(result, CloseStreams):
                result = result.answer(self._server.streams.close_topics(result.topics))
            if not request.keep_alive:
                self._close_gracefully(result)
                return
            transport.write(result)
        if not self._writing_paused:
            self._update_deadline(answered)

    async def _answer_later(self, request: Request, pending: PendingResponse) -> None:
        try:
            value = await asyncio.wait_for(pending.waiting, PENDING_LIMIT)
            result = pending.finish(value)
        except TimeoutError:
            self._waiting = None
            self._fail(HttpError(503, "the broker did not answer in time", [("Retry-After", "1")]))
            return
        except RawsseError as error:
            self._waiting = None
            self._fail(error)
            return
        except Exception:
            log.exception("request failed")
            self._waiting = None
            self._fail(HttpError(500, "internal error"))
            return
        self._waiting = None
        transport = self._transport
        if transport is None:
            return
        if isinstance(result, OpenStream):
            self._open_stream(result)
        elif not request.keep_alive:
            self._close_gracefully(result)
        else:
            transport.write(result)
            if not self._writing_paused:
                transport.resume_reading()
                self._update_deadline(True)
            self._parse_and_answer()
            if self._input_ended and not self._waiting and not self._unanswered:
                self._close_gracefully(b"")  # the client sent its last request long ago

    def close_now(self) -> None:
        """Close at once (server shutdown)."""
        self._server.http_connections.discard(self)
        if self._transport is not None:
            self._transport.abort()

    # Timeouts (called by the server's once-a-second sweep)

    def on_timeout(self) -> None:
        if self._shedding:  # over the limit and slow: dropped, which EventSource retries
            self.close_now()
            return
        if self._waiting is not None:  # the broker answers or fails within its own timeout
            self.deadline = self._server.loop.time() + LINGER_TIME
            return
        if self._phase in (HEAD, BODY) and not self._writing_paused:
            self._fail(HttpError(408, "request not received in time"))
            return
        if self._phase == CLOSING and self._transport is not None:
            unsent = self._transport.get_write_buffer_size()
            if 0 < unsent < self._unsent_at_deadline:  # a last response still draining
                self._unsent_at_deadline = unsent
                self.deadline = self._server.loop.time() + LINGER_TIME
                return
        self.close_now()  # idle, lingering without progress, or not reading our responses

    def _update_deadline(self, answered: bool) -> None:
        """Start the timeout of the phase the connection is in, when that phase is new
        (every answered request starts a new one)."""
        reader = self._reader
        phase = HEAD if reader.in_head else BODY if reader.in_body else IDLE
        if self._shedding:
            return  # its one short deadline runs from the connection's start
        if phase != self._phase or answered:
            self._phase = phase
            config = self._server.config
            timeout = (
                config.header_timeout
                if phase == HEAD
                else config.body_timeout
                if phase == BODY
                else config.keepalive_timeout
            )
            self.deadline = self._server.loop.time() + timeout

    # Streams and closing

    def _open_stream(self, stream: OpenStream) -> None:
        server = self._server
        transport = self._transport
        assert transport is not None
        if not stream.live:
            self._close_gracefully(stream.preamble)  # one page of a long replay
            return
        if transport.get_write_buffer_size():
            # Responses to pipelined requests are still queued in the transport; the
            # fd hand-over would drop them. Real clients do not pipeline before a stream.
            self._fail(HttpError(503, "stream requested behind unsent responses"))
            return
        self._phase = HANDED_OFF
        server.http_connections.discard(self)
        try:
            slot = server.streams.open(transport, stream.preamble, stream.topics)
        except OSError as exc:
            self._phase = IDLE
            server.http_connections.add(self)
            log.warning("cannot open stream: %s", exc)
            self._close_gracefully(server.api.come_back_later(stream.head, OVERLOADED))
            return
        if isinstance(slot, int):  # the transport backend keeps this protocol
            self._stream_slot = slot

    def _shed(self, request: Request) -> None:
        """Over the connection limit: answer "come back later" and close at once."""
        try:
            answer = self._server.api.shed(request)
        except HttpError as error:  # a page of an origin that is not allowed
            self._server.metrics.rejected[error.status or 500] += 1
            answer = error_response(error)
        self._end_shedding(answer)

    def _end_shedding(self, answer: bytes) -> None:
        assert self._transport is not None
        self._phase = CLOSING
        self._transport.write(answer)
        self._transport.close()

    def _fail(self, error: RawsseError) -> None:
        self._server.metrics.rejected[error.status or 500] += 1
        self._close_gracefully(error_response(error))

    def _close_gracefully(self, last_response: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._phase = CLOSING
        self.deadline = self._server.loop.time() + LINGER_TIME
        transport.write(last_response)
        # A large last response (a replay page) may take longer than the linger time:
        # it keeps the connection as long as it makes progress (see on_timeout).
        self._unsent_at_deadline = transport.get_write_buffer_size() + 1
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def _from_loopback(self) -> bool:
        assert self._transport is not None
        peer = self._transport.get_extra_info("peername")
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback
