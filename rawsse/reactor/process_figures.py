"""This process's own figures for /metrics — resident memory, open descriptors, CPU time
— as every Prometheus client library gives a process's: read from the kernel once a second
by the server's sweep, so a worker shares them with the others like its counters."""

from __future__ import annotations

import os
import sys

from rawsse.core.metrics import Metrics

FDS_LISTED_PER_SECOND = 2000
"""Descriptors listed per second of the sweep at most: the open-descriptor count is taken
once a second while a process holds up to this many, and less often beyond (every 10 s at
20,000), so that fifty workers holding a million streams between them do not spend a
tenth of the machine listing their descriptors."""


class ProcessFigures:
    """Samples the figures in the once-a-second sweep."""

    def __init__(self) -> None:
        self._fds_due = 0.0

    def sample(self, metrics: Metrics, now: float) -> None:
        metrics.process_resident_bytes = _resident_bytes()
        if now >= self._fds_due:
            count = metrics.process_open_fds = _open_fds()
            self._fds_due = now + max(1.0, count / FDS_LISTED_PER_SECOND) - 0.5  # a sweep's slack
        times = os.times()
        metrics.process_cpu_micros = int((times.user + times.system) * 1e6)


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc (macOS, the BSDs): the peak instead
        pass
    try:
        import resource  # POSIX only
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _open_fds() -> int:
    """Counted in the kernel's own listing (a few milliseconds at 20,000 descriptors), an
    entry at a time: a list of every name would cost about 60 bytes per descriptor while
    it lives, memory the interpreter keeps afterwards, so it would count as every
    stream's."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            with os.scandir(listing) as entries:
                return sum(1 for _ in entries) - 1  # less the one the listing itself opened
        except OSError:
            continue
    return 0
