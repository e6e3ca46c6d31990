"""Published events: the one way an item to publish, given its place in the order,
becomes the bytes every subscriber receives — whatever the broker that gave the place
(memory, the workers' log, Redis)."""

from __future__ import annotations

from rawsse.core.ids import IdScheme
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing
from rawsse.core.sse import data_lines, event_body, with_id
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
    delivered to a slow reader nor carried by a resume page.

    An event's bytes are its `id:` line, then its body (`event:` and `data:` lines and
    the blank line): the body can be made and checked before the id is known, by a broker
    that learns the id only once the event is in the order, and is not made twice."""

    def __init__(self, ids: IdScheme, max_bytes: int = 1 << 62) -> None:
        self.ids = ids
        self.max_bytes = max_bytes
        self._longest_id_line = len(ids.longest_id) + len("id: \n")

    def encode(self, item: PublishItem, sequence: int, event_id: str, now: float) -> Event:
        """Raises EventTooLarge."""
        wire = with_id(event_id, event_body(item.data, item.event))
        if len(wire) > self.max_bytes:
            raise self._too_large(len(wire))
        return Event(sequence, item, event_id, wire, now)

    def body(self, item: PublishItem) -> bytes:
        """The bytes of `item` after its id line; raises EventTooLarge if they could not
        be sent under any id."""
        body = event_body(item.data, item.event)
        if len(body) + self._longest_id_line > self.max_bytes:
            raise self._too_large(len(body) + self._longest_id_line)
        return body

    @staticmethod
    def event(item: PublishItem, sequence: int, event_id: str, body: bytes, now: float) -> Event:
        """The event of `item` (whose `body` was made and checked) under its id."""
        return Event(sequence, item, event_id, with_id(event_id, body), now)

    def _too_large(self, size: int) -> EventTooLarge:
        return EventTooLarge(f"event is {size} bytes encoded; the limit is {self.max_bytes}")
