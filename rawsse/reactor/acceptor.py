"""The raw accept path: connections accepted on the listening fds themselves and watched
in the stream poller at once, where their requests are read and answered
(rawsse.reactor.raw_requests) — no transport, no Protocol object, no parser kept.

    listening fd ─readable─> accept up to ACCEPT_BATCH ─> admission ─> watched, FIRST
                                                                    (or SHED: over the limit)

The one admission (rawsse.reactor.context) decides here, once: served, answered "come back
later", or dropped. Used with the fd stream backend; with transports the loop's own
server accepts.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket

from rawsse.reactor.context import Admission, ConnectionContext
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.protocol import Handover, is_loopback_address
from rawsse.reactor.raw_requests import RawRequests, hand_over

log = logging.getLogger("rawsse")

ACCEPT_BATCH = 64
"""Connections accepted per wake-up of a listening fd, so a storm cannot starve the loop:
the fd stays readable, and the rest are taken on the next iteration."""

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
        raw: RawRequests,
    ) -> None:
        self._loop, self._sockets, self._context, self._backend = loop, sockets, context, backend
        self._raw = raw
        self._capacity = context.streams.table.capacity
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
        capacity = self._capacity
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
            shedding = admission is Admission.SHED
            if shedding:
                context.shedding += 1  # counted now, so the rest of the batch sees it
            if fd >= capacity:  # no slot for it: the ordinary path answers "come back later"
                hand_over(self._loop, context, fd, family, Handover(None, shedding=shedding))
                continue
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)  # a fresh socket has no other flag to keep
            try:
                self._backend.watch(fd)
            except OSError:
                hand_over(self._loop, context, fd, family, Handover(None, shedding=shedding))
                continue
            self._raw.take(fd, address[0], family, is_loopback_address(address[0]), shedding, now)

    def close(self) -> None:
        """Stop accepting (the shutdown's start); what has arrived is still answered."""
        if self._paused is not None:
            self._paused.cancel()
        else:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
        for sock in self._sockets:
            sock.close()
