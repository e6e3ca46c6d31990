"""The broker interface the server and the API rely on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence

from rawsse.core.hub import Hub
from rawsse.core.publish import PublishItem


class Broker(ABC):
    """Numbers published events in one order and hands them, in that order, to the hub
    of every process that serves streams.

    `publish` either answers at once (the ids) or, for a broker behind a network hop,
    returns an awaitable of the ids. It accepts a batch whole or not at all and raises
    rawsse.Overloaded, EventTooLarge or BrokerUnavailable (or the awaitable does).
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

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

    worker_label: str | None = None
    """Which worker process this is, where there are several: sent to each stream in the
    `X-Rawsse-Worker` header, so a load client can tell the workers' latencies apart."""

    shares_order = False
    """True when other processes deliver the same events, so a client may resume here with
    an id this process has not taken yet."""

    def wait_taken(self, sequence: int, timeout: float) -> Awaitable[None]:
        """Resolves once this process has taken `sequence`, or after `timeout` seconds."""
        import asyncio  # here, not at the top: the API imports this module and stays sans-I/O

        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def finished(_: object) -> None:  # resolved, timed out, or the client went away
            timer.cancel()
            self.hub.forget(resolve)

        self.hub.when_taken(sequence, resolve)
        timer = loop.call_later(timeout, resolve)
        done.add_done_callback(finished)
        return done

    @abstractmethod
    def publish(self, items: Sequence[PublishItem]) -> list[str] | Awaitable[list[str]]: ...
