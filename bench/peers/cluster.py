"""Two rawsse nodes clustered over a private redis-server, as one bench "server".

    python bench/peers/cluster.py PORT1 PORT2

Runs until SIGTERM, then stops the nodes and Redis. The bench measures the whole tree
(Redis included) for memory and CPU."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ports = [int(p) for p in sys.argv[1:]]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        redis_port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    children = [
        subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", redis_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    broker = f"redis://127.0.0.1:{redis_port}/0"
    for port in ports:
        command = [sys.executable, "-m", "rawsse", "serve", "--log-level", "warning", "--port", str(port)]
        children.append(subprocess.Popen([*command, "--broker", broker]))
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for child in reversed(children):
        child.terminate()
        child.wait()
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
