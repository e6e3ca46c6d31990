"""The broker interface the server relies on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from rawsse.core.hub import Hub
from rawsse.core.publish import PublishItem
from rawsse.errors import RawsseError

Outcome = list[str] | RawsseError
"""What a publish comes to: the events' ids, or the error that refused them all."""


class Broker(ABC):
    """Numbers published events in one order and hands them, in that order, to the hub
    of every process that serves streams."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @abstractmethod
    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        """Give `items` their places in the order, all or none, then call `done` with
        their ids, or with the error that refused them (Overloaded, EventTooLarge,
        BrokerUnavailable). The brokers of one machine call it before they return; one
        behind a network hop, after its round trip."""

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Connect, and load the history a resume may need; called before listening."""

    async def stop(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and shared resources."""

    def sweep(self) -> None:  # noqa: B027 (optional hook)
        """Called once a second by the server's sweep."""

    def unready_reason(self) -> str | None:
        """Why this process cannot take publishes now (for /readyz), or None."""
        return None

    def worker_metrics(self) -> list[list[int]] | None:
        """Each worker's shared counters, where there are workers (see Metrics.render)."""
        return None

    def process_count(self) -> int:
        """How many processes take this order (each answers a presence ask)."""
        return 1

    worker_label: str | None = None
    """Which worker process this is, where there are several: sent to each stream in the
    `X-Rawsse-Worker` header, so a load client can tell the workers' latencies apart."""

    shares_order = False
    """True when other processes deliver the same events, so a client may resume here with
    an id this process has not taken yet."""


def publish_now(broker: Broker, items: Sequence[PublishItem]) -> list[str]:
    """Publish with a broker of this machine, which answers before it returns; raises
    what refused the items."""
    outcome: list[Outcome] = []
    broker.publish(items, outcome.append)
    if not outcome:
        raise RuntimeError("this broker answers after a round trip: publish through POST /publish")
    if isinstance(outcome[0], RawsseError):
        raise outcome[0]
    return outcome[0]
