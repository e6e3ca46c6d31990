"""The process's side of the broker: where the events of the order arrive (the broker's
EventSink). Each batch goes to the hub (history, the fan-out queue) and wakes the fan-out
when a pass is due;
a loss of events this process had not read closes every stream, so that its client
resumes and is told (a reset) rather than silently missing them."""

from __future__ import annotations

from collections.abc import Iterable

from rawsse.core.events import Event
from rawsse.core.hub import Hub
from rawsse.reactor.fanout import Fanout
from rawsse.reactor.registry import StreamRegistry


class Intake:
    def __init__(self, hub: Hub, fanout: Fanout, registry: StreamRegistry) -> None:
        self._hub = hub
        self._fanout = fanout
        self._registry = registry

    def deliver(self, events: list[Event]) -> None:
        if self._hub.accept(events):
            self._fanout.schedule()

    def preload(self, events: Iterable[Event], dropped_before: int) -> None:
        self._hub.preload(events, dropped_before)

    def lost(self, dropped_before: int) -> None:
        self._hub.history.mark_dropped(dropped_before)
        self._registry.close_open_streams()
