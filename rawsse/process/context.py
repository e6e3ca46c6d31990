"""What a worker process is, as its supervisor hands it over: its seat at the shared log
(rawsse.broker.workers.LogSeat), the epoch of the ids (one for the whole server, so ids
agree across workers and survive a worker's restart) and its listening sockets (the
supervisor's, bound once for the port: see rawsse.reactor.listeners)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from rawsse.broker.workers import LogSeat


@dataclass(frozen=True)
class WorkerContext:
    seat: LogSeat
    epoch: str
    listeners: tuple[socket.socket, ...] = ()

    @property
    def index(self) -> int:
        return self.seat.index
