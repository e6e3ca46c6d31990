"""Small helpers the bench scripts share."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

RAWSSE = [sys.executable, "-m", "rawsse"]
"""This checkout's rawsse, run by the interpreter the bench runs with (as `python -m`)."""

PAGE = os.sysconf("SC_PAGE_SIZE")


def stop_process(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Ask a server to stop (`sig`), and kill it if it has not within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a server's workers, nginx's, uvicorn's child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_bytes(pid: int) -> int:
    """A process's resident memory (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


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


def read_head(sock: socket.socket) -> bytes:
    """A response head (and whatever of the body came with it) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the head")
        data += chunk
    return data


def publish_one(sock: socket.socket, topic: str, n: int) -> None:
    """Publish event `n` of 115 bytes to `topic` on a kept-alive connection and read its
    whole answer before returning: one request in flight, as ordinary HTTP clients send."""
    body = f"topic={topic}&data=event-{n:08d}-{'x' * 100}".encode()
    sock.sendall(
        b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = read_head(sock)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"publish refused: {head[:60]!r}")
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    rest = head.split(b"\r\n\r\n", 1)[1]
    while len(rest) < length:
        rest += sock.recv(4096)
