"""Our framing read by parsers we did not write: httpx-sse (and, with it, httpx's HTTP/1.1)."""

from __future__ import annotations

import httpx
import httpx_sse

from rawsse.reactor.server import Server
from tests.helpers import publish, run_with_server

KIND = "integration"

PAYLOADS = ["plain", "two\nlines", "crlf\r\nline", "cr\ronly", "  leading spaces", "", "ünïcödé ✓ 🎉"]


def test_httpx_sse_reads_every_event_intact(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        url = f"http://127.0.0.1:{server.port}/events?topic=a&topic=b"
        async with (
            httpx.AsyncClient(timeout=10) as client,
            httpx_sse.aconnect_sse(client, "GET", url) as source,
        ):
            assert source.response.headers["content-type"] == "text/event-stream"
            ids = []
            for n, data in enumerate(PAYLOADS):
                ids.append(await publish(server.port, "ab"[n % 2], data, event=f"kind{n}" if n % 3 else None))
            received = []
            async for sse in source.aiter_sse():
                received.append(sse)
                if len(received) == len(PAYLOADS):
                    break
        expected = [p.replace("\r\n", "\n").replace("\r", "\n") for p in PAYLOADS]
        assert [sse.data for sse in received] == expected
        assert [sse.id for sse in received] == ids
        assert [sse.event for sse in received] == [
            f"kind{n}" if n % 3 else "message" for n in range(len(PAYLOADS))
        ]
        assert received[0].retry == 3000

    run_with_server(backend, scenario)
