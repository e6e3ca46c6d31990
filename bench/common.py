"""Small helpers the bench scripts share."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int) -> bool:
    """True once something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tcp_kernel_memory() -> tuple[int, int]:
    """(TCP buffer pages from /proc/net/sockstat, bytes of TCP socket objects in the slab
    from /proc/slabinfo, or -1 where that file is not readable)."""
    pages = 0
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            pages = int(fields[fields.index("mem") + 1])
    slab = -1
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "TCP":
                slab = int(fields[1]) * int(fields[3])
    except OSError:
        pass
    return pages, slab
