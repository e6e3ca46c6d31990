"""This process's own figures for /metrics — resident memory, open descriptors, CPU time
— as every Prometheus client library gives a process's: read from the kernel once a second
by the server's sweep, so a worker shares them with the others like its counters."""

from __future__ import annotations

import os
import sys

from rawsse.core.metrics import Metrics


def sample(metrics: Metrics) -> None:
    metrics.process_resident_bytes = _resident_bytes()
    metrics.process_open_fds = _open_fds()
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
    """Counted in the kernel's own listing (a few milliseconds at 20,000 descriptors,
    once a second)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing)) - 1  # less the one the listing itself opened
        except OSError:
            continue
    return 0
