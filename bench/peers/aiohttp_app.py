"""aiohttp with aiohttp-sse: `python bench/peers/aiohttp_app.py PORT` (on uvloop)."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

import uvloop
from aiohttp import web
from aiohttp_sse import sse_response

subscribers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)


async def events(request: web.Request) -> web.StreamResponse:
    topics = request.query.getall("topic", [])
    queue: asyncio.Queue[str] = asyncio.Queue()
    for topic in topics:
        subscribers[topic].add(queue)
    try:
        async with sse_response(request) as response:
            while response.is_connected():
                await response.send(await queue.get())
    finally:
        for topic in topics:
            subscribers[topic].discard(queue)
    return response


async def publish(request: web.Request) -> web.Response:
    form = await request.post()
    data = str(form["data"])
    for topic in form.getall("topic", []):
        for queue in subscribers.get(str(topic), ()):
            queue.put_nowait(data)
    return web.json_response({"ok": True})


def main() -> None:
    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_post("/publish", publish)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=4096, access_log=None)


if __name__ == "__main__":
    main()
