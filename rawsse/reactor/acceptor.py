"""The raw accept path: connections accepted on the listening fds themselves, their first
request read into one shared buffer, and a stream request made a stream where it sits —
no transport, no Protocol object, no parser kept.

    listening fd ─readable─> accept up to ACCEPT_BATCH ─> fd in the stream poller, ARRIVING
    ARRIVING fd ─readable─> one read into the shared buffer, its first
                 slice read by the shared RequestReader (httptools)
        ├─ one whole stream request, answered with a stream at once ─> Streams.open_slot
        └─ anything else (publish, metrics, a partial head, an error, a waiting resume)
             ─> a HttpConnection core that takes the reader and what it read, handed to
                the loop's machinery (a Handover): nothing is read or decided twice

Until its first bytes come, an arriving connection costs its slot byte and a dict entry
(in accept order); the once-a-second sweep closes those whose request did not start
within --header-timeout, as the ordinary path closes an idle connection. Arriving and
handed-over connections count against --max-connections until the loop holds them, and
the one admission (rawsse.reactor.context) decides here, once: served, handed over to be
answered "come back later", or dropped. Used with the fd stream backend; with transports
the loop's own server accepts.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket

from rawsse.core.connection import FEED_SLICE, HttpConnection
from rawsse.core.effects import Effect, OpenStream
from rawsse.core.http import Request, RequestReader
from rawsse.errors import HttpError, RawsseError
from rawsse.reactor.context import Admission, ConnectionContext
from rawsse.reactor.effects import internal_error
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.protocol import Handover, HttpProtocol, is_loopback_address

log = logging.getLogger("rawsse")

ACCEPT_BATCH = 64
"""Connections accepted per wake-up of a listening fd, so a storm cannot starve the loop:
the fd stays readable, and the rest are taken on the next iteration."""

READ_BUFFER = 256 * 1024
"""The one buffer every arriving connection's first bytes are read into: as large as a
read of the loop's own (asyncio reads 256 KiB), so a first read takes the same bytes."""

OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.1
"""Out of descriptors or memory: accepting stops this long (the backlog holds the rest)
instead of spinning on a listening fd that stays readable."""


