"""The stream reactor: streams as bare file descriptors in a slot array, watched by one
epoll/kqueue whose own fd sits in the asyncio loop.

A stream costs a byte of state here, its place in the subscription arrays and the
kernel's socket; nothing else while it is idle or keeping up. Only a stream whose socket
would block gets a `_Pending` (a list of views of the shared event bytes, never a copy)
and a write-readiness registration, until it drains.
"""

from __future__ import annotations

import asyncio
import os
import socket
from array import array

from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.reactor.poller import HANGUP, READABLE, WRITABLE, Poller
from rawsse.reactor.streams import StreamLimits, Streams

FREE, OPEN, BLOCKED, CLOSED = 0, 1, 2, 3
"""Slot states. CLOSED: shut, waiting for the running pass to end before the fd closes."""

IOV_MAX = 1024
"""writev's buffer-count limit on Linux and the BSDs."""

READ_CHUNK = 4096
"""A stream's client has nothing to say after its request; what it sends is read away in
small chunks and dropped, so it cannot make the poller spin."""


class _Pending:
    """Bytes a blocked stream still owes its client: views of shared event bytes. The
    first buffer is the write in progress; the cap counts the backlog behind it."""

    __slots__ = ("buffers", "since", "size")

    def __init__(self, first: memoryview | bytes, now: float) -> None:
        self.buffers: list[memoryview | bytes] = [first]
        self.size = len(first)
        self.since = now


class FdStreams(Streams):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hub: Hub,
        metrics: Metrics,
        limits: StreamLimits,
        poller: Poller,
    ) -> None:
        super().__init__(loop, hub, metrics, limits)
        self._poller = poller
        self._state = bytearray(hub.subscriptions.capacity)
        self._pending: dict[int, _Pending] = {}
        loop.add_reader(poller.fileno(), self._on_ready)

    def open(self, transport: asyncio.Transport, first_bytes: bytes, topics: tuple[str, ...]) -> int | None:
        """Take the connection out of the loop's transport and make it a stream.

        The socket is duplicated and the transport aborted: the loop forgets its fd (and
        removes it from its own poller) while the connection lives on in the duplicate.
        Raises OSError (EMFILE) if no fd is left; the transport is then untouched.
        """
        sock = transport.get_extra_info("socket")
        fd = os.dup(sock.fileno())
        try:
            if fd >= len(self._state):  # only if the fd limit was raised after start
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
        self._state[fd] = OPEN
        self._joined(fd, topics)
        self._send(fd, first_bytes)
        return None  # the poller notices this stream's disconnect

    # Writing

    def _write_slice(self, slots: array[int], data: bytes, droppable: bool) -> None:
        # The hot loop: one os.write per stream of the same bytes object. Kept flat on
        # purpose; every attribute lookup here is paid once per subscriber.
        state = self._state
        write = os.write
        size = len(data)
        for fd in slots:
            status = state[fd]
            if status == OPEN:
                try:
                    sent = write(fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.close(fd)
                    continue
                if sent != size:
                    self._block(fd, memoryview(data)[sent:])
            elif status == BLOCKED and not droppable:
                self._queue(fd, data)

    def _send(self, fd: int, data: bytes) -> None:
        """Write to one stream, buffering what the socket does not take."""
        if self._state[fd] == BLOCKED:
            self._queue(fd, data)
            return
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(fd)
            return
        if sent != len(data):
            self._block(fd, memoryview(data)[sent:])

    def _block(self, fd: int, rest: memoryview) -> None:
        # The unsent rest of one write is never held against the cap, however large (a
        # coalesced pass, a replay page): only what queues up behind it is.
        self._state[fd] = BLOCKED
        self._pending[fd] = _Pending(rest, self._loop.time())
        self._poller.want_write(fd, True)

    def _queue(self, fd: int, data: bytes) -> None:
        pending = self._pending[fd]
        pending.size += len(data)
        if pending.size - len(pending.buffers[0]) > self._limits.max_pending_bytes:
            self.close(fd, slow=True)
            return
        pending.buffers.append(data)

    def _flush(self, fd: int) -> None:
        pending = self._pending[fd]
        buffers = pending.buffers
        try:
            sent = os.writev(fd, buffers[:IOV_MAX])
        except BlockingIOError:
            return
        except OSError:
            self.close(fd)
            return
        pending.size -= sent
        pending.since = self._loop.time()
        done = 0
        for buffer in buffers:
            if sent < len(buffer):
                break
            sent -= len(buffer)
            done += 1
        del buffers[:done]
        if buffers:
            if sent:
                buffers[0] = memoryview(buffers[0])[sent:]
            return
        del self._pending[fd]
        self._state[fd] = OPEN
        self._poller.want_write(fd, False)
        self._wake_idle_waiters()

    # Poller events

    def _on_ready(self) -> None:
        state = self._state
        for fd, flags in self._poller.poll():
            status = state[fd]
            if status in (FREE, CLOSED):
                continue
            if flags & HANGUP:
                self.close(fd)
                continue
            if flags & READABLE:
                try:
                    if not os.read(fd, READ_CHUNK):
                        self.close(fd)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.close(fd)
                    continue
            if flags & WRITABLE and state[fd] == BLOCKED:
                self._flush(fd)

    # Slot life cycle

    def _is_open(self, slot: int) -> bool:
        return self._state[slot] in (OPEN, BLOCKED)

    def _shut(self, slot: int, abort: bool) -> None:
        self._state[slot] = CLOSED
        self._pending.pop(slot, None)
        self._poller.unregister(slot)
        if abort:  # tell a slow client at once, even if its fd closes only after the pass
            _shutdown_socket(slot)

    def _release(self, slot: int) -> None:
        self._state[slot] = FREE
        try:
            os.close(slot)
        except OSError:
            pass

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def sweep(self, now: float) -> None:
        limit = now - self._limits.send_timeout
        stuck = [fd for fd, pending in self._pending.items() if pending.since < limit]
        for fd in stuck:
            self.close(fd, slow=True)

    def shutdown(self) -> None:
        self.close_all()
        self._loop.remove_reader(self._poller.fileno())
        self._poller.close()


def _shutdown_socket(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()  # the fd stays ours to close
