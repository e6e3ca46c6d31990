"""Requests answered on the raw path: a connection the raw accept path took
(rawsse.reactor.acceptor) stays a bare descriptor in the stream poller for as long as its
requests come whole and their answers are known at once — a publish to a broker of this
machine, a refusal, a metrics page — with no transport, no Protocol object and no
parser of its own.

    FIRST ─readable─> one read into the shared buffer, read by the shared RequestReader
      │     ├─ whole requests, each answered at once, kept alive ──> answers written ─> IDLE
      │     ├─ a refusal, or an answer that closes ─> written, our side shut ─> LINGERING
      │     ├─ one stream request, answered with a stream ──> the stream registry's slot
      │     └─ anything else (a partial request, an answer that waits, a write the socket
      │        did not take whole) ─> a HttpConnection core with the reader, what it read
      │        and what is unsent, handed to the loop's machinery (a Handover)
    IDLE ─readable─> the same, for the connection's next requests
    SHED (accepted over the limit) ─readable─> its request answered "come back later", closed
    LINGERING ─readable─> read and dropped until the client's end (or LINGER_TIME)

Each phase has its timeout, checked by the once-a-second sweep in order of arrival (the
header timeout for FIRST, the keep-alive timeout for IDLE, SHED_TIMEOUT, LINGER_TIME), as
the ordinary path's core keeps them. A raw connection counts against --max-connections
(`ConnectionContext.arriving`) until it closes, becomes a stream or is handed over. The
decisions are the core's and the API's, as on the ordinary path: what changes is only who
moves the bytes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket

from rawsse.core.connection import FEED_SLICE, LINGER_TIME, SHED_TIMEOUT, HttpConnection
from rawsse.core.effects import Effect, OpenStream, Publish, Respond
from rawsse.core.http import Request, RequestReader, error_response
from rawsse.errors import HttpError, RawsseError
from rawsse.reactor.context import ConnectionContext
from rawsse.reactor.effects import internal_error
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.protocol import WRITE_HIGH_WATER, Handover, HttpProtocol

log = logging.getLogger("rawsse")

READ_BUFFER = 256 * 1024
"""The one buffer every raw connection's bytes are read into: as large as a read of the
loop's own (asyncio reads 256 KiB), so a read takes the same bytes."""


class RawPhase(enum.IntEnum):
    """Where a raw connection is, one byte per descriptor."""

    NONE = 0
    """Not a raw connection (free, a stream, or the loop's)."""
    FIRST = 1
    """Accepted; its first request not read yet (the header timeout runs)."""
    IDLE = 2
    """Its answers are out and it is kept alive (the keep-alive timeout runs)."""
    SHED = 3
    """Accepted over the connection limit: its request is read only to answer "come back
    later", then it is closed (SHED_TIMEOUT runs)."""
    LINGERING = 4
    """Its last answer is out and our side shut: input is read and dropped until the
    client's end, or LINGER_TIME, so unread input cannot reset the connection before the
    client has read the answer."""


_FIRST_REQUEST = (RawPhase.FIRST, RawPhase.SHED)


