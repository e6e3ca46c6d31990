"""rawsse: a Server-Sent Events push server and embeddable reactor.

Embedding:

    from rawsse import Config, Server

    server = Server(Config(port=8080))
    await server.start()
    server.publish("news", "hello")            # from the loop's thread
    server.publish_threadsafe("news", "hi")    # from any thread
    await server.stop()

`run(config)` runs a server as a program until SIGTERM/SIGINT.
"""

from rawsse.config import Config
from rawsse.hub.hub import RESET_EVENT, Overloaded
from rawsse.reactor.main import run
from rawsse.reactor.server import Server

__all__ = ["RESET_EVENT", "Config", "Overloaded", "Server", "run"]
__version__ = "0.1.0"
