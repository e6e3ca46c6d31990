"""rawsse: a Server-Sent Events push server and embeddable reactor.

Embedding:

    from rawsse import Config, Server

    server = Server(Config(port=8080))
    await server.start()
    server.publish("news", "hello")            # from the loop's thread
    server.publish_threadsafe("news", "hi")    # from any thread
    await server.stop()

`run(config)` runs a server as a program until SIGTERM/SIGINT.

The names are loaded on first use, so importing the sans-I/O modules (rawsse.core) does
not pull in asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RESET_EVENT", "RETRY_EVENT", "Config", "Overloaded", "Server", "run"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from rawsse.config import Config
    from rawsse.core.hub import RESET_EVENT, RETRY_EVENT
    from rawsse.errors import Overloaded
    from rawsse.process.run import run
    from rawsse.reactor.server import Server

_HOMES = {
    "Config": "rawsse.config",
    "RESET_EVENT": "rawsse.core.hub",
    "RETRY_EVENT": "rawsse.core.hub",
    "Overloaded": "rawsse.errors",
    "run": "rawsse.process.run",
    "Server": "rawsse.reactor.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rawsse' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
