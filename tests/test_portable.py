"""The transport backend is the portable fallback: on a machine without epoll or kqueue,
without uvloop and without the POSIX-only modules the workers and the fd limit use,
rawsse still serves streams in one process. Such a machine is staged by hiding those
modules from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

KIND = "integration"

STAGED = """
import sys
import select
for name in ("fcntl", "mmap", "resource", "uvloop"):
    sys.modules[name] = None  # as if this platform had none of them
for name in ("epoll", "kqueue"):
    if hasattr(select, name):
        delattr(select, name)

import asyncio
from rawsse import Config, Server

async def main():
    server = Server(Config(port=0, heartbeat=60))
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /events?topic=t HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
    await reader.readuntil(b"retry: 3000\\n")
    event_id = server.publish("t", "portable")
    event = await asyncio.wait_for(reader.readuntil(b"\\n\\n"), 10)
    assert event == f"id: {event_id}\\ndata: portable\\n\\n".encode(), event
    writer.close()
    await server.stop()
    print(server.streams_kind)

asyncio.run(main())
"""


def test_a_machine_without_epoll_uvloop_or_posix_extras_still_serves_streams() -> None:
    finished = subprocess.run([sys.executable, "-c", STAGED], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "transport"
