"""The worker event log, without processes: two handles on one file act as two workers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from rawsse.broker.base import BrokerNeeds, Outcome
from rawsse.broker.ring import SharedLog, interest_bucket
from rawsse.broker.workers import LogSeat, SharedInterest, WorkerBroker
from rawsse.core.control import CONTROL_TOPIC
from rawsse.core.events import Event, EventEncoder
from rawsse.core.ids import EpochIds
from rawsse.core.publish import PublishItem
from rawsse.errors import EventTooLarge, Overloaded, StoreUnavailable

KIND = "integration"


@pytest.fixture
def log_path(tmp_path: Path) -> str:
    return str(tmp_path / "log")


@pytest.fixture
def logs(log_path: str) -> Iterator[tuple[SharedLog, SharedLog]]:
    path = log_path
    SharedLog.create(path, 4096)
    first, second = SharedLog(path), SharedLog(path)
    yield first, second
    first.close()
    second.close()


def append(log: SharedLog, *datas: str) -> list[int]:
    return log.append([PublishItem(("t",), data) for data in datas], 1.0).sequences


def read_all(log: SharedLog, worker: int, cursor: int) -> tuple[int, list[tuple[int, str]]]:
    tail = log.tail
    records = [(record.sequence, record.item.data) for record in log.read(cursor, tail)]
    log.advance(worker, tail)
    return tail, records


def test_every_reader_sees_every_batch_in_one_order(logs: tuple[SharedLog, SharedLog]) -> None:
    writer, reader = logs
    cursor_a = writer.join(0)[0]
    cursor_b = reader.join(1)[0]
    assert append(writer, "a", "b") == [1, 2]
    assert append(reader, "c") == [3]
    cursor_a, seen_a = read_all(writer, 0, cursor_a)
    cursor_b, seen_b = read_all(reader, 1, cursor_b)
    assert seen_a == seen_b == [(1, "a"), (2, "b"), (3, "c")]


def test_a_record_holds_what_was_published(logs: tuple[SharedLog, SharedLog]) -> None:
    writer, reader = logs
    cursor = reader.join(1)[0]
    items = [
        PublishItem(("news", "sport"), "line one\r\nline twö", "score"),
        PublishItem(("t",), "", ""),  # an empty name is a name, not none
        PublishItem(("t",), "plain"),
    ]
    writer.append(items, 12.5)
    records = list(reader.read(cursor, reader.tail))
    assert [record.item for record in records] == items
    assert [record.time for record in records] == [12.5] * 3


def test_the_ring_wraps_and_refuses_rather_than_overwrite_unread_records(
    logs: tuple[SharedLog, SharedLog], log_path: str
) -> None:
    writer, reader = logs
    cursor = reader.join(1)[0]
    writer.join(0)
    sequences: list[int] = []
    with pytest.raises(Overloaded):
        for _ in range(1000):
            sequences += append(writer, "x" * 100)
            writer.advance(0, writer.tail)  # the writer keeps up; the reader does not
    cursor, seen = read_all(reader, 1, cursor)
    assert [s for s, _ in seen] == sequences  # nothing lost: the append was refused
    # The reader caught up, so the ring takes more, wrapping past its end.
    for n in range(100):
        append(writer, f"y{n}")
        writer.advance(0, writer.tail)
        cursor, seen = read_all(reader, 1, cursor)
        assert seen[-1][1] == f"y{n}"
    # A worker joining now loads what the ring still holds, and learns what was dropped.
    start, tail, dropped = SharedLog(log_path).join(2)
    kept = [record.sequence for record in writer.read(start, tail)]
    assert kept == list(range(dropped + 1, kept[-1] + 1)) and dropped > 0


def test_a_batch_is_appended_whole_or_not_at_all(logs: tuple[SharedLog, SharedLog]) -> None:
    writer, _ = logs
    cursor = writer.join(0)[0]

    with pytest.raises(EventTooLarge):
        writer.append([PublishItem(("t",), "ok"), PublishItem(("t",), "x" * 2000)], 1.0)
    assert writer.tail == cursor
    assert append(writer, "next") == [1]


def test_a_log_knows_how_many_workers_read_it(log_path: str) -> None:
    """The writer scans only the cursors of the workers there are, under its lock."""
    SharedLog.create(log_path, 4096, readers=2)
    log = SharedLog(log_path)
    assert log.readers == 2
    log.join(0)
    log.join(1)
    with pytest.raises(ValueError):
        log.join(2)
    log.leave(1)  # a worker that exited holds nothing back
    for _ in range(200):
        append(log, "x" * 50)
        log.advance(0, log.tail)
    log.close()


class Recorded:
    """A worker's event sink that keeps what it was handed, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, bytes]] = []

    def deliver(self, events: list[Event]) -> None:
        self.events.extend((event.sequence, event.item.data, event.wire) for event in events)

    def preload(self, events: Iterable[Event], dropped_before: int) -> None:
        pass

    def lost(self, dropped_before: int) -> None:
        raise AssertionError("nothing is lost here")


