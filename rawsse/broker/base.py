"""The broker interface the server relies on."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from rawsse.core.events import Event, EventEncoder
from rawsse.core.publish import PublishItem
from rawsse.errors import RawsseError

Outcome = list[str] | RawsseError
"""What a publish comes to: the events' ids, or the error that refused them all."""


class EventSink(Protocol):
    """Where a broker hands the events of the order, in that order: the process that
    serves streams (rawsse.reactor.intake.Intake)."""

    def deliver(self, events: list[Event]) -> None:
        """Numbered, encoded events, for history and the next fan-out pass."""
        ...

    def preload(self, events: Iterable[Event], dropped_before: int) -> None:
        """Events published before this process started, for history alone (so a resume
        works here too); `dropped_before` is the highest sequence known to be gone."""
        ...

    def lost(self, dropped_before: int) -> None:
        """Events up to `dropped_before` that this process had not read are gone from the
        order: every stream is to reconnect and resume, and be told (a reset) rather than
        silently miss them."""
        ...


class Room(Protocol):
    """Whether the fan-out can take more events now (the hub's queue)."""

    @property
    def overloaded(self) -> bool: ...

    def check_room(self) -> None:
        """Raise Overloaded while it cannot."""
        ...


class Reach(enum.Enum):
    """Which processes a broker's order spans."""

    PROCESS = "process"
    """This process alone (the in-memory broker)."""
    WORKERS = "workers"
    """The workers of one supervisor, over their shared log."""
    CLUSTER = "cluster"
    """Every node on the same Redis."""


Publish = Callable[[Sequence[PublishItem], Callable[[Outcome], None]], None]
"""A way to put items in the order, answered with their ids or what refused them: a
broker's `publish`, or one of rawsse.reactor.effects.Publishing's, handed to a part."""


class BrokerNeeds(NamedTuple):
    """What every broker is given, and no more: never the hub."""

    encoder: EventEncoder
    """Encodes each event once; it holds the id scheme (`encoder.ids`)."""
    clock: Callable[[], float]
    room: Room
    """Whether the fan-out can take more events now."""


class Broker(ABC):
    """Numbers published events in one order and hands them, in that order, to the sink
    of every process that serves streams. It is given what it needs, never the hub: an
    encoder, a clock, and the room the fan-out has.

    The sink is given at `start`: the sink's process publishes through this broker, so
    one of the two must come first, and the order is the broker's (as a Go hub's broker
    is run with its event handler). Nothing is delivered before `start`."""

    def __init__(self, needs: BrokerNeeds) -> None:
        self.encoder, self.clock, self.room = needs
        self._sink: EventSink | None = None

    @property
    def sink(self) -> EventSink:
        assert self._sink is not None, "start(sink) first"
        return self._sink

    @abstractmethod
    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        """Give `items` their places in the order, all or none, then call `done` with
        their ids, or with the error that refused them (Overloaded, EventTooLarge,
        BrokerUnavailable). The brokers of one machine call it before they return; one
        behind a network hop, after its round trip."""

    def publish_now(self, items: Sequence[PublishItem]) -> list[str]:
        """`publish` for a broker of this machine (`answers_at_once`), which answers before
        it returns: the ids, or raises what refused the items."""
        raise RuntimeError("this broker answers after a round trip: publish through POST /publish")

    async def start(self, sink: EventSink) -> None:
        """Deliver to `sink` from now on; connect, and load the history a resume may need
        (a broker that does, after calling this). Called before listening."""
        self._sink = sink

    async def stop(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and shared resources."""

    def sweep(self) -> None:  # noqa: B027 (optional hook)
        """Called once a second by the server's sweep."""

    def settle(self) -> None:  # noqa: B027 (optional hook)
        """Finish what this loop turn's publishes wait for (a group commit), delivering
        and answering them now: called where a batch of requests was read, so that their
        answers go out together, in the same turn (a broker whose publishes are answered
        at once, or after a round trip, has nothing to do)."""

    def catch_up(self) -> None:  # noqa: B027 (optional hook)
        """Hand the sink what the order holds now and this process has not read: called
        before a stream is decided on, so that what was published before it is history
        here, not live (a broker that delivers as events come has nothing to do)."""

    def unready_reason(self) -> str | None:
        """Why this process cannot take publishes now (for /readyz), or None."""
        return None

    def worker_metrics(self) -> list[list[int]] | None:
        """Each worker's shared counters, where there are workers (see Metrics.render)."""
        return None

    def process_count(self) -> int:
        """How many processes take this order (each answers a presence ask)."""
        return 1

    reach = Reach.PROCESS
    """Which processes take this order (the dashboard asks, rather than guessing)."""

    worker_label: str | None = None
    """Which worker process this is, where there are several: sent to each stream in the
    `X-Rawsse-Worker` header, so a load client can tell the workers' latencies apart."""

    @property
    def shares_order(self) -> bool:
        """True when other processes deliver the same events, so a client may resume here
        with an id this process has not taken yet."""
        return self.reach is not Reach.PROCESS

    @property
    def answers_at_once(self) -> bool:
        """`publish` calls `done` before it returns: a broker of this machine (one process
        or its workers) that does not wait for its turn's commit (`settle`), not one whose
        answer comes after a network round trip."""
        return self.reach is not Reach.CLUSTER

    @property
    def local(self) -> bool:
        """A broker of this machine: `publish_now` answers before it returns."""
        return self.reach is not Reach.CLUSTER


class LocalBroker(Broker):
    """A broker of this machine: it puts items in the order before it returns
    (`publish_now`), and `publish` answers from that."""

    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        try:
            ids = self.publish_now(items)
        except RawsseError as error:
            done(error)
            return
        done(ids)

    @abstractmethod
    def publish_now(self, items: Sequence[PublishItem]) -> list[str]: ...
