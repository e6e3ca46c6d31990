"""A thin, uniform face over epoll (Linux) and kqueue (BSD, macOS) for the stream reactor.

The poller's own fd is watched by the asyncio loop (`loop.add_reader`), so the streams'
fds never enter the loop: no transport, handle or callback object per stream.
"""

from __future__ import annotations

import select
import sys
from typing import Protocol

READABLE = 1
WRITABLE = 2
HANGUP = 4

MAX_EVENTS = 1024
"""Events taken per wake-up; the poller fd stays readable while more are ready, so the
loop simply calls again on its next iteration."""


class Poller(Protocol):
    def fileno(self) -> int: ...
    def register(self, fd: int) -> None: ...
    def want_write(self, fd: int, on: bool) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: float = 0) -> list[tuple[int, int]]:
        """Ready fds with their flags; waits up to `timeout` s for one (the reactor never
        waits: the loop did, on the poller's own fd)."""
        ...

    def close(self) -> None: ...


if sys.platform == "linux":

    class EpollPoller:
        _READ = select.EPOLLIN | select.EPOLLRDHUP
        _WRITE = select.EPOLLOUT
        _HUP = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP

        def __init__(self) -> None:
            self._epoll = select.epoll()

        def fileno(self) -> int:
            return self._epoll.fileno()

        def register(self, fd: int) -> None:
            self._epoll.register(fd, self._READ)

        def want_write(self, fd: int, on: bool) -> None:
            self._epoll.modify(fd, self._READ | self._WRITE if on else self._READ)

        def unregister(self, fd: int) -> None:
            try:
                self._epoll.unregister(fd)
            except OSError:  # already gone with the socket
                pass

        def poll(self, timeout: float = 0) -> list[tuple[int, int]]:
            ready = []
            for fd, mask in self._epoll.poll(timeout, MAX_EVENTS):
                flags = 0
                if mask & self._HUP:
                    flags |= HANGUP
                elif mask & select.EPOLLIN:
                    flags |= READABLE
                if mask & select.EPOLLOUT:
                    flags |= WRITABLE
                ready.append((fd, flags))
            return ready

        def close(self) -> None:
            self._epoll.close()


if sys.platform != "linux" and sys.platform != "win32":

    class KqueuePoller:
        def __init__(self) -> None:
            self._kqueue = select.kqueue()

        def fileno(self) -> int:
            fd: int = self._kqueue.fileno()
            return fd

        def _control(self, fd: int, kind: int, flags: int) -> None:
            try:
                self._kqueue.control([select.kevent(fd, kind, flags)], 0, 0)
            except OSError:  # already gone with the socket
                pass

        def register(self, fd: int) -> None:
            self._control(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)

        def want_write(self, fd: int, on: bool) -> None:
            self._control(fd, select.KQ_FILTER_WRITE, select.KQ_EV_ADD if on else select.KQ_EV_DELETE)

        def unregister(self, fd: int) -> None:
            # Closing the fd removes its filters too; this only matters while it stays open.
            self._control(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)
            self._control(fd, select.KQ_FILTER_WRITE, select.KQ_EV_DELETE)

        def poll(self, timeout: float = 0) -> list[tuple[int, int]]:
            ready = []
            for event in self._kqueue.control(None, MAX_EVENTS, timeout):
                if event.flags & (select.KQ_EV_EOF | select.KQ_EV_ERROR):
                    flags = HANGUP
                elif event.filter == select.KQ_FILTER_READ:
                    flags = READABLE
                else:
                    flags = WRITABLE
                ready.append((event.ident, flags))
            return ready

        def close(self) -> None:
            self._kqueue.close()


def available_poller() -> str | None:
    """The name of the poller this platform has, or None (then streams stay on transports)."""
    if hasattr(select, "epoll"):
        return "epoll"
    if hasattr(select, "kqueue"):
        return "kqueue"
    return None


def make_poller(kind: str) -> Poller:
    if kind == "epoll" and sys.platform == "linux":
        return EpollPoller()
    if kind == "kqueue" and sys.platform != "linux" and sys.platform != "win32":
        return KqueuePoller()
    raise ValueError(f"no {kind} poller on this platform")
