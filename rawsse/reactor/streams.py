"""The streams of one process, as the rest of the server sees them: one face over the
three parts that do the work, built together by `build_streams`.

- rawsse.reactor.registry: each stream's life (open, close, release) over the slot table;
- rawsse.reactor.fanout: the passes that write queued events, heartbeats, keep-alive;
- rawsse.reactor.actions: what a WebSocket client's frames, an ended authorization and a
  kick come to, as the core decides.

This face is also what a stream backend reports to (StreamEvents): a stream to close, a
stream's bytes all out, a WebSocket client's input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from rawsse.auth.ledger import Ledger
from rawsse.auth.rules import NO_TOPICS
from rawsse.broker.base import Publish
from rawsse.core.acks import AckBook, NoAcks
from rawsse.core.control import PresenceAnswer, PresenceAsk
from rawsse.core.effects import OpenStream
from rawsse.core.hub import FANOUT_SLICE, Delivery, Hub
from rawsse.core.metrics import Metrics
from rawsse.core.slots import SEND_TIMEOUT, SlotTable, Why
from rawsse.core.ws.session import Sessions
from rawsse.reactor.actions import Acknowledging, AskApp, StreamActions
from rawsse.reactor.fanout import Fanout
from rawsse.reactor.presence import PresenceEvents
from rawsse.reactor.registry import Backend, Quiet, StreamRegistry


@dataclass(frozen=True, slots=True)
class StreamLimits:
    send_timeout: float = SEND_TIMEOUT
    slice_size: int = FANOUT_SLICE


class StreamEvents(Protocol):
    """What a backend reports of the streams it holds (Streams is this), given to the
    backend when it starts: a backend is started last, once what it reports to is built."""

    def close(self, slot: int, why: Why) -> None:
        """A stream must close: its client went away, or is too slow."""
        ...

    def drained(self) -> None:
        """A stream's pending bytes are all out."""
        ...

    def receive(self, slot: int, data: bytes) -> None:
        """A WebSocket stream's client sent `data` (SSE streams' input is read and dropped)."""
        ...


class Streams:
    def __init__(
        self,
        registry: StreamRegistry,
        fanout: Fanout,
        actions: StreamActions,
        quiet: Quiet,
        limits: StreamLimits,
    ) -> None:
        self.registry, self.fanout, self.actions = registry, fanout, actions
        self._quiet = quiet
        self._limits = limits
        self.table = registry.table
        self.backend = registry.backend
        self.subscriptions = registry.subscriptions

    @property
    def count(self) -> int:
        return self.registry.count

    def open(self, transport: asyncio.Transport, stream: OpenStream, early: bytes = b"") -> None:
        """Make the connection the stream the API decided on. Raises OSError when no
        slot can be had; the connection is then untouched."""
        slot = self.registry.open(transport, stream)
        if early:
            self.actions.receive(slot, early)

    def open_slot(self, slot: int, stream: OpenStream, early: bytes = b"") -> None:
        """The same, for a connection the backend holds already (accepted on the raw
        path). A WebSocket's `early` bytes are what its client sent before the 101."""
        self.registry.open_slot(slot, stream)
        if early:
            self.actions.receive(slot, early)

    # What a backend reports

    def close(self, slot: int, why: Why) -> None:
        self.registry.close(slot, why)

    def drained(self) -> None:
        self._quiet.wake()

    def receive(self, slot: int, data: bytes) -> None:
        self.actions.receive(slot, data)

    # What the server asks

    def schedule(self) -> None:
        """Events were queued in the hub: a pass is to take them."""
        self.fanout.schedule()

    def heartbeat(self) -> None:
        self.fanout.heartbeat()

    def announce(self, deliveries: list[Delivery]) -> None:
        self.fanout.announce(deliveries)

    def close_topics(self, topics: Iterable[str]) -> int:
        return self.registry.close_topics(topics)

    def close_websockets(self, frame: bytes) -> None:
        self.registry.close_websockets(frame)

    def sweep(self, now: float) -> None:
        """Once a second: the streams whose bytes made no progress, the WebSocket streams
        whose client did not answer our close in time, and those whose token expired."""
        self.registry.sweep(now, self._limits.send_timeout)
        self.actions.expire()

    @property
    def has_pending(self) -> bool:
        return bool(self.table.pending)

    async def drain(self, timeout: float) -> bool:
        """Wait until no pass runs, no stream has pending bytes and no WebSocket awaits
        its client's close; False on timeout."""
        registry, fanout = self.registry, self.fanout
        return await self._quiet.wait(
            lambda: not (fanout.busy or self.has_pending or registry.closing), timeout
        )

    def close_all(self) -> None:
        """Close every stream now, abandoning a pass still running (at shutdown, once the
        grace period is over), and release the backend."""
        self.fanout.stop()
        self.registry.close_every_stream()
        self.backend.dispose()
        self._quiet.wake()


def build_streams(
    loop: asyncio.AbstractEventLoop,
    hub: Hub,
    metrics: Metrics,
    limits: StreamLimits,
    table: SlotTable,
    backend: Backend,
    sessions: Sessions,
    publish: Publish,
    catch_up: Callable[[], None],
    on_word: Callable[[PresenceAsk | PresenceAnswer], None],
    ledger: Ledger,
    wall: Callable[[], float] = time.time,
    ask_app: AskApp | None = None,
    announcer: PresenceEvents | None = None,
    acks: AckBook | None = None,
) -> Streams:
    """The streams' parts, each built with its collaborators, in the order they need.
    `table` releases the columns of `sessions` and `ledger` (and the subscriptions').
    `announcer` publishes the join and leave events of --presence-events (none without);
    `catch_up` is the broker's (rawsse.broker.base.Broker.catch_up); `acks` keeps private
    topics' acknowledgements (none without a durable store)."""
    quiet = Quiet()
    announcer = announcer or PresenceEvents(NO_TOPICS, publish)  # disabled: never publishes
    registry = StreamRegistry(
        loop.time, table, hub.subscriptions, backend, sessions, ledger, metrics, announcer, quiet
    )
    actions = StreamActions(
        registry,
        sessions,
        ledger,
        metrics,
        publish,
        catch_up,
        announcer,
        on_word,
        wall,
        Acknowledging(acks or NoAcks(), hub, catch_up),
        ask_app,
    )
    fanout = Fanout(loop, hub, registry, sessions, metrics, quiet, actions.on_word, limits.slice_size)
    return Streams(registry, fanout, actions, quiet, limits)
