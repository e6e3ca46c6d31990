"""One HTTP connection on the asyncio loop: a thin driver of the connection's state
machine (rawsse.core.connection). It moves bytes between the transport and the core,
passes requests to the API and their effects to the effect runner, and does what the
core's phase says: half-close, close, abort, or hand the connection to the stream
reactor. Deadlines are checked by the server's once-a-second sweep, not by a timer per
connection.

A connection the raw accept path (rawsse.reactor.acceptor) admitted arrives here with a
Handover: its admission, and what was read of it — a core that holds the reader and its
requests, and the first request's effect where it was decided there — so nothing is read,
admitted or decided twice."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from rawsse.core.api import OVERLOADED
from rawsse.core.connection import ANSWERING, HttpConnection, Phase
from rawsse.core.effects import Answer, Effect, OpenStream, Respond
from rawsse.core.http import Request, error_response
from rawsse.errors import HttpError, RawsseError
from rawsse.reactor.context import Admission, ConnectionContext
from rawsse.reactor.effects import Cancel, internal_error

log = logging.getLogger("rawsse")

WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024
"""Answers a client leaves unread before we stop reading its requests (and resume once it
has read down to the low mark). Set explicitly: the loops' defaults differ."""

BEHIND_UNSENT = HttpError(503, "stream requested behind unsent responses")
"""Answers to requests pipelined before a stream request are still in the transport's
buffer: the fd hand-over would drop them. Real clients do not pipeline before a stream."""


@dataclass(slots=True)
class Handover:
    """What the raw accept path did before handing a connection to the loop. It counts in
    `ConnectionContext.handing_over` until the connection is made (or cannot be)."""

    core: HttpConnection | None
    """Fed with every byte read so far; None when nothing was read."""
    loopback: bool | None = None
    shedding: bool = False
    """Admitted over the limit (counted in `ConnectionContext.shedding` already)."""
    request: Request | None = None
    """The request handed out of the core, if any, and its effect, to carry out here."""
    effect: Effect | None = None
    pending: bool = True
    """Still counted in `handing_over`."""

    def arrived(self, context: ConnectionContext) -> None:
        """The connection is made, or will never be: it no longer counts as in flight."""
        if self.pending:
            self.pending = False
            context.handing_over -= 1


