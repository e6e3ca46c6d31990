"""One server process: the event loop it runs on, its signals, its life from start to stop
(a single-process server, or one worker of a supervisor)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from rawsse.config import Config
from rawsse.reactor.server import Server

if TYPE_CHECKING:
    from rawsse.process.context import WorkerContext

log = logging.getLogger("rawsse")


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop to run on: uvloop when asked or available ("auto"), else the stdlib's. A
    missing uvloop that was asked for is refused by rawsse.preflight, before this."""
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return "asyncio", asyncio.new_event_loop
    import uvloop

    return "uvloop", uvloop.new_event_loop


def serve(
    config: Config, worker: WorkerContext | None = None, ready: Callable[[], object] = lambda: None
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reads the token
    keys again; `ready()` once serving (a worker tells its supervisor so)."""
    name, factory = loop_factory(config.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(config, name, worker, ready))


async def _serve(
    config: Config, loop_name: str, worker: WorkerContext | None, ready: Callable[[], object]
) -> None:
    server = Server(config, worker)
    await server.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        if not stopping:
            log.info("%s: shutting down", signal.Signals(signum).name)
            stopping.append(loop.create_task(server.stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if hasattr(signal, "SIGHUP"):  # rotate token keys without a restart
        loop.add_signal_handler(signal.SIGHUP, server.reload_keys)
    who = "" if worker is None else f" worker {worker.index} (pid {os.getpid()})"
    line = (
        f"rawsse{who} listening on http://{config.host}:{server.port} ({loop_name} loop, "
        f"{server.streams_kind} streams, up to {server.connection_limit} connections)"
    )
    if log.isEnabledFor(logging.INFO):
        log.info(line)
    elif worker is None:  # the address a user needs (the port picked for --port 0), whatever the level
        print(line, file=sys.stderr, flush=True)
    ready()
    await server.serve_forever()
    if stopping:
        await stopping[0]
    log.info("stopped")
