"""Running a Server as a program: the event loop choice, signals and logging."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
from collections.abc import Callable

from rawsse.broker.workers import WorkerContext
from rawsse.config import Config
from rawsse.reactor.server import Server

log = logging.getLogger("rawsse")


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop to run on: uvloop when asked or available ("auto"), else the stdlib's."""
    if choice in ("auto", "uvloop") and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        return "uvloop", uvloop.new_event_loop
    if choice == "uvloop":
        raise RuntimeError("uvloop is not installed (pip install uvloop)")
    return "asyncio", asyncio.new_event_loop


def run(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. With `--workers` above
    one, this process becomes the supervisor of that many worker processes. Raises
    OSError when the port cannot be served (PortInUse when another server has it), and
    WorkersFailed when workers cannot be started."""
    _configure_logging(config)
    if config.worker_count() > 1:
        from rawsse.process.supervisor import Supervisor

        Supervisor(config).run()
        return
    _run_loop(config, None, lambda: None)


def serve_worker(config: Config, worker: WorkerContext, ready: Callable[[], object]) -> None:
    """A worker process's life, forked by the supervisor; `ready()` once it serves."""
    _run_loop(config, worker, ready)


def _configure_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _run_loop(config: Config, worker: WorkerContext | None, ready: Callable[[], object]) -> None:
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
    log.info(
        "rawsse%s listening on http://%s:%d (%s loop, %s streams, up to %d connections)",
        "" if worker is None else f" worker {worker.index} (pid {os.getpid()})",
        config.host,
        server.port,
        loop_name,
        server.streams_kind,
        server.connection_limit,
    )
    ready()
    await server.serve_forever()
    if stopping:
        await stopping[0]
    log.info("stopped")
