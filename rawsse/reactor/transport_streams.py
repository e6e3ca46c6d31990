"""Streams kept on the loop's own transports: the backend for loops and platforms where
the fd reactor cannot run (no epoll or kqueue), and a reference the tests compare it
with. Same rules through the same slot table, less lean: each stream keeps its
transport and protocol objects.

A slot is an index into a list of transports. A stream counts as blocked once its
transport holds unsent bytes (that is its write in progress); what queues behind waits
in the slot table, as in the fd backend, and goes to the transport when the transport
has drained (the protocol's resume_writing, with the write buffer's high mark at 0).
"""

from __future__ import annotations

import asyncio
import socket
from array import array
from typing import TYPE_CHECKING

from rawsse.core.slots import SlotState, SlotTable, Why

if TYPE_CHECKING:  # the backend reports to them; they write through it
    from rawsse.reactor.streams import StreamEvents


class TransportBackend:
    def __init__(self, loop: asyncio.AbstractEventLoop, table: SlotTable) -> None:
        self._loop = loop
        self._table = table
        self._transports: list[asyncio.Transport | None] = [None] * table.capacity
        self._vacant = list(range(table.capacity - 1, -1, -1))
        self._events: StreamEvents | None = None

    def start(self, events: StreamEvents) -> None:
        """Report to `events` from now on (before any stream is adopted)."""
        self._events = events

    @property
    def events(self) -> StreamEvents:
        assert self._events is not None, "start(events) first"
        return self._events

    def adopt(self, transport: asyncio.Transport) -> int:
        if not self._vacant:
            raise OSError("stream slots are full")
        slot = self._vacant.pop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        # Told the moment anything stays unsent, and again once all of it is out.
        transport.set_write_buffer_limits(high=0, low=0)
        transport.set_protocol(_StreamProtocol(self, slot, transport))
        self._transports[slot] = transport
        return slot

    def lost(self, slot: int, transport: asyncio.BaseTransport) -> None:
        # The slot may serve another stream by now: the close that freed it came first,
        # and this notice of the old transport arrived late.
        if self._transports[slot] is transport:
            self.events.close(slot, Why.PEER)

    def received(self, slot: int, transport: asyncio.BaseTransport, data: bytes) -> None:
        if self._transports[slot] is transport:  # not a late notice for a reused slot
            self.events.receive(slot, data)

    # Writing

    def write_slice(self, slots: array[int], data: bytes, droppable: bool) -> int:
        state = self._table.state
        transports = self._transports
        missed = 0
        opened, blocked = SlotState.OPEN, SlotState.BLOCKED  # locals: an enum's attribute costs 5x
        for slot in slots:
            status = state[slot]
            if status == opened:
                transport = transports[slot]
                assert transport is not None
                transport.write(data)
                if transport.get_write_buffer_size():
                    self._table.block(slot, b"", self._loop.time())
            elif status == blocked and not droppable:
                if not self._table.queue(slot, data):
                    self.events.close(slot, Why.SLOW)
                    missed += 1
            else:
                missed += 1
        return len(slots) - missed

    def write(self, slot: int, data: bytes) -> None:
        transport = self._transports[slot]
        if transport is None:
            return  # detached: the stream is closed (write_slice skips it the same way)
        transport.write(data)
        if transport.get_write_buffer_size():
            self._table.block(slot, b"", self._loop.time())

    def resume(self, slot: int) -> None:
        """The slot's transport wrote out everything it held: hand it what queued."""
        table = self._table
        pending = table.pending.get(slot)
        transport = self._transports[slot]
        if pending is None or transport is None:
            return
        queued = [buffer for buffer in pending.buffers if buffer]
        table.sent(slot, pending.size, self._loop.time())  # all of it goes to the transport now
        if queued:
            transport.writelines(queued)
            if transport.get_write_buffer_size():
                table.block(slot, b"", self._loop.time())
                return
        self.events.drained()

    # Slots

    def detach(self, slot: int, abort: bool) -> None:
        transport = self._transports[slot]
        self._transports[slot] = None  # the slot number itself stays taken until freed
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def end_writing(self, slot: int) -> None:
        """Send the end of our side of the connection once the transport has written
        what it holds; reading goes on."""
        transport = self._transports[slot]
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    def free(self, slot: int) -> None:
        self._vacant.append(slot)

    def dispose(self) -> None:
        pass


class _StreamProtocol(asyncio.Protocol):
    """A stream's connection once it is a stream: its input goes to the stream reactor
    (which reads a WebSocket client's frames and drops an SSE client's bytes), and its end
    and a drained write buffer are reported."""

    __slots__ = ("_backend", "_slot", "_transport")

    def __init__(self, backend: TransportBackend, slot: int, transport: asyncio.BaseTransport) -> None:
        self._backend = backend
        self._slot = slot
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        # The stream reactor reads a WebSocket client's frames (and ignores an SSE
        # client's bytes: it has nothing to say after its request).
        self._backend.received(self._slot, self._transport, data)

    def eof_received(self) -> bool | None:
        return None  # the client is done: so is the stream

    def resume_writing(self) -> None:
        self._backend.resume(self._slot)

    def connection_lost(self, exc: Exception | None) -> None:
        self._backend.lost(self._slot, self._transport)
