"""The data directory of `--data-dir`: held by one server at a time, recognized as ours,
of a format this version can read.

    DIR/rawsse.lock     flock'ed while a server runs (the kernel drops it when the
                        holder dies, so a killed server never locks the next one out)
    DIR/events.db       the SQLite database (with its -wal and -shm files beside it)

A directory that holds other files but no database is not ours: refused, so that a typo
in --data-dir never writes into someone else's directory. An empty or missing one is
made (mode 0700: events are users' messages).
"""

from __future__ import annotations

import fcntl
import os

from rawsse.errors import StoreUnusable

LOCK_NAME = "rawsse.lock"
DATABASE_NAME = "events.db"
OURS = {LOCK_NAME, DATABASE_NAME, f"{DATABASE_NAME}-wal", f"{DATABASE_NAME}-shm"}


class DataDirectory:
    """A data directory, held: `database` is the path of its database."""

    def __init__(self, path: str) -> None:
        self.path = path
        _prepare(path)
        self._lock_fd = _hold(path)
        self.database = os.path.join(path, DATABASE_NAME)

    def release(self) -> None:
        os.close(self._lock_fd)  # drops the flock


def _prepare(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        names = set(os.listdir(path))
    except OSError as exc:
        raise StoreUnusable(f"cannot use the data directory {path}: {exc.strerror}") from None
    if names and DATABASE_NAME not in names and not names <= OURS:
        raise StoreUnusable(
            f"the data directory {path} holds files but no {DATABASE_NAME}: it is not a rawsse "
            "data directory (give an empty or new one)"
        )
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StoreUnusable(f"cannot read and write the data directory {path}")


def _hold(path: str) -> int:
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnusable(f"cannot open {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreUnusable(f"another server is using the data directory {path}") from None
    return fd
