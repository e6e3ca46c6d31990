"""What an HTTP connection may use of the server: the narrow context handed to each one,
so that the connection and the server never import each other."""

from __future__ import annotations

import enum
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


class Admission(enum.Enum):
    SERVE = "serve"
    SHED = "shed"
    """Over the limit: its request is read and answered "come back later"."""
    DROP = "drop"
    """Over the limit and over the shedding capacity: closed unanswered."""


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
    arriving: int = 0
    """Connections the raw path holds (rawsse.reactor.raw_requests): waiting for a request,
    kept alive between requests, or lingering after their last answer."""
    handing_over: int = 0
    """Connections the raw path handed to the loop that it has not made yet."""

    @property
    def connection_count(self) -> int:
        return len(self.connections) + self.streams.count + self.arriving + self.handing_over

    def admit(self) -> Admission:
        """What becomes of a connection just accepted."""
        if self.connection_count < self.connection_limit:
            return Admission.SERVE
        if self.shedding >= self.shed_capacity:
            # No answer at all: a dropped connection is a network error, after which
            # EventSource reconnects by itself (a 503 would end it for good), and the
            # descriptor goes back at once, so the refusals cannot exhaust them.
            self.metrics.connections_dropped += 1
            return Admission.DROP
        return Admission.SHED
