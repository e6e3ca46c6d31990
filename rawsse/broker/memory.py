"""The default broker: one process numbers its own events."""

from __future__ import annotations

from collections.abc import Sequence

from rawsse.broker.base import Broker
from rawsse.core.publish import PublishItem


class MemoryBroker(Broker):
    _sequence = 0

    def publish(self, items: Sequence[PublishItem]) -> list[str]:
        hub = self.hub
        hub.check_room()
        now = hub.clock()
        sequence = self._sequence
        events = []
        ids = []
        for item in items:  # encode all first: a batch is accepted whole or not at all
            sequence += 1
            event_id = hub.ids.format(sequence)
            events.append(hub.encode(sequence, event_id, item.topics, item.data, item.event, now))
            ids.append(event_id)
        self._sequence = sequence
        hub.metrics.events_published += len(events)
        hub.accept(events)
        return ids
