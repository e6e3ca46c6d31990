"""Streams as bare file descriptors, watched by one epoll/kqueue whose own fd sits in the
asyncio loop: a stream costs its byte in the slot table, its place in the subscription
arrays and the kernel's socket; nothing else while it is idle or keeping up.

The slot is the fd itself. A connection accepted on the raw path (rawsse.reactor.acceptor)
waits for its request in the same poller and becomes a stream where it is. One that came
through the loop's machinery is taken from its transport by duplicating its socket and
aborting the transport: the loop forgets its fd (and removes it from its own poller) while
the connection lives on in the duplicate.
"""

from __future__ import annotations

import asyncio
import os
import socket
from array import array
from typing import TYPE_CHECKING, Protocol

from rawsse.core.slots import LIVE, Framing, SlotState, SlotTable, Why
from rawsse.poller import HANGUP, READABLE, WRITABLE, Poller

if TYPE_CHECKING:  # the backend reports to them; they write through it
    from rawsse.reactor.streams import StreamEvents

IOV_MAX = 1024
"""writev's buffer-count limit on Linux and the BSDs."""

READ_CHUNK = 4096
"""An SSE stream's client has nothing to say after its request; what it sends is read
away in small chunks and dropped, so it cannot make the poller spin."""

WS_READ_CHUNK = 64 * 1024
"""A WebSocket client's frames are read this much per readiness notice, into a bytes
object that lives as long as the read's frames are being handled."""


class Arrivals(Protocol):
    """Where a connection accepted on the raw path goes once its request can be read
    (rawsse.reactor.acceptor.Acceptor)."""

    def arrived(self, fd: int) -> None:
        """An ARRIVING connection is readable (or hung up): its request."""
        ...

    def settle(self) -> None:
        """The poller's batch is read: answer the requests that wait for their turn's
        commit (rawsse.broker.memory), together."""
        ...


class FdBackend:
    """Nothing is polled before `start`, which says where what is seen goes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, table: SlotTable, poller: Poller) -> None:
        self._loop = loop
        self._table = table
        self._poller = poller
        self._events: StreamEvents | None = None
        self._arrivals: Arrivals | None = None

    def start(self, events: StreamEvents, arrivals: Arrivals) -> None:
        """Watch the streams from now on, reporting to `events` (and new connections'
        requests to `arrivals`): called once both are built."""
        self._events, self._arrivals = events, arrivals
        self._loop.add_reader(self._poller.fileno(), self._on_ready)

    def adopt(self, transport: asyncio.Transport) -> int:
        sock = transport.get_extra_info("socket")
        fd = os.dup(sock.fileno())
        try:
            if fd >= self._table.capacity:  # only if the fd limit was raised after start
                raise OSError("stream slot array is full")
            self._poller.register(fd)  # may fail (ENOSPC: the epoll watch limit)
        except OSError:
            os.close(fd)
            raise
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            pass
        transport.abort()
        return fd

    def watch(self, fd: int) -> None:
        """Watch a connection accepted on the raw path for its request. Raises OSError
        (ENOSPC: the epoll watch limit)."""
        self._poller.register(fd)

    def unwatch(self, fd: int) -> None:
        self._poller.unregister(fd)

    # Writing

    def write_slice(self, slots: array[int], data: bytes, droppable: bool) -> int:
        # The hot loop: one os.write per stream of the same bytes object. Kept flat on
        # purpose; every attribute lookup here is paid once per subscriber. Only the rare
        # cases (a stream that blocks, is behind, or is gone) leave the straight path.
        state = self._table.state
        write = os.write
        size = len(data)
        missed = 0
        opened, blocked = SlotState.OPEN, SlotState.BLOCKED  # locals: an enum's attribute costs 5x
        for fd in slots:
            status = state[fd]
            if status == opened:
                try:
                    sent = write(fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._lost(fd)
                    missed += 1
                    continue
                if sent != size:
                    self._block(fd, memoryview(data)[sent:])
            elif status == blocked and not droppable:
                if not self._table.queue(fd, data):
                    self._slow(fd)
                    missed += 1
            else:
                missed += 1  # closed during the pass, or behind and this is a heartbeat
        return len(slots) - missed

    def write(self, slot: int, data: bytes) -> None:
        try:
            sent = os.write(slot, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(slot)
            return
        if sent != len(data):
            self._block(slot, memoryview(data)[sent:])

    def _block(self, fd: int, rest: memoryview) -> None:
        self._table.block(fd, rest, self._loop.time())
        self._poller.want_write(fd, True)

    def _flush(self, fd: int) -> None:
        buffers = self._table.pending[fd].buffers
        try:
            sent = os.writev(fd, buffers[:IOV_MAX])
        except BlockingIOError:
            return
        except OSError:
            self._lost(fd)
            return
        if self._table.sent(fd, sent, self._loop.time()):
            self._poller.want_write(fd, False)
            assert self._events is not None
            self._events.drained()

    def _lost(self, fd: int) -> None:
        assert self._events is not None  # only a started backend reads or writes
        self._events.close(fd, Why.PEER)

    def _slow(self, fd: int) -> None:
        assert self._events is not None
        self._events.close(fd, Why.SLOW)

    # Poller events

    def _on_ready(self) -> None:
        events, arrivals = self._events, self._arrivals
        assert events is not None and arrivals is not None
        table = self._table
        state = table.state
        framing = table.framing
        arriving, websocket = SlotState.ARRIVING, Framing.WS
        for fd, flags in self._poller.poll():
            status = state[fd]
            if status == arriving:
                arrivals.arrived(fd)  # read even on a hang-up: the request may be there
                continue
            if status not in LIVE:
                continue  # closed during this poll's batch
            if framing[fd] == websocket:
                if flags & (READABLE | HANGUP):  # read first: a close frame may precede the end
                    try:
                        data = os.read(fd, WS_READ_CHUNK)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data is not None:
                        if not data:
                            self._lost(fd)
                            continue
                        events.receive(fd, data)
                        if state[fd] not in LIVE:
                            continue
                if flags & WRITABLE and fd in table.pending:
                    self._flush(fd)
                continue
            if flags & HANGUP:
                self._lost(fd)
                continue
            if flags & READABLE:
                try:
                    if not os.read(fd, READ_CHUNK):
                        self._lost(fd)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self._lost(fd)
                    continue
            if flags & WRITABLE and state[fd] == SlotState.BLOCKED:
                self._flush(fd)
        arrivals.settle()

    # Slots

    def detach(self, slot: int, abort: bool) -> None:
        self._poller.unregister(slot)
        if abort:  # tell a slow client at once, even if its fd closes only after the pass
            _shutdown_socket(slot, socket.SHUT_RDWR)

    def end_writing(self, slot: int) -> None:
        """Send the end of our side of the connection (after what was written); reading
        goes on."""
        _shutdown_socket(slot, socket.SHUT_WR)

    def free(self, slot: int) -> None:
        try:
            os.close(slot)
        except OSError:
            pass

    def dispose(self) -> None:
        if self._events is not None:
            self._loop.remove_reader(self._poller.fileno())
        self._poller.close()


def _shutdown_socket(fd: int, how: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass
    finally:
        sock.detach()  # the fd stays ours to close