class Acceptor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        context: ConnectionContext,
        backend: FdBackend,
    ) -> None:
        self._loop, self._sockets, self._context, self._backend = loop, sockets, context, backend
        self._table = context.streams.table
        self._arrived: dict[int, float] = {}
        """Arriving fds, with when they were accepted; in accept order (a dict keeps the
        order of insertion), which the sweep relies on."""
        self._loopback = bytearray(self._table.capacity)
        self._family = bytearray(self._table.capacity)  # AF_INET or AF_INET6, by fd
        self._address: list[str | None] = [None] * self._table.capacity  # while arriving
        self._reader: RequestReader | None = None
        """The one reader of first requests, waiting between messages (None: make one)."""
        self._buffer = bytearray(READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._paused: asyncio.TimerHandle | None = None
        self._warned = False
        for sock in sockets:
            # Accepted sockets inherit these, so each costs no setsockopt of its own:
            # events leave at once, and a client that vanishes is found by the kernel.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._listen()

    # Accepting

    def _listen(self) -> None:
        self._paused = None
        for sock in self._sockets:
            # The family as a plain int, read once: the socket's property builds an enum.
            self._loop.add_reader(sock.fileno(), self._accept, sock, int(sock.family))

    def _pause(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cannot accept connections: %s; pausing accepts for %.1f s", exc, ACCEPT_PAUSE)
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(ACCEPT_PAUSE, self._listen)

    def _accept(self, sock: socket.socket, family: int) -> None:
        context = self._context
        table = self._table
        arrived = self._arrived
        now = context.clock()
        for _ in range(ACCEPT_BATCH):
            try:
                fd, address = sock._accept()  # type: ignore[attr-defined]  # the bare fd
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in OUT_OF_FDS:
                    self._pause(exc)
                    return
                continue  # the client gave up while it waited (ECONNABORTED and the like)
            admission = context.admit()
            if admission is Admission.DROP:
                os.close(fd)
                continue
            if admission is Admission.SHED:
                context.shedding += 1  # counted now, so the rest of the batch sees it
                self._hand_over(fd, family, Handover(None, shedding=True), watched=False)
                continue
            if fd >= table.capacity:  # the ordinary path answers "come back later"
                self._hand_over(fd, family, Handover(None), watched=False)
                continue
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)  # a fresh socket has no other flag to keep
            try:
                self._backend.watch(fd)
            except OSError:
                self._hand_over(fd, family, Handover(None), watched=False)
                continue
            table.arrive(fd)
            loopback = is_loopback_address(address[0])
            self._loopback[fd] = loopback
            self._family[fd] = family
            self._address[fd] = address[0]
            arrived[fd] = now
            context.arriving += 1

    # The first bytes

    def arrived(self, fd: int) -> None:
        try:
            count = os.readv(fd, (self._buffer,))
        except BlockingIOError:
            return
        except OSError:
            count = 0
        accepted = self._leave(fd)
        if not count:  # gone before it asked anything
            os.close(fd)
            return
        try:
            self._first_request(fd, count, accepted)
        except Exception:  # a fault here must not leave the fd in the poller, unowned
            log.exception("taking a new connection's request failed; closing it")
            self._backend.unwatch(fd)
            os.close(fd)

    def _first_request(self, fd: int, count: int, accepted: float) -> None:
        context = self._context
        now = context.clock()
        # One slice is read with the shared reader, as a connection's core reads its input
        # (the rest, if any, is the core's to read, with its pipelining bounds).
        reader = self._reader or RequestReader(context.limits)
        self._reader = None
        error: HttpError | None = None
        try:
            requests = reader.feed(self._view[: min(count, FEED_SLICE)])  # type: ignore[arg-type]
        except HttpError as exc:
            requests, error = [], exc
        loopback = bool(self._loopback[fd])
        address = self._address[fd]
        self._address[fd] = None
        effect: Effect | RawsseError | None = None
        if len(requests) == 1 and count <= FEED_SLICE and (reader.between_messages or reader.upgraded):
            effect = self._decide(requests[0], loopback, address)
            if isinstance(effect, OpenStream):  # the common case: no core, no transport
                early = reader.after_upgrade  # a WebSocket client's frames sent too soon
                if reader.upgraded:
                    reader.renew()
                self._reader = reader  # the next connection's first request is read with it
                context.streams.open_slot(fd, effect, early)
                return
        core = HttpConnection(context.limits, context.timeouts, accepted, reader=reader)
        core.receive_parsed(requests, error, bytes(self._view[FEED_SLICE:count]), now)
        handover = Handover(core, loopback=loopback)
        if effect is not None:
            request = core.next_request()  # the one decided above
            assert request is requests[0]
            if isinstance(effect, RawsseError):
                core.fail(request, effect, now)
            else:
                handover.request, handover.effect = request, effect
        self._hand_over(fd, self._family[fd], handover)

    def _decide(self, request: Request, loopback: bool, address: str | None) -> Effect | RawsseError:
        try:  # not `decided`: a closure more per new stream, on the storm's path
            return self._context.api.handle(request, lambda: loopback, lambda: address)
        except RawsseError as error:
            return error
        except Exception:
            return internal_error()

    def _leave(self, fd: int) -> float:
        """The fd stops arriving (for a stream, a hand-over or a close); when it came."""
        self._table.leave(fd)
        self._context.arriving -= 1
        return self._arrived.pop(fd)

    def _hand_over(self, fd: int, family: int, handover: Handover, watched: bool = True) -> None:
        """Give the connection to the loop's machinery (with what was done so far); it
        counts as in flight until the loop has made it."""
        if watched:
            self._backend.unwatch(fd)
        sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        context = self._context
        context.handing_over += 1
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(lambda: HttpProtocol(context, handover), sock)
        )

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

    # The sweep

    def sweep(self, now: float) -> None:
        """Once a second: close the arrivals that asked nothing within the header timeout."""
        limit = now - self._context.timeouts.header
        expired = []
        for fd, accepted in self._arrived.items():  # oldest first
            if accepted > limit:
                break
            expired.append(fd)
        for fd in expired:
            self._close(fd)

    def _close(self, fd: int) -> None:
        self._leave(fd)
        self._backend.unwatch(fd)
        os.close(fd)

    def close(self) -> None:
        """Stop accepting (the shutdown's start); what has arrived is still answered."""
        if self._paused is not None:
            self._paused.cancel()
        else:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
        for sock in self._sockets:
            sock.close()

    def close_arriving(self) -> None:
        """Close every connection still arriving (the shutdown's end)."""
        for fd in list(self._arrived):
            self._close(fd)
