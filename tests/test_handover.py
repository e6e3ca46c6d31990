"""The fd hand-over the epoll reactor relies on: duplicating a transport's socket and
aborting the transport leaves the connection intact, in both directions, on both loops."""

from __future__ import annotations

import asyncio
import os

import pytest

from rawsse.process.single import loop_factory

KIND = "integration"


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_duplicate_then_abort_keeps_the_connection(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handed: asyncio.Future[int] = loop.create_future()
        lost: asyncio.Future[None] = loop.create_future()

        class Handing(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                fd = os.dup(self.transport.get_extra_info("socket").fileno())
                self.transport.abort()
                handed.set_result(fd)

            def connection_lost(self, exc: Exception | None) -> None:
                lost.set_result(None)

        server = await loop.create_server(Handing, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        fd = await asyncio.wait_for(handed, 10)
        await asyncio.wait_for(lost, 10)  # the loop is done with its transport...
        os.write(fd, b"from the duplicate\n")  # ...yet the connection lives on
        assert await asyncio.wait_for(reader.readline(), 10) == b"from the duplicate\n"
        writer.write(b"back")
        await writer.drain()
        readable = loop.create_future()
        loop.add_reader(fd, readable.set_result, None)
        await asyncio.wait_for(readable, 10)
        loop.remove_reader(fd)
        assert os.read(fd, 100) == b"back"
        os.close(fd)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # our close ends it cleanly
        writer.close()
        server.close()

    with asyncio.Runner(loop_factory=loop_factory(loop_name)[1]) as runner:
        runner.run(main())
