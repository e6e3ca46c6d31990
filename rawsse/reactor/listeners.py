"""Listening sockets, bound before anything serves, so that one port is served by one
rawsse only.

A single process binds without `SO_REUSEPORT`: the kernel refuses the bind while anything
else listens on the port. Workers must share the port with `SO_REUSEPORT`, which the
kernel grants to any socket of the same user that sets it too — a second
`rawsse serve --workers 2` would silently take half of the connections. So the supervisor
first binds a probe socket *without* `SO_REUSEPORT`, which fails while anything listens
there, and only then binds and listens the workers' sockets; an `flock` on a lock file
named after the address and port makes probe-and-bind one step, so two servers starting
at the same instant cannot both pass the probe. The supervisor keeps the workers'
sockets for its whole life: a worker that restarts gets its socket back, and the
connections that arrived meanwhile wait in its backlog instead of being refused.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rawsse.errors import PortInUse

Listeners = list[socket.socket]
"""One process's listening sockets: one per address the host name resolves to."""


Address = tuple[Any, ...]
"""(host, port) for IPv4, (host, port, flow info, scope id) for IPv6."""


def addresses(host: str, port: int) -> list[tuple[int, Address]]:
    """(family, address) of every local address `host` names, without duplicates."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1] as in URLs
    found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unique: dict[tuple[int, Any], tuple[int, Address]] = {}
    for family, _, _, _, address in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            unique.setdefault((family, address[0]), (family, tuple(address)))
    return list(unique.values())


def _socket(family: int, shared: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, as every server
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # ::1 and 127.0.0.1 apart
    return sock


def _bind(host: str, port: int, backlog: int, shared: bool) -> Listeners:
    sockets: Listeners = []
    try:
        for family, address in addresses(host, port):
            if sockets and port == 0:  # the port the first address got, for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = _socket(family, shared)
            sockets.append(sock)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(host, port) from None
                raise
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def listen(host: str, port: int, backlog: int) -> Listeners:
    """The sockets of a single process: not shared, so the bind itself is exclusive."""
    return _bind(host, port, backlog, shared=False)


PICK_ATTEMPTS = 5
"""For port 0: free ports tried, in case another program takes one between the pick and
the bind."""


def listen_shared(host: str, port: int, backlog: int, copies: int) -> list[Listeners]:
    """`copies` sets of sockets on one port, for workers (`SO_REUSEPORT`), refused with
    PortInUse when anything else listens there already. Port 0 picks a free port once."""
    if port:
        return _listen_shared(host, port, backlog, copies)
    for attempt in range(PICK_ATTEMPTS):
        probe = _bind(host, 0, 1, shared=False)
        picked = probe[0].getsockname()[1]
        for sock in probe:
            sock.close()
        try:
            return _listen_shared(host, picked, backlog, copies)
        except PortInUse:
            if attempt == PICK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _listen_shared(host: str, port: int, backlog: int, copies: int) -> list[Listeners]:
    with _start_lock(port):
        for sock in _bind(host, port, 1, shared=False):  # fails while anyone listens there
            sock.close()
        sets: list[Listeners] = []
        try:
            for _ in range(copies):
                sets.append(_bind(host, port, backlog, shared=True))
        except BaseException:
            for sockets in sets:
                for sock in sockets:
                    sock.close()
            raise
        return sets


@contextmanager
def _start_lock(port: int) -> Iterator[None]:
    """Held while a supervisor probes and binds, so two cannot interleave the two. Keyed
    by the port alone (any two addresses of one port may clash), in a directory only this
    user can write to, so no one else can block or redirect it."""
    import fcntl  # only supervisors lock, and only on POSIX systems

    path = os.path.join(_lock_directory(), f"port-{port}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, empty, for the next start


def _lock_directory() -> str:
    """$XDG_RUNTIME_DIR/rawsse (private by definition), else a directory of this user's
    own in the temporary directory, made 0700 and checked to be ours."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()
    directory = os.path.join(base, f"rawsse-{os.getuid()}")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    status = os.lstat(directory)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(errno.EPERM, f"{directory} is not a private directory of this user")
    return directory
