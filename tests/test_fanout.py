"""Fan-out passes, slices and the slot table without a running loop: a fake loop whose
callbacks the test runs one at a time, so "the pass is half done" is a state the test
steps into rather than a moment it hopes to catch with sleeps."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rawsse.auth.ledger import Ledger
from rawsse.broker.base import BrokerNeeds
from rawsse.broker.memory import MemoryBroker
from rawsse.core.effects import OpenStream
from rawsse.core.events import EventEncoder
from rawsse.core.history import History
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing, SlotState, SlotTable, Why
from rawsse.core.state import ServerState
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.ws.frames import Opcode
from rawsse.core.ws.session import FAIL_LINGER, SessionLimits, Sessions
from rawsse.errors import RawsseError
from rawsse.poller import make_poller
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.intake import Intake
from rawsse.reactor.streams import StreamLimits, Streams, build_streams
from tests.ws_frames import client_frame

KIND = "integration"


class FakeLoop:
    """call_soon queues; `step()` runs the oldest callback (one loop iteration's worth)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.now = 0.0

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self.callbacks.append(lambda: callback(*args))

    def step(self) -> bool:
        if not self.callbacks:
            return False
        self.callbacks.pop(0)()
        return True

    def run(self) -> None:
        while self.step():
            pass

    def time(self) -> float:
        return self.now

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        pass

    def remove_reader(self, fd: int) -> None:
        pass


class RecordingBackend:
    """Writes go to a list per slot; frees are recorded."""

    def __init__(self, table: SlotTable) -> None:
        self.table = table
        self.written: dict[int, list[bytes]] = {}
        self.freed: list[int] = []
        self.aborted: list[int] = []
        self.ended: list[int] = []

    def bind(self, close: Callable[[int, Why], None], drained: Callable[[], None]) -> None:
        pass

    def write_slice(self, slots: array[int], data: bytes, droppable: bool) -> int:
        written = 0
        for slot in slots:
            if self.table.state[slot] == SlotState.OPEN:
                self.written.setdefault(slot, []).append(data)
                written += 1
        return written

    def write(self, slot: int, data: bytes) -> None:
        pass

    def end_writing(self, slot: int) -> None:
        self.ended.append(slot)

    def detach(self, slot: int, abort: bool) -> None:
        if abort:
            self.aborted.append(slot)

    def free(self, slot: int) -> None:
        self.freed.append(slot)

    def dispose(self) -> None:
        pass


BackendFor = Callable[[SlotTable, FakeLoop], Any]


def make(slice_size: int, backend_for: BackendFor = lambda table, _: RecordingBackend(table)) -> Any:
    loop = FakeLoop()
    metrics = Metrics()
    hub = Hub(Subscriptions(256), History(), metrics)
    sessions = Sessions(256, SessionLimits(16, 255, 1 << 20), lambda: 0.0, ServerState())
    ledger = Ledger(0)  # no credentials in these tests
    table = SlotTable(256, 1 << 20, (hub.subscriptions, sessions, ledger))
    backend = backend_for(table, loop)
    limits = StreamLimits(slice_size=slice_size)
    streams = build_streams(
        loop,
        hub,
        metrics,
        limits,
        table,
        backend,
        sessions,
        no_broker,
        nothing_to_catch_up,
        ignore_word,
        ledger,  # type: ignore[arg-type]
    )
    if isinstance(backend, FdBackend):
        backend.start(streams, NoArrivals())
    broker = MemoryBroker(BrokerNeeds(EventEncoder(hub.ids), time.monotonic, hub))
    # Published events wake the fan-out, as in a server.
    asyncio.run(broker.start(Intake(hub, streams.fanout, streams.registry)))
    return loop, hub, broker, streams, backend, metrics


def no_broker(items: list[PublishItem], done: Callable[[list[str] | RawsseError], None]) -> None:
    done(RawsseError("no broker in these tests"))


def ignore_word(word: dict[str, Any]) -> None:
    pass


def nothing_to_catch_up() -> None:
    """One process holds its whole order: nothing to read before a stream's topics change."""


class NoArrivals:
    def arrived(self, fd: int) -> None:
        raise AssertionError("no connection arrives in these tests")


def join(streams: Streams, hub: Hub, slots: range, topic: str = "t") -> None:
    for slot in slots:
        streams.table.open(slot)
        hub.subscriptions.add(slot, (topic,))


def test_a_broadcast_runs_in_slices_and_what_comes_meanwhile_goes_out_coalesced() -> None:
    loop, hub, broker, streams, backend, metrics = make(slice_size=10)
    join(streams, hub, range(25))
    broker.publish_now([PublishItem(("t",), "first")])
    broker.publish_now([PublishItem(("t",), "second")])
    assert loop.step()  # the pass starts with its first slice: ten writes
    assert sum(map(len, backend.written.values())) == 10
    broker.publish_now([PublishItem(("t",), "third")])  # during the pass: waits for the next
    assert loop.step() and sum(map(len, backend.written.values())) == 20
    loop.run()
    assert all(len(writes) == 2 for writes in backend.written.values())
    first_pass, second_pass = backend.written[0]
    assert first_pass.count(b"data: ") == 2 and b"data: first" in first_pass  # one write each
    assert second_pass.count(b"data: ") == 1 and b"data: third" in second_pass
    assert metrics.deliveries == 25 * 3


def test_deliveries_count_only_the_streams_written() -> None:
    loop, hub, broker, streams, backend, metrics = make(slice_size=10)
    join(streams, hub, range(5))
    broker.publish_now([PublishItem(("t",), "x")])
    streams.table.state[3] = SlotState.CLOSED  # as if closed during the pass that snapshot it
    loop.run()
    assert (metrics.deliveries, len(backend.written)) == (4, 4)


def test_a_slot_closed_during_a_pass_is_freed_once_and_only_when_the_pass_ends() -> None:
    loop, hub, broker, streams, backend, _ = make(slice_size=2)
    join(streams, hub, range(6))
    broker.publish_now([PublishItem(("t",), "x")])
    loop.step()
    streams.close(5, Why.PEER)  # not written yet; the pass's snapshot still holds it
    streams.close(0, Why.PEER)
    assert backend.freed == [] and streams.table.state[5] == SlotState.CLOSED
    loop.run()
    assert sorted(backend.freed) == [0, 5]
    assert streams.table.state[5] == SlotState.FREE and 5 not in backend.written


def test_closing_everything_mid_pass_frees_each_slot_exactly_once() -> None:
    loop, hub, broker, streams, backend, _ = make(slice_size=1)
    join(streams, hub, range(4))
    broker.publish_now([PublishItem(("t",), "x")])
    loop.step()
    streams.close(2, Why.PEER)
    streams.close_all()
    loop.run()  # what is left of the abandoned pass does nothing
    assert sorted(backend.freed) == [0, 1, 2, 3]
    assert streams.table.used == 0


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(4)]
    for ours, _ in made:
        ours.setblocking(False)
    yield made
    for ours, theirs in made:
        theirs.close()
        ours.detach()  # the backend closed ours