class HttpProtocol(asyncio.Protocol):
    def __init__(self, context: ConnectionContext, handover: Handover | None = None) -> None:
        # per connection
        self._context = context
        self._handover = handover
        self._transport: asyncio.Transport | None = None
        self._core: HttpConnection | None = None
        self._loopback: bool | None = None  # asked for only when a request needs it
        self._shedding = False
        self._reading = True
        self._acted = Phase.IDLE  # the last phase whose action was taken
        self._syncing = False
        # per request
        self._cancels: dict[int, Cancel] | None = None  # effects that wait, by request

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        context = self._context
        handover, self._handover = self._handover, None
        if handover is None:
            admission = context.admit()
            if admission is Admission.DROP:
                self._transport.abort()
                return
            if admission is Admission.SHED:
                self._shedding = True  # its request is read and answered "come back later"
                context.shedding += 1
        else:  # admitted on the raw path already
            handover.arrived(context)
            self._shedding = handover.shedding
            self._loopback = handover.loopback
        if handover is None or handover.core is None:
            core = HttpConnection(context.limits, context.timeouts, context.clock(), self._shedding)
        else:
            core = handover.core
        self._transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self._core = core
        context.connections.add(self)
        if handover is not None:
            if handover.request is not None and handover.effect is not None:
                self._handle(handover.request, handover.effect)
            self._sync()

    def data_received(self, data: bytes) -> None:
        if self._core is not None:
            self._core.receive_data(data, self._context.clock())
            self._sync()

    def eof_received(self) -> bool | None:
        if self._core is None:
            return None
        self._core.receive_eof(self._context.clock())
        self._sync()
        return True  # our side stays open until the core's phase says otherwise

    def connection_lost(self, exc: Exception | None) -> None:
        context = self._context
        if self._shedding:
            self._shedding = False
            context.shedding -= 1
        self._give_up_waiting()
        context.connections.discard(self)
        if self._core is not None:
            self._core.release()
            self._core = None
        self._transport = None

    # Flow control: a client that pipelines requests without reading the answers is not
    # read from until it catches up, so unsent answers stay bounded.

    def pause_writing(self) -> None:
        if self._core is not None:
            self._core.pause_output(self._context.clock())
            self._sync()

    def resume_writing(self) -> None:
        if self._core is not None:
            self._core.resume_output(self._context.clock())
            self._sync()

    # The server's sweep

    @property
    def deadline(self) -> float:
        return self._core.deadline if self._core is not None else float("inf")

    def on_timeout(self, now: float) -> None:
        if self._core is not None and self._transport is not None:
            self._core.timeout(now, self._transport.get_write_buffer_size())
            self._sync()

    def close_now(self) -> None:
        """Close at once (server shutdown)."""
        self._context.connections.discard(self)
        if self._transport is not None:
            self._transport.abort()

    # Answering

    def _sync(self) -> None:
        """Hand out the requests the core has parsed, then do what it says. Answers that
        come while this runs are picked up by the same run."""
        if self._syncing:
            return
        self._syncing = True
        try:
            while self._core is not None and (request := self._core.next_request()) is not None:
                self._handle(request)
                if self._core is not None and self._core.output_size >= WRITE_HIGH_WATER:
                    self._write()  # a full buffer pauses the rest (pause_writing)
            self._act()  # the answers of one read go out in one write
        finally:
            self._syncing = False

    def _handle(self, request: Request, effect: Effect | None = None) -> None:
        """Decide `request` (unless its `effect` was decided on the raw path) and carry
        the effect out."""
        context = self._context
        core = self._core
        assert core is not None
        try:  # a try costs nothing here, a closure per request would: no `decided`
            if effect is None:
                if self._shedding:
                    core.respond(request, context.api.shed(request), True, context.clock())
                    return
                effect = context.api.handle(request, self._from_loopback, self._peer)

            def reply(outcome: Answer | RawsseError) -> None:
                self._answered(request, outcome)

            cancel = context.runner.run(effect, reply)
        except RawsseError as error:
            core.fail(request, error, context.clock())
            return
        except Exception:
            core.fail(request, internal_error(), context.clock())
            return
        if cancel is not None and self._core is not None:
            if self._cancels is None:
                self._cancels = {}
            self._cancels[id(request)] = cancel

    def _answered(self, request: Request, outcome: Answer | RawsseError) -> None:
        """An effect's end, now or later (a broker's callback): whatever happens here
        stays with this connection."""
        if self._cancels:
            self._cancels.pop(id(request), None)
        core = self._core
        if core is None:
            return  # the connection went away meanwhile
        try:
            now = self._context.clock()
            if isinstance(outcome, Respond):
                core.respond(request, outcome.data, outcome.close, now)
            elif isinstance(outcome, OpenStream):
                core.open_stream(request, outcome, now)
            else:
                core.fail(request, outcome, now)
            self._sync()
        except Exception:
            log.exception("answering a request failed; closing its connection")
            self.close_now()

    def _write(self) -> None:
        core, transport = self._core, self._transport
        if core is not None and transport is not None:
            output = core.take_output()
            if output:
                transport.write(output)

    def _act(self) -> None:
        self._write()
        core, transport = self._core, self._transport
        if core is None or transport is None:
            return
        metrics = self._context.metrics
        for status in core.take_refusals():
            metrics.rejected[status] += 1
        phase = core.phase
        if phase is not self._acted:
            self._acted = phase
            if phase not in ANSWERING:
                self._give_up_waiting()  # what is not answered by now never will be
            if phase is Phase.STREAMING:
                assert core.stream is not None
                self._hand_off(core.stream)
                return
            if phase is Phase.LINGERING:
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
            elif phase is Phase.CLOSED:
                self._context.connections.discard(self)
                transport.close()  # once the output is written
                return
            elif phase is Phase.ABORTED:
                self._context.connections.discard(self)
                transport.abort()
                return
        wants = core.wants_read
        if wants != self._reading:
            self._reading = wants
            if wants:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _give_up_waiting(self) -> None:
        if self._cancels:
            for cancel in self._cancels.values():
                cancel()
        self._cancels = None

    def _peer(self) -> str | None:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer[0]) if peer else None

    def _from_loopback(self) -> bool:
        if self._loopback is None:
            peer = self._transport.get_extra_info("peername") if self._transport else None
            self._loopback = is_loopback_address(peer[0]) if peer else False
        return self._loopback

    # Streams

    def _hand_off(self, stream: OpenStream) -> None:
        """The core's answer made the connection a stream: give it to the stream reactor,
        or, when that cannot be, answer otherwise and close as any last answer."""
        context = self._context
        transport = self._transport
        core = self._core
        assert transport is not None and core is not None
        if transport.get_write_buffer_size():
            context.metrics.rejected[503] += 1
            core.refuse_stream(error_response(BEHIND_UNSENT), context.clock())
            self._act()
            return
        try:
            context.streams.open(transport, stream, core.after_upgrade)
        except OSError as exc:
            log.warning("cannot open stream: %s", exc)
            refusal = context.api.come_back_later(stream.head, OVERLOADED, stream.framing)
            core.refuse_stream(refusal, context.clock())
            self._act()
            return
        core.release()
        self._core = None  # the stream backend owns the connection now
        context.connections.discard(self)


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped 127.x address: the machine itself."""
    return address.startswith(("127.", "::ffff:127.")) or address == "::1"
