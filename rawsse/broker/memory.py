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
        ids = [format_id(sequence + n) for n in range(1, len(items) + 1)]
        try:
            self.room.check_room()
            # All encoded first: a batch is accepted whole or not at all.
            events = [encode(item, sequence + n, ids[n - 1], now) for n, item in enumerate(items, 1)]
        except RawsseError as error:
            done(error)
            return
        self._sequence = sequence + len(events)
        sink.deliver(events)
        done(ids)
