"""Reader processes for the benchmarks: each opens its share of SSE streams from its own
loopback source addresses and reads (and drops) everything until told to stop.

Plain selectors and non-blocking sockets, so the readers cost little next to the server.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import random
import selectors
import socket
import time

CONNECT_WINDOW = 512
"""Connections in flight at once while opening, so the server's backlog never overflows."""


WEBSOCKET_HEADERS = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: YmVuY2gtcmVhZGVyLWtleQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def run_readers(
    port: int,
    path: str,
    count: int,
    source: str,
    control: multiprocessing.connection.Connection,
    websocket: bool = False,
) -> None:
    """Open `count` streams, say "ready", then read until "stop"; answer "bytes" with the
    total read so far. With `websocket`, each stream is a WebSocket upgrade."""
    selector = selectors.DefaultSelector()
    upgrade = WEBSOCKET_HEADERS if websocket else ""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{upgrade}\r\n".encode()
    sockets: list[socket.socket] = []
    received = 0
    opening = 0
    while len(sockets) < count or opening:
        while len(sockets) < count and opening < CONNECT_WINDOW:
            sock = socket.socket()
            sock.bind((source, 0))
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            selector.register(sock, selectors.EVENT_WRITE, "connecting")
            sockets.append(sock)
            opening += 1
        for key, _ in selector.select(timeout=5):
            sock = key.fileobj  # type: ignore[assignment]
            if key.data == "connecting":
                sock.sendall(request)
                selector.modify(sock, selectors.EVENT_READ, "reading")
                opening -= 1
            else:
                received += len(sock.recv(1 << 20))
    control.send("ready")
    while True:
        for key, _ in selector.select(timeout=0.05):
            try:
                data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
            received += len(data)
        if control.poll():
            message = control.recv()
            if message == "stop":
                break
            control.send(received)
    for sock in sockets:
        sock.close()
    control.send(received)


class Readers:
    """`count` streams spread over `processes` reader processes, each with its own source
    address (127.0.N.2, 127.0.N.3, ... with N new for each run, so the ports left in
    TIME_WAIT by an earlier run are not in the way) so ephemeral ports never run out."""

    def __init__(self, port: int, path: str, count: int, processes: int = 2, websocket: bool = False) -> None:
        self._links: list[multiprocessing.connection.Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        context = multiprocessing.get_context("spawn")
        share = [count // processes + (1 if n < count % processes else 0) for n in range(processes)]
        network = random.randint(1, 254)
        for n, part in enumerate(share):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=run_readers,
                args=(port, path, part, f"127.0.{network}.{n + 2}", theirs, websocket),
                daemon=True,
            )
            process.start()
            self._links.append(ours)
            self._processes.append(process)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for link in self._links:
            if not link.poll(max(deadline - time.monotonic(), 0)):
                raise TimeoutError("readers did not connect in time")
            assert link.recv() == "ready"

    def received(self) -> int:
        for link in self._links:
            link.send("bytes")
        return sum(int(link.recv()) for link in self._links)

    def stop(self) -> int:
        total = 0
        for link in self._links:
            link.send("stop")
        for link in self._links:
            while True:
                value = link.recv()
                if value != "ready":
                    total += int(value)
                    break
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        return total
