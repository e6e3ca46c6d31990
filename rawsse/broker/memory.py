"""The default broker: one process numbers its own events."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rawsse.broker.base import Broker, Outcome
from rawsse.core.publish import PublishItem
from rawsse.errors import RawsseError


class MemoryBroker(Broker):
    _sequence = 0

    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        sink = self.sink  # started, or nothing is numbered
        encode = self.encoder.encode
        format_id = self.encoder.ids.format
        now = self.clock()
        sequence = self._sequence
        ids = []
        events = []
        try:
            self.room.check_room()
            # All encoded first: a batch is accepted whole or not at all. A loop, not two
            # comprehensions: each would be a call of its own, for the usual single event.
            for item in items:
                sequence += 1
                event_id = format_id(sequence)
                events.append(encode(item, sequence, event_id, now))
                ids.append(event_id)
        except RawsseError as error:
            done(error)
            return
        self._sequence = sequence
        sink.deliver(events)
        done(ids)
