"""The acknowledgements of private topics (rawsse.core.acks), kept in the durable log's
store next to the events they name: shared by the workers, trimmed never (a row per topic
acknowledged, a few dozen bytes), gone only with the store."""

from __future__ import annotations

from collections.abc import Sequence

from rawsse.core.acks import AckedDone, Unacked, UnackedDone
from rawsse.core.metrics import Metrics
from rawsse.errors import StoreUnavailable
from rawsse.store.events import EventStore


class StoredAcks:
    """An AckBook on the store: it answers at once."""

    kept = True

    def __init__(self, store: EventStore, metrics: Metrics) -> None:
        self._store, self._metrics = store, metrics

    def acknowledge(self, topics: Sequence[str], sequence: int, done: AckedDone) -> None:
        try:
            acked = self._store.acknowledge(topics, sequence)
        except StoreUnavailable as error:
            done(error)
            return
        if sequence:
            self._metrics.acks += 1
        done(acked)

    def unacked(self, topic: str, until: int, done: UnackedDone) -> None:
        try:
            found = Unacked(*self._store.unacked(topic, until))
        except StoreUnavailable as error:
            done(error)
            return
        done(found)

    async def close(self) -> None:
        pass  # the store is the durable log's, closed with it
