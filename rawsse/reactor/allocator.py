"""Giving the C allocator's slack back to the system after a burst of connections.

Each new stream passes through short-lived objects (its request and headers; on the
ordinary path also a transport, a protocol and a parser) that are freed once it is open;
after thousands of connects the allocator keeps the pages they used, so the process looks
as if every idle stream cost more than it does.
glibc's malloc_trim(0) returns those pages. It walks the heap, so it is called only once a
burst is over — many streams opened or closed since the last trim, few in the last
second — and at most every TRIM_INTERVAL seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_AFTER = 1000
"""Streams opened or closed since the last trim that make a burst worth trimming after."""

TRIM_QUIET = 100
"""At most this many in the last second: the burst is over."""

TRIM_INTERVAL = 5.0
"""Seconds between two trims, at least (a trim of a heap of 100 MB takes about a
millisecond: see bench/RESULTS.md)."""


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        return None
    return function


class Trimmer:
    def __init__(self, trim: Callable[[int], int] | None = None) -> None:
        """`trim`: malloc_trim itself, unless given (a test's)."""
        self._trim = trim or _malloc_trim()
        self._churn_at_trim = 0
        self._churn_before = 0
        self._trimmed_at = float("-inf")
        self.trims = 0

    def trim_now(self, now: float) -> None:
        """Give the slack back at once: once the server has started, what loading it left
        (so the memory a burst of streams adds is not hidden by slack given back later)."""
        if self._trim is not None:
            self._trim(0)
            self._trimmed_at = now
            self.trims += 1

    def sweep(self, churn: int, now: float) -> None:
        """Called once a second with the count of streams opened and closed so far."""
        recent = churn - self._churn_before
        self._churn_before = churn
        if (
            self._trim is not None
            and churn - self._churn_at_trim >= TRIM_AFTER
            and recent <= TRIM_QUIET
            and now - self._trimmed_at >= TRIM_INTERVAL
        ):
            self._trim(0)
            self._churn_at_trim = churn
            self._trimmed_at = now
            self.trims += 1
