"""sse-starlette on uvicorn: `uvicorn bench.peers.starlette_app:app --loop uvloop --http httptools`."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

subscribers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)


async def events(request: Request) -> EventSourceResponse:
    topics = request.query_params.getlist("topic")
    queue: asyncio.Queue[str] = asyncio.Queue()
    for topic in topics:
        subscribers[topic].add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            for topic in topics:
                subscribers[topic].discard(queue)

    return EventSourceResponse(stream())


async def publish(request: Request) -> JSONResponse:
    form = await request.form()
    data = str(form["data"])
    for topic in form.getlist("topic"):
        for queue in subscribers.get(str(topic), ()):
            queue.put_nowait(data)
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/events", events), Route("/publish", publish, methods=["POST"])])
