"""rawsse: a Server-Sent Events push server and embeddable reactor.

Embedding:

    from rawsse import Config, Server

    server = Server(Config(port=8080))
    await server.start()
    server.publish("news", "hello")            # from the loop's thread
    server.publish_threadsafe("news", "hi")    # from any thread
    await server.stop()

`run(config)` runs a server as a program until SIGTERM/SIGINT.

The names are loaded on first use, so importing the sans-I/O modules (rawsse.proto) does
not pull in asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RESET_EVENT", "RETRY_EVENT", "Config", "Overloaded", "Server", "run"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from rawsse.config import Config
    from rawsse.hub.hub import RESET_EVENT, RETRY_EVENT, Overloaded
    from rawsse.reactor.main import run
    from rawsse.reactor.server import Server

_HOMES = {
    "Config": "rawsse.config",
    "RESET_EVENT": "rawsse.hub.hub",
    "RETRY_EVENT": "rawsse.hub.hub",
    "Overloaded": "rawsse.hub.hub",
    "run": "rawsse.reactor.main",
    "Server": "rawsse.reactor.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rawsse' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
