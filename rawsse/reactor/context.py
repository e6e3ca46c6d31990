"""What an HTTP connection may use of the server: the narrow context handed to each one,
so that the connection and the server never import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rawsse.core.api import Api
from rawsse.core.connection import Timeouts
from rawsse.core.http import HttpLimits
from rawsse.core.metrics import Metrics
from rawsse.reactor.effects import EffectRunner
from rawsse.reactor.streams import Streams

if TYPE_CHECKING:
    from rawsse.reactor.protocol import HttpProtocol


@dataclass
class ConnectionContext:
    api: Api
    runner: EffectRunner
    streams: Streams
    metrics: Metrics
    limits: HttpLimits
    timeouts: Timeouts
    clock: Callable[[], float]
    connection_limit: int
    """Connections (streams and requests) before new ones are turned away."""
    shed_capacity: int
    """Connections over the limit whose request is read, to answer "come back later"."""
    connections: set[HttpProtocol] = field(default_factory=set)
    """Open HTTP connections (not streams): the sweep checks their deadlines."""
    shedding: int = 0
    """How many of them are over the limit now."""

    @property
    def connection_count(self) -> int:
        return len(self.connections) + self.streams.count