class Roomy:
    overloaded = False

    def check_room(self) -> None:
        pass


class Workers:
    """Worker brokers of one log in one process and one loop (never run: a wake-up is
    seen on its eventfd, not handled), each with a Recorded sink."""

    def __init__(self, log_path: str, count: int, capacity: int = 1 << 16, max_bytes: int = 1 << 62) -> None:
        SharedLog.create(log_path, capacity, readers=count)
        self.loop = asyncio.new_event_loop()
        self.wake_fds = tuple(os.eventfd(0, os.EFD_NONBLOCK) for _ in range(count))
        self.logs = [SharedLog(log_path) for _ in range(count)]
        self.sinks = [Recorded() for _ in range(count)]
        ids = EpochIds("e")
        self.brokers = [
            WorkerBroker(
                BrokerNeeds(EventEncoder(ids, max_bytes), lambda: 5.0, Roomy()),
                list,
                LogSeat(index, count, log_path, self.wake_fds),
                self.logs[index],
                self.loop,
            )
            for index in range(count)
        ]
        for broker, sink in zip(self.brokers, self.sinks, strict=True):
            self.loop.run_until_complete(broker.start(sink))
        self.answers: list[Outcome] = []

    def publish(self, worker: int, *items: PublishItem) -> None:
        self.brokers[worker].publish(items, self.answers.append)

    def woken(self, worker: int) -> bool:
        """Whether worker `worker` was woken since this was last asked."""
        try:
            os.read(self.wake_fds[worker], 8)
            return True
        except BlockingIOError:
            return False

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for broker in self.brokers:
            self.loop.run_until_complete(broker.stop())
        self.loop.close()
        for fd in self.wake_fds:
            os.close(fd)


def test_a_workers_own_publish_follows_what_others_appended_before_it(log_path: str) -> None:
    """A publishing worker hands its hub its own batch from what it holds (not read back
    from the log), but only after the records other workers appended before it: every
    worker sees one order, with the same bytes."""
    with Workers(log_path, 2) as workers:
        workers.publish(0, PublishItem(("t",), "first"))
        # Worker 1 has not read "first" (its wake-up is not handled: the loop is not run).
        workers.publish(1, PublishItem(("t",), "second"), PublishItem(("u",), "third"))
        workers.publish(0, PublishItem(("t",), "fourth"))
        workers.brokers[1].sweep()
        assert workers.answers == [["e-1"], ["e-2", "e-3"], ["e-4"]]
        expected = [
            (sequence, data, f"id: e-{sequence}\ndata: {data}\n\n".encode())
            for sequence, data in enumerate(["first", "second", "third", "fourth"], 1)
        ]
        assert workers.sinks[0].events == workers.sinks[1].events == expected


