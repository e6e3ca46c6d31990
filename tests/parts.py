"""Parts of a server built for unit tests as the composition root builds them, without a
loop: an in-memory broker delivering to its hub, and the effect runner over it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from rawsse.broker.base import BrokerNeeds
from rawsse.broker.memory import MemoryBroker
from rawsse.core.acks import NoAcks
from rawsse.core.events import Event, EventEncoder
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.presence import local_tally
from rawsse.reactor.effects import EffectRunner, Publishing
from rawsse.reactor.presence import PresenceBoard


class HubSink:
    """The broker's sink for a hub without streams: events go to history and the queue
    (a test takes its batches itself)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.losses = 0

    def deliver(self, events: list[Event]) -> None:
        self.hub.accept(events)

    def preload(self, events: Iterable[Event], dropped_before: int) -> None:
        self.hub.preload(events, dropped_before)

    def lost(self, dropped_before: int) -> None:
        self.losses += 1


def memory_broker(
    hub: Hub, clock: Callable[[], float] = time.monotonic, max_event_bytes: int = 1 << 62
) -> MemoryBroker:
    """A started in-memory broker delivering to `hub`, numbering with its id scheme."""
    broker = MemoryBroker(BrokerNeeds(EventEncoder(hub.ids, max_event_bytes), clock, hub))
    asyncio.run(broker.start(HubSink(hub)))
    return broker


def effect_runner(
    broker: MemoryBroker, hub: Hub, metrics: Metrics, close_topics: Callable[[tuple[str, ...]], int]
) -> EffectRunner:
    """The effect runner over `broker`, for effects that never wait on the loop's timer."""
    publishing = Publishing(broker, metrics)
    local = lambda topic: local_tally(hub.subscriptions, [None] * hub.subscriptions.capacity, topic)  # noqa: E731
    presence = PresenceBoard(None, publishing.put_words, broker.process_count, local)  # type: ignore[arg-type]
    return EffectRunner(publishing, hub, close_topics, None, presence, NoAcks())  # type: ignore[arg-type]
