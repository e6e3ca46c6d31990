"""The default broker: one process numbers its own events."""

from __future__ import annotations

from collections.abc import Sequence

from rawsse.broker.base import LocalBroker
from rawsse.core.publish import PublishItem


class MemoryBroker(LocalBroker):
    _sequence = 0

    def publish_now(self, items: Sequence[PublishItem]) -> list[str]:
        sink = self.sink  # started, or nothing is numbered
        encode = self.encoder.encode
        format_id = self.encoder.ids.format
        now = self.clock()
        sequence = self._sequence
        ids = []
        events = []
        self.room.check_room()  # Overloaded while the fan-out is behind
        # All encoded first (EventTooLarge stops the batch): a batch is accepted whole or
        # not at all. A loop, not two comprehensions: each would be a call of its own, for
        # the usual single event.
        for item in items:
            sequence += 1
            event_id = format_id(sequence)
            events.append(encode(item, sequence, event_id, now))
            ids.append(event_id)
        self._sequence = sequence
        sink.deliver(events)
        return ids
