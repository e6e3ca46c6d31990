"""The slot table: every stream's state, whatever backend holds its connection.

A slot is a small integer (the stream's fd in the epoll/kqueue backend, an index in the
transport backend). Per slot the table keeps one byte of state and one of framing — no
object for an idle stream or one that keeps up. Only a stream whose writes would block
gets a Pending: views of the shared event bytes it still owes its client, never copies.

A slot closed while a fan-out pass runs is released only when the pass ends: the pass
holds a snapshot of slot numbers, and the kernel must not hand the same fd number to a
new connection that the snapshot would then write to.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

MAX_PENDING_BYTES = 1024 * 1024
"""Per-stream bytes a slow reader may hold before it is disconnected (Centrifugo closes a
"slow" client at 1 MiB of queued data). It can resume with Last-Event-ID."""

SEND_TIMEOUT = 60.0
"""A stream whose pending bytes make no progress for this long is closed (nginx's
send_timeout)."""


class SlotState(enum.IntEnum):
    """A slot's state, one byte of the table's `state` column."""

    FREE = 0
    OPEN = 1
    BLOCKED = 2
    """Bytes are pending."""
    CLOSED = 3
    """Closed; released when the pass ends."""
    ARRIVING = 4
    """Accepted on the raw path, its request not read yet (not a stream, not counted in
    `used`)."""
    CLOSING = 5
    """A WebSocket stream whose close frame is sent (or queued behind its pending bytes):
    nothing more is written to it, and it is read until the client's close (or, failed for
    a protocol fault, only until its end)."""


LIVE = (SlotState.OPEN, SlotState.BLOCKED, SlotState.CLOSING)
"""The states of a slot whose connection is still the stream's: to read, flush and close."""


class Framing(enum.IntEnum):
    """How a stream's events are framed, one byte of the table's `framing` column."""

    SSE = 0
    """Server-Sent Events (text/event-stream)."""
    WS = 1
    """WebSocket text frames."""

    @property
    def transport(self) -> str:
        """Its name where it is spoken of outside (metrics, the --auth-url question)."""
        return self.name.lower()


class Why(enum.Enum):
    """Why a stream is closed: it decides what is counted, and whether unsent bytes are
    dropped at once."""

    PEER = "peer"
    """The client went away, or a write to it failed."""
    SLOW = "slow"
    """More than --max-pending-bytes queued behind the write in progress."""
    STALLED = "stalled"
    """Its pending bytes made no progress for --send-timeout."""
    SERVER = "server"
    """An operator's /disconnect, a broker's gap, the shutdown."""
    BROKEN = "broken"
    """The client broke the WebSocket protocol while it was behind on its bytes: no
    close frame can reach it in time, so its connection is cut."""


class Pending:
    """Bytes a blocked stream still owes its client. The first buffer is the write in
    progress (for the transport backend it is held in the transport, and the first
    buffer here is empty); the cap counts only the backlog behind it."""

    __slots__ = ("buffers", "since", "size")

    def __init__(self, first: memoryview | bytes, now: float) -> None:
        self.buffers: list[memoryview | bytes] = [first]
        self.size = len(first)
        self.since = now
        """When it last made progress (for the send timeout)."""


class SlotColumn(Protocol):
    """A part's column of per-slot state, owned by the table: what it keeps for a slot is
    released when the slot closes."""

    def release(self, slot: int) -> None:
        """The stream in `slot` is gone: nothing of it may stay for the slot's next one."""
        ...