class Deadlines:
    """The raw connections in one phase, in the order they entered it: with one timeout
    for all of them, the oldest expire first."""

    __slots__ = ("_since", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._since: dict[int, float] = {}  # a dict keeps the order of insertion

    def add(self, fd: int, now: float) -> None:
        self._since[fd] = now

    def remove(self, fd: int) -> None:
        self._since.pop(fd, None)

    def since(self, fd: int, default: float) -> float:
        return self._since.get(fd, default)

    def expired(self, now: float) -> list[int]:
        limit = now - self.timeout
        expired = []
        for fd, since in self._since.items():  # oldest first
            if since > limit:
                break
            expired.append(fd)
        return expired

    def fds(self) -> list[int]:
        return list(self._since)

    def __len__(self) -> int:
        return len(self._since)


class RawRequests:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, context: ConnectionContext, backend: FdBackend
    ) -> None:
        self._loop, self._context, self._backend = loop, context, backend
        self._table = table = context.streams.table
        capacity = table.capacity
        self._phase = bytearray(capacity)
        self._loopback = bytearray(capacity)
        self._shedding = bytearray(capacity)
        """Accepted over the limit: counted in `ConnectionContext.shedding` until it goes."""
        self._family = bytearray(capacity)  # AF_INET or AF_INET6
        self._address: list[str | None] = [None] * capacity
        timeouts = context.timeouts
        timeout = {
            RawPhase.FIRST: timeouts.header,
            RawPhase.IDLE: timeouts.keepalive,
            RawPhase.SHED: SHED_TIMEOUT,
            RawPhase.LINGERING: LINGER_TIME,
        }
        # By the phase's value (the byte of `_phase`), without making an enum of it each
        # time; NONE's stays empty.
        self._deadlines = [Deadlines(timeout.get(phase, 0.0)) for phase in RawPhase]
        self._reader: RequestReader | None = None
        """The one reader of whole requests, waiting between messages (None: make one)."""
        self._buffer = bytearray(READ_BUFFER)
        self._view = memoryview(self._buffer)

    # Taking a connection

    def take(self, fd: int, address: str, family: int, loopback: bool, shedding: bool, now: float) -> None:
        """A connection just accepted and watched (`shedding`: over the limit, already
        counted in `ConnectionContext.shedding`)."""
        self._table.arrive(fd)
        self._context.arriving += 1
        self._loopback[fd] = loopback
        self._family[fd] = family
        self._address[fd] = address
        self._shedding[fd] = shedding
        self._enter(fd, RawPhase.SHED if shedding else RawPhase.FIRST, now)

    def _enter(self, fd: int, phase: RawPhase, now: float) -> None:
        old = self._phase[fd]
        if old:
            self._deadlines[old].remove(fd)
        self._phase[fd] = phase
        self._deadlines[phase].add(fd, now)

    def _leave(self, fd: int) -> None:
        """The connection is no longer raw: it closes, becomes a stream or is handed over."""
        phase = self._phase[fd]
        if not phase:
            return
        self._deadlines[phase].remove(fd)
        self._phase[fd] = RawPhase.NONE
        self._address[fd] = None
        self._table.leave(fd)
        self._context.arriving -= 1

    # Reading

    def arrived(self, fd: int) -> None:
        """The connection is readable (or hung up): its requests, or its end."""
        try:
            count = os.readv(fd, (self._buffer,))
        except BlockingIOError:
            return
        except OSError:
            count = 0
        if not count:  # gone: before it asked anything, between requests, or done lingering
            self._close(fd)
            return
        if self._phase[fd] == RawPhase.LINGERING:
            return  # read and dropped
        try:
            self._requests(fd, count)
        except Exception:  # a fault here must not leave the fd in the poller, unowned
            log.exception("answering a request on the raw path failed; closing its connection")
            self._close(fd)

    def _requests(self, fd: int, count: int) -> None:
        context = self._context
        now = context.clock()
        shedding = self._phase[fd] == RawPhase.SHED
        # One slice is read with the shared reader, as a connection's core reads its input
        # (the rest, if any, is the core's to read, with its pipelining bounds).
        reader = self._reader or RequestReader(context.limits)
        self._reader = None
        try:
            requests = reader.feed(self._view[: min(count, FEED_SLICE)])  # type: ignore[arg-type]
        except HttpError as error:  # a malformed or oversized request: refused here
            reader.close()
            self._refuse(fd, error, [])
            return
        # Whole: every byte read was read, into whole requests (or up to an upgrade).
        whole = count <= FEED_SLICE and (reader.between_messages or reader.upgraded)
        answers: list[bytes] = []
        answered = 0
        for index, request in enumerate(requests):
            if shedding:
                self._recycle(reader)
                try:
                    self._answer_and_close(fd, answers, context.api.shed(request))
                except RawsseError as refusal:  # a bad upgrade, an origin not allowed
                    self._refuse(fd, refusal, answers)
                return
            effect = self._decide(request, fd)
            if isinstance(effect, RawsseError):  # the last answer, whatever came after it
                self._recycle(reader)
                self._refuse(fd, effect, answers)
                return
            if isinstance(effect, OpenStream):
                if len(requests) > 1 or not whole:  # a stream among other requests
                    self._hand_over_rest(fd, reader, requests, index, effect, b"".join(answers), count, now)
                    return
                early = reader.after_upgrade  # a WebSocket client's frames sent too soon
                self._recycle(reader)
                self._leave(fd)
                context.streams.open_slot(fd, effect, early)
                return
            if (
                isinstance(effect, Publish)
                and whole
                and index + 1 == len(requests)
                and context.runner.in_turn
            ):
                # The read's last request, a publish that waits for its turn's commit: it
                # is answered (after the answers before it) when the reactor settles the
                # turn, once its batch of reads is done (`settle`).
                self._recycle(reader)
                self._answer_in_turn(fd, effect, answers, request.keep_alive, now)
                return
            answer = context.runner.run_now(effect)
            if answer is None:  # it waits (a round trip, a resume waiting for its id)
                self._hand_over_rest(fd, reader, requests, index, effect, b"".join(answers), count, now)
                return
            if isinstance(answer, RawsseError):
                self._recycle(reader)
                self._refuse(fd, answer, answers)
                return
            answers.append(answer.data)
            if answer.close or not request.keep_alive:
                self._recycle(reader)
                self._last_answer(fd, b"".join(answers))
                return
            answered += len(answer.data)
            if answered >= WRITE_HIGH_WATER and index + 1 < len(requests):
                # What one read's answers hold stays bounded (a client pipelining requests
                # for large pages): the rest is the core's, which reads on only as its
                # client takes its answers.
                self._hand_over_rest(fd, reader, requests, index + 1, None, b"".join(answers), count, now)
                return
        if not whole:
            deferred = reader.deferred
            if deferred is not None and count <= FEED_SLICE:  # a fault after whole requests
                self._recycle(reader)
                self._refuse(fd, deferred, answers)
            else:  # a request still arriving, or more than a slice: the core's to read
                unsent = b"".join(answers)
                self._hand_over_rest(fd, reader, requests, len(requests), None, unsent, count, now)
            return
        if not answers:  # only the empty lines a client may send before a request
            self._reader = reader
            return
        self._send(fd, answers[0] if len(answers) == 1 else b"".join(answers), reader, now)

    def _send(self, fd: int, data: bytes, reader: RequestReader, now: float) -> None:
        """Write a connection's answers, then wait for its next request; `reader` read
        them, and is kept for the next connection's."""
        sent = self._write(fd, data)
        if sent < 0:
            reader.close()
            return  # gone
        if sent < len(data):  # the client reads none of its answers: the core's to bound
            self._hand_over_rest(fd, reader, [], 0, None, data[sent:], 0, now)
            return
        self._reader = reader
        self._enter(fd, RawPhase.IDLE, now)

    def _answer_in_turn(
        self, fd: int, effect: Publish, before: list[bytes], keep_alive: bool, now: float
    ) -> None:
        """Publish, and answer once the turn settles. The descriptor is not read
        meanwhile: the turn settles at the end of the poller's batch that read it."""
        phase = self._phase[fd]

        def answered(outcome: Respond | RawsseError) -> None:
            if self._phase[fd] != phase:
                return  # closed meanwhile
            try:
                if isinstance(outcome, RawsseError):
                    self._refuse(fd, outcome, before)
                    return
                data = b"".join([*before, outcome.data]) if before else outcome.data
                if outcome.close or not keep_alive:
                    self._last_answer(fd, data)
                    return
                reader = self._reader or RequestReader(self._context.limits)
                self._reader = None
                self._send(fd, data, reader, now)
            except Exception:  # as in `arrived`: a fault must not leave the fd unowned
                log.exception("answering a publish on the raw path failed; closing its connection")
                self._close(fd)

        self._context.runner.publish(effect, answered)

    def settle(self) -> None:
        self._context.runner.settle()

    def _recycle(self, reader: RequestReader) -> None:
        """Keep `reader` to read the next request of any raw connection, if it waits
        between messages (or can after an upgrade); drop it otherwise."""
        if reader.upgraded:
            reader.renew()
        if reader.between_messages:
            self._reader = reader
        else:
            reader.close()

    def _decide(self, request: Request, fd: int) -> Effect | RawsseError:
        loopback = bool(self._loopback[fd])
        address = self._address[fd]
        try:  # not `decided`: a closure more per request, on the hot path
            return self._context.api.handle(request, lambda: loopback, lambda: address)
        except RawsseError as error:
            return error
        except Exception:
            return internal_error()

    # Answering

    def _write(self, fd: int, data: bytes) -> int:
        """Bytes of `data` the socket took; -1 when the connection is gone (then closed)."""
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            self._close(fd)
            return -1

    def _refuse(self, fd: int, error: RawsseError, before: list[bytes]) -> None:
        """Answer `error` after the answers `before` it, as the last answer: counted, then
        the descriptor back at once when over the limit (as the ordinary path does for a
        shed connection), else our FIN and lingering."""
        self._context.metrics.rejected[error.status or 500] += 1
        if self._phase[fd] == RawPhase.SHED:
            self._answer_and_close(fd, before, error_response(error))
        else:
            self._last_answer(fd, error_response(error), before)

    def _last_answer(self, fd: int, data: bytes, before: list[bytes] | None = None) -> None:
        """Send `data` (after the answers `before` it) as the connection's last answer,
        then shut our side and linger."""
        if before:
            data = b"".join(before) + data
        sent = self._write(fd, data)
        if sent < 0:
            return
        if sent < len(data):  # rare: a refusal bigger than the socket took at once
            now = self._context.clock()
            self._hand_over_rest(
                fd, RequestReader(self._context.limits), [], 0, None, data[sent:], 0, now, True
            )
            return
        self._backend.end_writing(fd)
        self._enter(fd, RawPhase.LINGERING, self._context.clock())

    def _answer_and_close(self, fd: int, before: list[bytes], data: bytes) -> None:
        """Over the limit: the answer, then the descriptor back at once (no lingering,
        as the ordinary path does for a shed connection)."""
        if self._write(fd, b"".join(before) + data if before else data) >= 0:
            self._close(fd)  # (a failed write closed it already)

    # Handing over to the loop's machinery

    def _hand_over_rest(
        self,
        fd: int,
        reader: RequestReader,
        requests: list[Request],
        index: int,
        effect: Effect | None,
        unsent: bytes,
        count: int,
        now: float,
        closing: bool = False,
    ) -> None:
        """Give the connection to a core and the loop: `unsent` answers first, then the
        requests from `index` (the first of them decided as `effect`, unless None), and
        what the reader did not read of this read."""
        shedding = bool(self._shedding[fd])
        # A connection still on its first request keeps the time it was accepted: the
        # header timeout (or, over the limit, SHED_TIMEOUT) runs once, not again from here.
        phase = self._phase[fd]
        started = self._deadlines[phase].since(fd, now) if phase in _FIRST_REQUEST else now
        core = HttpConnection(self._context.limits, self._context.timeouts, started, shedding, reader=reader)
        if unsent:
            core.send_first(unsent, closing, now)
        if not closing:  # after a last answer nothing more is read as a request
            core.receive_parsed(requests[index:], None, bytes(self._view[FEED_SLICE:count]), now)
        handover = Handover(core, loopback=bool(self._loopback[fd]), shedding=shedding)
        # The request decided here, unless the rest of the read was refused (the core then
        # answers that refusal and closes; the effect, never carried out, is dropped).
        if effect is not None and core.next_request() is requests[index]:
            handover.request, handover.effect = requests[index], effect
        family = self._family[fd]
        self._shedding[fd] = False  # the count goes with the connection
        self._leave(fd)
        self._backend.unwatch(fd)
        hand_over(self._loop, self._context, fd, family, handover)

    # Closing

    def _close(self, fd: int) -> None:
        if self._shedding[fd]:
            self._shedding[fd] = False
            self._context.shedding -= 1
        self._leave(fd)
        self._backend.unwatch(fd)
        os.close(fd)

    def sweep(self, now: float) -> None:
        """Once a second: close the raw connections whose phase timed out."""
        for deadlines in self._deadlines:
            for fd in deadlines.expired(now):
                self._close(fd)

    def close_all(self) -> None:
        """Close every raw connection (the shutdown's end)."""
        for deadlines in self._deadlines:
            for fd in deadlines.fds():
                self._close(fd)

    @property
    def count(self) -> int:
        """Raw connections in every phase."""
        return sum(len(deadlines) for deadlines in self._deadlines)


def hand_over(
    loop: asyncio.AbstractEventLoop, context: ConnectionContext, fd: int, family: int, handover: Handover
) -> None:
    """Give the connection to the loop's machinery (with what was done so far); it counts
    as in flight until the loop has made it."""
    sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
    sock.setblocking(False)
    context.handing_over += 1
    task = loop.create_task(loop.connect_accepted_socket(lambda: HttpProtocol(context, handover), sock))

    def done(task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:
            if handover.pending:  # never made: undo what it held
                handover.arrived(context)
                if handover.shedding:
                    context.shedding -= 1
                if handover.core is not None:
                    handover.core.release()
                sock.close()
            if not task.cancelled():
                log.warning("cannot hand a connection over to the loop: %s", task.exception())

    task.add_done_callback(done)