def test_an_abandoned_pass_never_closes_an_fd_number_reused_afterwards(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """With real descriptors: once close_all has released the streams' fds, the kernel
    hands their numbers to new files, and nothing left of the pass may touch them."""
    loop, hub, broker, streams, _, _ = make(
        slice_size=1,
        backend_for=lambda table, loop: FdBackend(loop, table, make_poller("epoll")),  # type: ignore[arg-type]
    )
    fds = [ours.fileno() for ours, _ in pairs]
    for fd in fds:
        streams.table.open(fd)
        hub.subscriptions.add(fd, ("t",))
    broker.publish_now([PublishItem(("t",), "x")])
    loop.step()  # one write of the pass is done
    streams.close_all()
    reopened = [os.open(os.devnull, os.O_RDONLY) for _ in range(8)]  # takes the freed numbers
    loop.run()
    for fd in reopened:
        os.fstat(fd)  # raises if a stale release closed it
        os.close(fd)


def test_the_write_in_progress_is_never_held_against_the_cap() -> None:
    table = SlotTable(4, max_pending_bytes=64 * 1024)
    table.open(1)
    table.block(1, memoryview(b"x" * 3_000_000), now=0)  # one coalesced pass, unsent
    assert table.state[1] == SlotState.BLOCKED
    assert table.queue(1, b"y" * 60_000)  # the backlog behind it is what counts
    assert not table.queue(1, b"z" * 10_000)  # now over the cap: a slow consumer
    assert table.pending[1].size == 3_060_000  # what was refused is not counted
    assert table.sent(1, 3_000_000, now=5) is False  # the big write went; the backlog waits
    assert table.pending[1].since == 5
    assert table.sent(1, 60_000, now=6) is True and table.state[1] == SlotState.OPEN


def test_a_blocked_stream_without_progress_is_stalled() -> None:
    table = SlotTable(4, 1 << 20)
    table.open(2)
    table.block(2, b"rest", now=10)
    assert table.stalled(now=69, timeout=60) == []
    assert table.stalled(now=71, timeout=60) == [2]


def test_a_closing_websocket_stays_closing_while_its_bytes_drain() -> None:
    table = SlotTable(8, 1024)
    table.open(3, Framing.WS)
    table.begin_closing(3)
    table.block(3, b"rest", 0.0)  # its close frame did not go out whole
    assert table.state[3] == SlotState.CLOSING  # nothing more is written to it meanwhile
    assert table.sent(3, 4, 1.0)
    assert table.state[3] == SlotState.CLOSING


def test_a_websocket_failed_for_a_fault_ends_its_side_or_is_cut_when_behind() -> None:
    """A protocol fault: a stream that keeps up gets its close frame and our end of the
    connection at once, lingers in CLOSING, and is dropped by the sweep after FAIL_LINGER;
    one that is behind on its bytes (no close frame could reach it) is cut at once."""
    loop, _, _, streams, backend, metrics = make(slice_size=64)
    for slot in (5, 6):
        streams.open_slot(slot, OpenStream(("t",), b"", b"", Framing.WS))
    streams.table.block(6, b"unsent", 0.0)  # slot 6 is behind
    unmasked = client_frame(Opcode.TEXT, b"{}", masked=False)
    streams.receive(5, unmasked)
    streams.receive(6, unmasked)
    assert backend.ended == [5] and streams.table.state[5] == SlotState.CLOSING
    assert backend.aborted == [6] and streams.table.state[6] == SlotState.FREE
    assert metrics.streams_open == 1 and metrics.ws_streams_open == 1
    streams.sweep(loop.time() + FAIL_LINGER / 2)
    assert streams.table.state[5] == SlotState.CLOSING  # still read (and dropped) for the linger
    streams.sweep(loop.time() + FAIL_LINGER)
    assert streams.table.state[5] == SlotState.FREE and not backend.aborted[1:]
    assert metrics.streams_open == 0 and metrics.ws_streams_open == 0


class RecordingColumn:
    def __init__(self) -> None:
        self.released: list[int] = []

    def release(self, slot: int) -> None:
        self.released.append(slot)


def test_closing_a_slot_releases_every_column_in_one_call() -> None:
    """The parts' per-slot columns are the table's: a closed slot keeps nothing of its
    stream in any of them, during a pass too (the slot itself is freed after it)."""
    columns = [RecordingColumn(), RecordingColumn()]
    table = SlotTable(8, 1024, columns)
    table.open(2, Framing.WS)
    table.open(5)
    assert table.close(2)
    table.begin_pass()
    assert not table.close(5)  # released now, freed when the pass ends
    assert [column.released for column in columns] == [[2, 5], [2, 5]]
    assert table.end_pass() == [5]