def test_a_worker_refuses_an_event_too_large_for_a_stream_before_appending_it(log_path: str) -> None:
    with Workers(log_path, 1, max_bytes=100) as workers:
        # 100 bytes with the id line at its longest ("id: e-", 19 digits, a newline): 66 of data fit.
        workers.publish(0, PublishItem(("t",), "x" * 67))
        workers.publish(0, PublishItem(("t",), "x" * 66))
        assert isinstance(workers.answers[0], EventTooLarge)
        assert workers.answers[1] == ["e-1"]
        assert [data for _, data, _ in workers.sinks[0].events] == ["x" * 66]


def test_a_worker_is_woken_only_for_topics_it_has_streams_on_and_for_words(log_path: str) -> None:
    """The others read the rest later (a wake-up for something else, a stream request,
    the sweep), in the same order."""
    with Workers(log_path, 2) as workers:
        interest = SharedInterest(workers.logs[1], 1, workers.wake_fds[1])
        workers.publish(0, PublishItem(("quiet",), "1"))
        assert not workers.woken(1)
        interest.gained("loud")
        assert workers.woken(1)  # it looks at the log once more, for a publish that missed the byte
        workers.publish(0, PublishItem(("loud",), "2"))
        assert workers.woken(1)
        workers.publish(0, PublishItem(("quiet", "loud"), "3"))
        assert workers.woken(1)
        interest.lost("loud")
        workers.publish(0, PublishItem(("loud",), "4"))
        assert not workers.woken(1)
        workers.publish(0, PublishItem((CONTROL_TOPIC,), "{}"))
        assert workers.woken(1)
        assert not workers.woken(0)  # never its own
        workers.brokers[1].catch_up()
        assert [data for _, data, _ in workers.sinks[1].events] == ["1", "2", "3", "4", "{}"]
        assert workers.sinks[1].events == workers.sinks[0].events


def test_a_worker_that_joins_shows_no_streams_its_predecessor_had(log_path: str) -> None:
    SharedLog.create(log_path, 1 << 16, readers=2)
    log = SharedLog(log_path)
    wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
    SharedInterest(log, 1, wake_fd).gained("t")
    os.close(wake_fd)
    bucket = interest_bucket("t")
    assert log.interested(bucket) == b"\x00\x01"
    log.join(1)  # a worker killed without leaving is replaced
    assert log.interested(bucket) == b"\x00\x00"
    log.close()


def test_a_worker_far_behind_is_woken_before_the_log_fills(log_path: str) -> None:
    """A worker not woken for what it has no streams on is still woken once it lags a
    quarter of the ring, so publishing never stops for one that would read at its sweep."""
    with Workers(log_path, 2, capacity=4096) as workers:
        wakes = []
        for n in range(60):  # 60 records of 40 bytes: 2,400 bytes of a 4,096-byte ring
            workers.publish(0, PublishItem(("quiet",), f"{n:02d}"))
            wakes.append(workers.woken(1))
        assert all(isinstance(answer, list) for answer in workers.answers)
        assert wakes[:25] == [False] * 25  # up to a quarter of the ring behind
        assert all(wakes[26:])


def test_a_batch_refused_before_its_commit_leaves_the_ring_as_it_was(log_path: str) -> None:
    """The durable log's write fails (a full disk) after the ring has wrapped: the oldest
    records are not overwritten, and the order goes on without a gap or a stray record."""
    SharedLog.create(log_path, 4096, readers=1)
    log = SharedLog(log_path)
    log.join(0)
    cursor = 0
    for n in range(200):  # wraps the 4 KiB ring several times, the reader keeping up
        append(log, f"{n:03d}")
        cursor, _ = read_all(log, 0, cursor)
    state = log.tail, log._get(8), log._get(16), log._get(24)  # tail, head, sequence, dropped

    def refuse(sequences: list[int]) -> None:
        raise StoreUnavailable("no room")

    with pytest.raises(StoreUnavailable):
        log.append([PublishItem(("t",), "x" * 300)], 1.0, refuse)
    assert (log.tail, log._get(8), log._get(16), log._get(24)) == state
    assert append(log, "after") == [201]
    _, records = read_all(log, 0, cursor)
    assert records == [(201, "after")]
    log.close()
