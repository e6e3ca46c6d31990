"""The durable event log of --data-dir, without a server: its directory, its events."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from rawsse.broker.base import BrokerNeeds, Outcome
from rawsse.broker.memory import Durability, MemoryBroker
from rawsse.cli import main
from rawsse.core.events import EventEncoder
from rawsse.core.history import History
from rawsse.core.hub import Hub
from rawsse.core.ids import EpochIds
from rawsse.core.metrics import Metrics
from rawsse.core.publish import PublishItem
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.topics import STATS_TOPIC
from rawsse.errors import StoreUnavailable, StoreUnusable
from rawsse.store.directory import DATABASE_NAME, DataDirectory
from rawsse.store.durable import DurableLog, HistoryWindow, StoreOptions
from rawsse.store.events import FORMAT, EventStore, Fsync, StoredEvent
from tests.parts import HubSink

KIND = "integration"


def stored(sequence: int, topic: str = "t", data: str | None = None, at: float = 100.0) -> StoredEvent:
    return StoredEvent(sequence, PublishItem((topic,), data or f"event {sequence}"), at)


def open_store(path: Path, fsync: Fsync = Fsync.INTERVAL, epoch: str = "e1") -> EventStore:
    return EventStore(str(path / DATABASE_NAME), fsync, epoch)


def test_events_and_the_epoch_outlive_the_store_that_wrote_them(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(1), stored(2, "u")])
    store.commit()
    store.append([stored(3, "t", "multi\nline")])
    store.commit()
    store.close()
    again = open_store(tmp_path, epoch="ignored")
    assert again.epoch == "e1" and again.last_sequence == 3 and again.events == 3
    events, whole, complete = again.since({"t": 0}, 3, 1 << 20)
    assert [(e.sequence, e.item.data) for e in events] == [(1, "event 1"), (3, "multi\nline")]
    assert whole and complete
    again.close()


def test_an_uncommitted_batch_is_not_kept(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(1)])
    store.commit()
    store.append([stored(2)])
    store._db.close()  # the process dies before its commit
    again = open_store(tmp_path)
    assert again.last_sequence == 1
    again.close()


def test_a_replay_comes_in_pages_of_whole_events(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, data="x" * 100) for n in range(1, 1001)])
    store.commit()
    received: list[int] = []
    after = 0
    pages = 0
    while True:
        events, whole, _ = store.since({"t": after}, 1000, 5000)
        received.extend(e.sequence for e in events)
        after = events[-1].sequence
        pages += 1
        if whole:
            break
    assert received == list(range(1, 1001)) and pages > 20
    store.close()


def test_trimming_by_age_and_size_raises_the_floor(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, at=float(n)) for n in range(1, 11)])  # "event N": 7-8 bytes + topic
    store.commit()
    assert store.trim(older_than=4.0, max_bytes=1 << 30) == 3
    assert store.floor == 3
    events, _, complete = store.since({"t": 1}, 10, 1 << 20)
    assert not complete and [e.sequence for e in events] == list(range(4, 11))
    assert store.since({"t": 3}, 10, 1 << 20)[2]  # from the floor on: nothing missed
    size = store.bytes
    assert store.trim(older_than=0.0, max_bytes=size - 1) == 1  # the oldest one goes
    store.close()
    again = open_store(tmp_path)
    assert again.floor == 4 and again.events == 6 and again.bytes == size - len("event 4t")
    again.close()


def test_the_newest_events_fill_memory_history_within_its_limits(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, at=float(n)) for n in range(1, 101)])
    store.commit()
    assert [e.sequence for e in store.recent(10, 1 << 20, 0.0)] == list(range(91, 101))
    assert [e.sequence for e in store.recent(1000, 1 << 20, 95.0)] == list(range(95, 101))
    assert len(store.recent(1000, 42, 0.0)) == 5  # "event 100" and four of 8 bytes: 41
    store.close()


def test_a_store_of_a_newer_format_or_not_a_database_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT + 1),))
    with pytest.raises(StoreUnusable, match="newer"):
        open_store(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / DATABASE_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreUnusable, match="cannot use the store"):
        open_store(tmp_path / "other")


def test_a_data_directory_is_held_by_one_server_and_must_be_ours(tmp_path: Path) -> None:
    first = DataDirectory(str(tmp_path / "data"))
    assert oct(os.stat(tmp_path / "data").st_mode & 0o777) == "0o700"
    with pytest.raises(StoreUnusable, match="another server"):
        DataDirectory(str(tmp_path / "data"))
    first.release()
    DataDirectory(str(tmp_path / "data")).release()  # free again once released
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("someone's")
    with pytest.raises(StoreUnusable, match="not a rawsse data directory"):
        DataDirectory(str(tmp_path / "theirs"))


def test_the_wal_is_synced_on_demand(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(1)])
    store.commit()
    assert store.sync() >= 0.0
    store.close()


def test_rawsse_store_stat_dump_and_compact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(tmp_path, epoch="ep")
    store.append([stored(1, "notes@42", "first"), stored(2, "news"), stored(3, "notes@42", "third")])
    store.commit()
    store.close()
    assert main(["store", "stat", str(tmp_path)]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["events"].strip() == "3" and lines["last id"].strip() == "ep-3"
    assert main(["store", "dump", str(tmp_path), "--topic", "notes@42", "--after", "ep-1"]) == 0
    dumped = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["id"], e["data"], e["topics"]) for e in dumped] == [("ep-3", "third", ["notes@42"])]
    held = DataDirectory(str(tmp_path))  # a server running on it
    assert main(["store", "compact", str(tmp_path)]) == 2
    assert "another server is using" in capsys.readouterr().err
    held.release()
    assert main(["store", "compact", str(tmp_path)]) == 0
    assert main(["store", "stat", str(tmp_path / "nothing-here")]) == 2
    assert main(["store", "dump", str(tmp_path), "--topic", "news", "--limit", "0"]) == 2


def test_the_log_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = open_store(tmp_path)
        store.append([stored(1)])
        store.commit()
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
        store.close()
    finally:
        os.umask(old)
    assert modes[DATABASE_NAME] == "0o600" and modes[f"{DATABASE_NAME}-wal"] == "0o600"


def test_a_sequence_given_out_again_replaces_what_a_killed_writer_left(tmp_path: Path) -> None:
    """A worker killed between its write here and its commit in the workers' log left a
    row that was never answered nor delivered: the order gives its sequence out again."""
    store = open_store(tmp_path)
    store.append([stored(1, "a"), stored(2, "a")])
    store.commit()
    store.append([stored(2, "b", "again")])
    store.commit()
    assert [e.sequence for e in store.since({"a": 0}, 2, 1 << 20)[0]] == [1]
    assert [(e.sequence, e.item.data) for e in store.since({"b": 0}, 2, 1 << 20)[0]] == [(2, "again")]
    store.close()


class TurnBroker(NamedTuple):
    """A memory broker over a durable log, on a loop of its own, counting what it delivers."""

    broker: MemoryBroker
    store: EventStore
    durable: DurableLog
    loop: asyncio.AbstractEventLoop
    delivered: list[str]

    def stop(self) -> None:
        self.loop.run_until_complete(self.broker.stop())
        self.loop.close()


def turn_broker(tmp_path: Path, fsync: Fsync, window: HistoryWindow) -> TurnBroker:
    store = open_store(tmp_path, fsync, epoch="e")
    hub = Hub(Subscriptions(8), History(), Metrics(), ids=EpochIds("e"))
    encoder = EventEncoder(hub.ids)
    durable = DurableLog(store, StoreOptions(fsync, 1.0, 3600.0, 1 << 30), encoder, Metrics())
    loop = asyncio.new_event_loop()
    broker = MemoryBroker(BrokerNeeds(encoder, time.monotonic, hub), Durability(durable, window, loop))
    sink = HubSink(hub)
    delivered: list[str] = []
    sink.deliver = lambda events: delivered.extend(e.id for e in events)  # type: ignore[method-assign]
    loop.run_until_complete(broker.start(sink))
    return TurnBroker(broker, store, durable, loop, delivered)


def test_with_fsync_always_a_refused_write_refuses_the_turns_earlier_publishes_too(tmp_path: Path) -> None:
    """The store rolls back the turn's whole transaction: the publishes that waited in it
    are refused with the one that failed, never answered or delivered, and their
    sequences are given out again."""
    parts = turn_broker(tmp_path, Fsync.ALWAYS, HistoryWindow(1 << 20, 3600.0))
    broker, store, durable, loop, delivered = parts
    try:
        answers: list[Outcome] = []
        broker.publish([PublishItem(("t",), "one")], answers.append)  # waits for the turn's commit
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        broker.publish([PublishItem(("t",), "x" * 100_000)], answers.append)
        loop.run_until_complete(asyncio.sleep(0))  # the turn ends
        assert [type(answer) for answer in answers] == [StoreUnavailable, StoreUnavailable]
        assert delivered == []
        assert durable.unready_reason() is not None  # /readyz says so
        broker.publish_now([PublishItem((STATS_TOPIC,), "{}")])  # a snapshot: nothing written
        assert durable.unready_reason() is not None  # so nothing showed the disk has room
        store._db.execute("PRAGMA max_page_count = 1073741823")  # room again
        broker.publish([PublishItem(("t",), "three")], answers.append)
        loop.run_until_complete(asyncio.sleep(0))
        assert answers[2] == ["e-2"] and delivered == ["e-1", "e-2"]
        assert durable.unready_reason() is None
    finally:
        parts.stop()


@pytest.mark.parametrize("fsync", [Fsync.INTERVAL, Fsync.ALWAYS])
def test_the_publishes_of_one_turn_share_one_commit_and_are_answered_after_it(
    tmp_path: Path, fsync: Fsync
) -> None:
    """A group commit: each publish is written as it comes, none is delivered or answered
    before the turn's commit, which `settle` (the reactor's, after a batch of reads) makes
    once for all of them."""
    parts = turn_broker(tmp_path, fsync, HistoryWindow(1, 1.0))
    broker, _, _, loop, delivered = parts
    reader = sqlite3.connect(str(tmp_path / DATABASE_NAME))
    try:
        answers: list[Outcome] = []
        broker.publish([PublishItem(("t",), "one")], answers.append)
        broker.publish([PublishItem(("u",), "two")], answers.append)
        assert answers == [] and delivered == []
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # not committed yet
        broker.settle()
        assert answers == [["e-1"], ["e-2"]] and delivered == ["e-1", "e-2"]
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 2
        loop.run_until_complete(asyncio.sleep(0))  # the turn's own callback finds nothing left
        assert answers == [["e-1"], ["e-2"]]
    finally:
        reader.close()
        parts.stop()


def test_a_publish_made_at_once_comes_after_those_its_turn_answered_first(tmp_path: Path) -> None:
    """Answering the turn's publishes may bring another (a pipelined request read next):
    an at-once publish commits that one too before its own, so subscribers get every
    event in sequence."""
    parts = turn_broker(tmp_path, Fsync.INTERVAL, HistoryWindow(1, 1.0))
    broker, delivered = parts.broker, parts.delivered
    try:
        answers: list[Outcome] = []

        def answered_then_publish(outcome: Outcome) -> None:
            answers.append(outcome)
            broker.publish([PublishItem(("t",), "next")], answers.append)

        broker.publish([PublishItem(("t",), "one")], answered_then_publish)
        assert broker.publish_now([PublishItem(("t",), "now")]) == ["e-3"]
        assert delivered == ["e-1", "e-2", "e-3"]
        assert answers == [["e-1"], ["e-2"]]
    finally:
        parts.stop()


# Acknowledgements and each topic's floor


def test_an_acknowledgement_only_moves_forward_and_outlives_the_store(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, "n@1" if n % 2 else "n@2") for n in range(1, 7)])
    store.commit()
    assert store.acknowledge(("n@1", "n@2"), 0) == {"n@1": 0, "n@2": 0}  # 0: only read
    assert store.acknowledge(("n@1",), 5) == {"n@1": 5}
    assert store.acknowledge(("n@1", "n@2"), 3) == {"n@1": 5, "n@2": 3}  # n@1 stays at 5
    store.close()
    again = open_store(tmp_path)
    assert again.acked(("n@1", "n@2", "n@3")) == {"n@1": 5, "n@2": 3, "n@3": 0}
    # A topic nothing was published to keeps no acknowledgement (no one grows the table).
    assert again.acknowledge(("anything@1",), 5) == {"anything@1": 0}
    assert again._db.execute("SELECT count(*) FROM acks").fetchone()[0] == 2
    again.close()


def test_unacknowledged_events_are_counted_per_topic(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, "n@1" if n % 2 else "n@2") for n in range(1, 11)])
    store.commit()
    assert store.unacked("n@1", 100) == (5, 9, 0, True)
    store.acknowledge(("n@1",), 5)
    assert store.unacked("n@1", 100) == (2, 9, 5, True)
    assert store.unacked("n@9", 100) == (0, 0, 0, True)
    assert store.unacked("n@1", 7) == (1, 7, 5, True)  # up to what the process has
    store.close()


def test_a_trim_raises_only_the_floors_of_the_topics_it_cut(tmp_path: Path) -> None:
    """A user whose own events were all kept is never told they missed some because other
    users' older events were trimmed."""
    store = open_store(tmp_path)
    store.append([stored(1, "n@1", at=1.0), stored(2, "n@2", at=2.0), stored(3, "n@1", at=3.0)])
    store.append([stored(4, "n@2", at=10.0)])
    store.commit()
    store.acknowledge(("n@1",), 1)
    assert store.trim(older_than=5.0, max_bytes=1 << 30) == 3
    assert store.floors(("n@1", "n@2", "n@3")) == {"n@1": 3, "n@2": 2, "n@3": 0}
    assert store.unacked("n@1", 100) == (0, 0, 1, False)  # event 3 was trimmed unread
    store.acknowledge(("n@2",), 2)
    assert store.unacked("n@2", 100) == (1, 4, 2, True)
    events, _, complete = store.since({"n@2": 2}, 4, 1 << 20)
    assert complete and [e.sequence for e in events] == [4]
    assert not store.since({"n@1": 1, "n@2": 2}, 4, 1 << 20)[2]
    store.close()


