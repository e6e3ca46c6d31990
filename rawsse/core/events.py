"""Published events: the one way an item to publish, given its place in the order,
becomes the bytes every subscriber receives — whatever the broker that gave the place
(memory, the workers' log, Redis)."""

from __future__ import annotations

from rawsse.core.ids import IdScheme
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing
from rawsse.core.sse import data_lines, encode_event
from rawsse.core.ws.messages import event_frame
from rawsse.errors import EventTooLarge


class Event:
    """An event as every subscriber receives it, with what it was published with (`item`:
    topics, data, name) and its `id`: `wire` is the complete SSE encoding (id, event,
    data lines and the blank line), shared read-only by all writers; `frame` its
    WebSocket text frame, made from the item the first time a WebSocket stream needs it
    (a server without WebSocket streams never pays for it), then shared too."""

    __slots__ = ("_frame", "id", "item", "sequence", "time", "topics", "wire")

    def __init__(self, sequence: int, item: PublishItem, event_id: str, wire: bytes, time: float) -> None:
        self.sequence = sequence
        self.item = item
        self.id = event_id
        self.topics = item.topics
        self.wire = wire
        self.time = time
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            item = self.item
            data = "\n".join(data_lines(item.data))  # the data an EventSource reads
            frame = self._frame = event_frame(self.id, self.topics, item.event, data)
        return frame

    @property
    def held(self) -> int:
        """About the bytes this event keeps alive while history holds it: its encoding
        and the data it was published with (what --history-bytes counts)."""
        return len(self.wire) + len(self.item.data)

    def bytes_for(self, framing: Framing) -> bytes:
        return self.frame if framing == Framing.WS else self.wire


class EventEncoder:
    """Encodes items into Events, once each, and holds them to the size a stream can
    hold while behind (`max_bytes`, --max-pending-bytes): a larger one could never be
    delivered to a slow reader nor carried by a resume page."""

    def __init__(self, ids: IdScheme, max_bytes: int = 1 << 62) -> None:
        self.ids = ids
        self.max_bytes = max_bytes

    def encode(self, item: PublishItem, sequence: int, event_id: str, now: float) -> Event:
        """Raises EventTooLarge."""
        wire = encode_event(item.data, event_id, item.event)
        self._check(len(wire))
        return Event(sequence, item, event_id, wire, now)

    def check_fits(self, item: PublishItem) -> None:
        """Raise EventTooLarge if `item` could not be encoded under any id (for a broker
        that learns the id only after accepting the event)."""
        self._check(len(encode_event(item.data, self.ids.longest_id, item.event)))

    def _check(self, size: int) -> None:
        if size > self.max_bytes:
            raise EventTooLarge(f"event is {size} bytes encoded; the limit is {self.max_bytes}")
