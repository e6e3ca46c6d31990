"""Streams kept on the loop's own transports: the fallback where neither epoll nor kqueue
exists (and a reference the tests compare against). Same behaviour, less lean: each
stream keeps its transport and protocol objects."""

from __future__ import annotations

import asyncio
import socket
from array import array

from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.reactor.streams import StreamLimits, Streams


class TransportStreams(Streams):
    def __init__(
        self, loop: asyncio.AbstractEventLoop, hub: Hub, metrics: Metrics, limits: StreamLimits
    ) -> None:
        super().__init__(loop, hub, metrics, limits)
        capacity = hub.subscriptions.capacity
        self._transports: list[asyncio.Transport | None] = [None] * capacity
        self._vacant = list(range(capacity - 1, -1, -1))
        self._open: set[int] = set()  # so the sweeps need not scan every slot
        self._first_write = array("q", bytes(8 * capacity))
        self._blocked_since: dict[int, float] = {}

    def open(self, transport: asyncio.Transport, first_bytes: bytes, topics: tuple[str, ...]) -> int | None:
        """Make the connection a stream; returns its slot, which the protocol closes when
        the connection is lost. Raises OSError when every slot is taken."""
        if not self._vacant:
            raise OSError("stream slots are full")
        slot = self._vacant.pop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        self._transports[slot] = transport
        self._open.add(slot)
        self._joined(slot, topics)
        transport.write(first_bytes)
        self._first_write[slot] = len(first_bytes)
        return slot

    def connection_lost(self, slot: int, transport: asyncio.BaseTransport) -> None:
        # The slot may already serve another stream: the close that freed it came first
        # and this notice of the old transport arrived late.
        if self._transports[slot] is transport:
            self.close(slot)

    def _write_slice(self, slots: array[int], data: bytes, droppable: bool) -> None:
        transports = self._transports
        cap = self._limits.max_pending_bytes
        for slot in slots:
            transport = transports[slot]
            if transport is None:
                continue
            backlog = transport.get_write_buffer_size()
            # As in the fd backend, the write that was in progress when the backlog began
            # is not held against the cap; only what queued up behind it is.
            if backlog - min(backlog, self._first_write[slot]) > cap:
                self.close(slot, slow=True)
            elif not backlog:
                transport.write(data)
                self._first_write[slot] = len(data)
            elif not droppable:
                transport.write(data)

    def _is_open(self, slot: int) -> bool:
        return self._transports[slot] is not None

    def _shut(self, slot: int, abort: bool) -> None:
        transport = self._transports[slot]
        self._transports[slot] = None  # the slot number itself stays taken until release
        self._open.discard(slot)
        self._blocked_since.pop(slot, None)
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def _release(self, slot: int) -> None:
        self._vacant.append(slot)

    def _has_pending(self) -> bool:
        transports = self._transports
        return any(transports[slot].get_write_buffer_size() for slot in self._open)  # type: ignore[union-attr]

    def sweep(self, now: float) -> None:
        # Once a second over the open streams: finding the blocked ones costs a scan here,
        # the price of this backend.
        limit = now - self._limits.send_timeout
        for slot in list(self._open):
            transport = self._transports[slot]
            if transport is None or not transport.get_write_buffer_size():
                self._blocked_since.pop(slot, None)
                continue
            since = self._blocked_since.setdefault(slot, now)
            if since < limit:
                self.close(slot, slow=True)

    def shutdown(self) -> None:
        self.close_all()