def test_a_replay_starts_each_topic_at_its_own_sequence(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, ("a", "b", "c")[n % 3]) for n in range(1, 13)])
    store.commit()
    events, whole, complete = store.since({"a": 6, "b": 0}, 12, 1 << 20)
    assert [e.sequence for e in events] == [1, 4, 7, 9, 10, 12] and whole and complete
    store.close()


def test_a_store_of_format_1_takes_its_floor_for_every_topic(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, at=float(n)) for n in range(1, 5)])
    store.commit()
    store.trim(older_than=3.0, max_bytes=1 << 30)
    store._db.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    store._db.execute("DELETE FROM meta WHERE key = 'untracked_floor'")
    store._db.execute("DELETE FROM topic_floors")
    store.close()
    again = open_store(tmp_path)
    assert again.floors(("t", "other")) == {"t": 2, "other": 2}
    assert again._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == str(FORMAT)
    again.close()


def test_a_start_counts_from_the_kept_count_and_reads_only_the_rows_after_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n) for n in range(1, 4)])
    store.commit()
    store.recount()
    store.keep_count()
    other = open_store(tmp_path)  # another process (a worker) writes on
    other.append([stored(n) for n in range(4, 6)])
    other.commit()
    other.close()
    assert (store.events, store.last_sequence) == (3, 3)
    store.recount()
    assert (store.events, store.last_sequence, store.bytes) == (5, 5, 5 * len("event 1t"))
    # The kept count is what a start reads: here made wrong on purpose, to show it is used.
    store._db.execute("UPDATE meta SET value = '3 100 1000' WHERE key = 'counted'")
    store.close()
    again = open_store(tmp_path)
    assert (again.events, again.bytes, again.last_sequence) == (102, 1000 + 2 * len("event 1t"), 5)
    again.close()


def test_a_trim_keeps_the_count_it_leaves(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(n, at=float(n)) for n in range(1, 11)])
    store.commit()
    assert store.trim(older_than=5.0, max_bytes=1 << 30) == 4
    store.close()
    again = open_store(tmp_path)
    assert (again.events, again.last_sequence) == (6, 10)
    kept = again._db.execute("SELECT value FROM meta WHERE key = 'counted'").fetchone()[0]
    assert kept.split()[:2] == ["10", "6"]
    again.close()


def test_a_count_is_not_taken_inside_a_batch_that_may_be_rolled_back(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.append([stored(1)])
    store.commit()
    store.append([stored(2)])  # a turn's batch, not committed yet
    store.recount()  # the sweep's, in the same turn
    store._roll_back()  # the batch's commit failed
    assert (store.events, store.last_sequence) == (1, 1)
    store.close()
