"""A child process that must not outlive its parent: a server's worker, a flood's reader."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger("rawsse")

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""


def stop_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when `parent` dies, however it dies (Linux;
    elsewhere nothing is done), so no orphan goes on alone: a worker serving the port with a
    log no one reads, a flood process holding its streams for no one."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