class SlotTable:
    def __init__(self, capacity: int, max_pending_bytes: int, columns: Sequence[SlotColumn] = ()) -> None:
        self.state = bytearray(capacity)
        self.framing = bytearray(capacity)
        self.pending: dict[int, Pending] = {}
        self.max_pending_bytes = max_pending_bytes
        self._columns = tuple(columns)
        """The other parts' columns (subscriptions, WebSocket sessions, the ledger of
        grants), released with the table's own when a slot closes."""
        self.used = 0
        """Slots not FREE: open streams, and closed ones waiting for the pass to end."""
        self._passing = False
        self._deferred: list[int] = []

    @property
    def capacity(self) -> int:
        return len(self.state)

    def is_open(self, slot: int) -> bool:
        return self.state[slot] in (SlotState.OPEN, SlotState.BLOCKED)

    def is_live(self, slot: int) -> bool:
        """Open, or closing its WebSocket handshake: the connection is still ours."""
        return self.state[slot] in LIVE

    def begin_closing(self, slot: int) -> None:
        """A WebSocket stream's close frame is out or queued (see CLOSING)."""
        self.state[slot] = SlotState.CLOSING

    def arrive(self, slot: int) -> None:
        """A connection accepted on the raw path waits for its request in this slot."""
        self.state[slot] = SlotState.ARRIVING

    def leave(self, slot: int) -> None:
        """The arriving connection closed, or went to the loop's ordinary machinery."""
        self.state[slot] = SlotState.FREE

    def open(self, slot: int, framing: Framing = Framing.SSE) -> None:
        """A stream starts in the slot (a FREE one, or one ARRIVING on the raw path)."""
        self.state[slot] = SlotState.OPEN
        self.framing[slot] = framing
        self.used += 1

    # Writing

    def block(self, slot: int, rest: memoryview | bytes, now: float) -> None:
        """One write did not go out whole: `rest` is the write in progress. However large
        (a coalesced pass, a replay page), it is never held against the cap."""
        if self.state[slot] != SlotState.CLOSING:  # a closing stream stays closing while it drains
            self.state[slot] = SlotState.BLOCKED
        self.pending[slot] = Pending(rest, now)

    def queue(self, slot: int, data: bytes) -> bool:
        """Queue `data` behind a blocked stream's write in progress; False when that puts
        its backlog over the cap (the stream is to be closed as a slow consumer)."""
        pending = self.pending[slot]
        if pending.size + len(data) - len(pending.buffers[0]) > self.max_pending_bytes:
            return False
        pending.size += len(data)
        pending.buffers.append(data)
        return True

    def sent(self, slot: int, count: int, now: float) -> bool:
        """`count` pending bytes went out; True when nothing is pending any more (the
        slot is OPEN again, unless it is CLOSING)."""
        pending = self.pending[slot]
        pending.size -= count
        pending.since = now
        buffers = pending.buffers
        done = 0
        for buffer in buffers:
            if count < len(buffer):
                break
            count -= len(buffer)
            done += 1
        del buffers[:done]
        if buffers:
            if count:
                buffers[0] = memoryview(buffers[0])[count:]
            return False
        del self.pending[slot]
        if self.state[slot] == SlotState.BLOCKED:
            self.state[slot] = SlotState.OPEN
        return True

    def stalled(self, now: float, timeout: float) -> list[int]:
        """Blocked slots that made no progress for `timeout` seconds."""
        limit = now - timeout
        return [slot for slot, pending in self.pending.items() if pending.since < limit]

    # Closing and releasing

    def close(self, slot: int) -> bool:
        """Mark an open slot closed and release every column's state for it; True when
        it is free for reuse at once (no pass runs), False when it waits for the end of
        the pass (see `end_pass`)."""
        self.state[slot] = SlotState.CLOSED
        self.pending.pop(slot, None)
        for column in self._columns:
            column.release(slot)
        if self._passing:
            self._deferred.append(slot)
            return False
        self._free(slot)
        return True

    def begin_pass(self) -> None:
        self._passing = True

    def end_pass(self) -> list[int]:
        """The pass is over: the slots closed during it are free now; returns them."""
        self._passing = False
        deferred, self._deferred = self._deferred, []
        for slot in deferred:
            self._free(slot)
        return deferred

    def _free(self, slot: int) -> None:
        self.state[slot] = SlotState.FREE
        self.used -= 1
