"""The events of the data directory, in SQLite (WAL mode).

    meta(key, value)                 format, epoch, floor (the highest sequence trimmed)
    events(sequence, time, topics, name, data, size)
    topic_events(topic, sequence)    one row per topic of each event: replay by topic
    topic_floors(topic, sequence)    the highest sequence of each topic trimmed
    acks(topic, sequence)            the last event a private topic's user acknowledged

An event is written once, in the order's sequence, and never changed. A replay reads one
page (`page_bytes`) at a time by topic, so the server's memory never grows with the
store. Trimming drops the oldest first, by age and by size, and raises the floor of each
topic it cut: a resume (or a user's unacknowledged events) from before a topic's floor is
told its history was exceeded, never given a silent gap.

When a publish is answered (--fsync), always after the commit of its batch (the broker
commits the batches of one loop turn together: a group commit):
- ALWAYS: committed with synchronous=FULL (the WAL is synced at each commit).
- INTERVAL: committed (in the operating system's cache: a process crash loses nothing),
  the WAL synced at most every --fsync-interval (a power loss loses at most that).
- NEVER: committed; synced when the operating system writes it back.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from rawsse.core.publish import PublishItem
from rawsse.errors import StoreUnavailable, StoreUnusable

FORMAT = 2
"""The layout of this version; a store of a newer one is refused, an older one upgraded.
2: each topic's floor, and acknowledgements (a store of format 1 trimmed without keeping
its topics' floors: its floor then stands for every topic's)."""

STORE_AGE = 7 * 24 * 3600.0
"""A week: a user away over a weekend still finds what was sent to them."""

STORE_BYTES = 1 << 30
"""1 GiB of events (their data and topics) on disk, the oldest dropped first."""

FSYNC_INTERVAL = 1.0
"""Redis' `appendfsync everysec`: a power loss costs at most the last second."""

REPLAY_BATCH = 256
"""Rows read at a time while a replay page fills."""

TRIM_BATCH = 10_000
"""Events dropped at most per trim (a sweep's): a long backlog is trimmed over several
sweeps, never in one transaction that would hold the log's writers for long."""


class Fsync(enum.Enum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


_SYNCHRONOUS = {Fsync.ALWAYS: "FULL", Fsync.INTERVAL: "NORMAL", Fsync.NEVER: "NORMAL"}
"""NORMAL, not OFF, for `never`: in WAL mode it syncs at checkpoints only, and keeps the
database whole through a power loss (OFF could corrupt it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    topics TEXT NOT NULL,
    name TEXT,
    data TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS topic_events (
    topic TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (topic, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topic_floors (topic TEXT PRIMARY KEY, sequence INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acks (topic TEXT PRIMARY KEY, sequence INTEGER NOT NULL) WITHOUT ROWID;
"""

_RAISE = "ON CONFLICT (topic) DO UPDATE SET sequence = max(sequence, excluded.sequence)"
"""An acknowledgement or a floor only ever moves forward."""

_ACKNOWLEDGE = (
    "INSERT INTO acks SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM topic_events WHERE topic = ?1) "
    f"OR EXISTS (SELECT 1 FROM topic_floors WHERE topic = ?1) {_RAISE}"
)
"""Acknowledge a topic up to a sequence, if the topic has, or had, events."""


class StoredEvent(NamedTuple):
    sequence: int
    item: PublishItem
    time: float


class EventStore:
    """The events of one data directory's database, for one process."""

    def __init__(self, database: str, fsync: Fsync, epoch: str) -> None:
        """Open (or make) the store at `database`. `epoch` is written into a new store
        and ignored for an existing one: `self.epoch` is the store's. Raises StoreUnusable."""
        self.fsync = fsync
        try:
            # Users' messages: readable by this user only (SQLite gives its -wal and -shm
            # files the log's mode), whatever the umask.
            os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            # Pages of 2 KiB, not SQLite's 4 KiB: a commit writes the pages it changed to the
            # WAL (an event's row, its topic's index entry), and a publish committed alone
            # costs about a fifth less (bench/RESULTS.md, 2026-12-03: 26-29 against 31-34
            # us); an event of up to about 2 KB still fits its page. A new log only: one in
            # WAL mode keeps the size it was made with (`rawsse store compact` keeps it too).
            self._db.execute("PRAGMA page_size=2048")
            self._db.execute("PRAGMA journal_mode=WAL")
            # The workers of one server share the log: a writer waits its turn, briefly.
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[fsync]}")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreUnusable(f"cannot use the store {database}: {exc}") from None
        stored_format = int(meta.get("format", FORMAT))
        if stored_format > FORMAT:
            raise StoreUnusable(
                f"the store {database} has format {stored_format}, newer than this rawsse reads "
                f"({FORMAT}): run the newer rawsse, or give another --data-dir"
            )
        if "epoch" not in meta:
            meta = {"format": str(FORMAT), "epoch": epoch, "floor": "0", "untracked_floor": "0"}
            with self._transaction():
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        elif stored_format < FORMAT:
            meta["untracked_floor"] = meta["floor"]
            with self._transaction():
                rows = [("format", str(FORMAT)), ("untracked_floor", meta["floor"])]
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)
        self.epoch: str = meta["epoch"]
        self.floor = int(meta["floor"])
        self._untracked_floor = int(meta["untracked_floor"])
        """A topic's floor where the store does not know it (trimmed before format 2)."""
        """The highest sequence trimmed: a resume from before it may have missed events."""
        self.last_sequence = self.events = self.bytes = 0
        """The last sequence, how many events, and what they hold (their data and topics:
        what --store-bytes counts), as of the last `recount` and this process's writes."""
        self._open: bool = False
        self._kept: str | None = None
        """The count last kept in `meta` (not written again while it is the same)."""
        try:
            self.recount()
        except StoreUnavailable as error:
            raise StoreUnusable(f"cannot use the store {database}: {error.message}") from None
        self._wal_fd: int | None = None
        self._wal_path = f"{database}-wal"
        self.last_sync = time.monotonic()

    # Writing

    def append(self, records: Sequence[StoredEvent]) -> None:
        """Write `records` (whole, in order) in a transaction left open: `commit` ends it.
        Raises StoreUnavailable (the transaction is rolled back, nothing is kept)."""
        rows = []
        topic_rows: list[tuple[str, int]] = []
        size = 0
        for sequence, item, at in records:
            topics = item.topics
            record_size = len(item.data) + (len(topics[0]) if len(topics) == 1 else sum(map(len, topics)))
            size += record_size
            rows.append((sequence, at, "\n".join(topics), item.event, item.data, record_size))
            for topic in topics:
                topic_rows.append((topic, sequence))
        db = self._db
        try:
            if not self._open:
                db.execute("BEGIN")
                self._open = True
            try:
                db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.IntegrityError:
                # A worker killed between its write here and its commit in the workers'
                # log left rows under sequences the order gives out again: never answered
                # nor delivered, they make way.
                self._drop([row[0] for row in rows])
                db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO topic_events VALUES (?, ?)", topic_rows)
        except sqlite3.Error as exc:
            self._roll_back()
            raise StoreUnavailable(f"cannot write the store: {exc}") from None
        self.last_sequence = records[-1].sequence
        self.events += len(records)
        self.bytes += size

    def _drop(self, sequences: list[int]) -> None:
        marks = ",".join("?" * len(sequences))
        query = f"SELECT sequence, topics FROM events WHERE sequence IN ({marks})"
        found = self._db.execute(query, sequences).fetchall()
        pairs = [(topic, sequence) for sequence, joined in found for topic in joined.split("\n")]
        self._db.executemany("DELETE FROM topic_events WHERE topic = ? AND sequence = ?", pairs)
        self._db.execute(f"DELETE FROM events WHERE sequence IN ({marks})", sequences)

    def commit(self) -> bool:
        """End the open transaction (with --fsync always, the WAL is synced first); False
        when none was open (nothing written since the last). Raises StoreUnavailable
        (then what it held is not kept)."""
        if not self._open:
            return False
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._roll_back()
            raise StoreUnavailable(f"cannot write the store: {exc}") from None
        finally:
            self._open = False
        self._committed = (self.last_sequence, self.events, self.bytes)
        return True

    def _roll_back(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._open = False
        # What was counted since the last commit is gone (not a recount: a read of every
        # row, while the workers' log's lock may be held).
        self.last_sequence, self.events, self.bytes = self._committed

    def recount(self) -> None:
        """Count what the store holds (other processes write to it too): the count kept
        in `meta` (`keep_count`, as of a sequence) and the rows after that sequence, so a
        read of what was written since, not of the whole log. Raises StoreUnavailable."""
        if self._open:
            return  # inside a batch: its rows are not committed, and may never be
        query = (
            "SELECT coalesce(max(sequence), 0), count(*), coalesce(sum(size), 0) FROM events "
            "WHERE sequence > ?"
        )
        try:
            kept = self._db.execute("SELECT value FROM meta WHERE key = 'counted'").fetchone()
            base, count, size = (0, 0, 0) if kept is None else (int(n) for n in kept[0].split())
            last, more, more_size = self._db.execute(query, (base,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the store: {exc}") from None
        self._kept = None if kept is None else kept[0]
        self.last_sequence, self.events, self.bytes = (
            max(last, base, self.floor),
            count + more,
            size + more_size,
        )
        self._committed = (self.last_sequence, self.events, self.bytes)
        if kept is None:
            self.keep_count()  # a log never counted: once, here, then from this count on

    def keep_count(self) -> None:
        """Keep this process's count in `meta`, for the next `recount` to start from: only
        where it is exact (just after `recount`, or in the only process writing)."""
        counted = f"{self.last_sequence} {self.events} {self.bytes}"
        if self._open or counted == self._kept:
            return  # not inside a batch (the count holds what was not committed), nor the same again
        try:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('counted', ?)", (counted,))
        except sqlite3.Error:
            return  # a full disk: the next recount reads more rows, that is all
        self._kept = counted

    def sync(self) -> float:
        """Put what was committed on disk (the WAL's fsync): --fsync interval's tick.
        Returns the seconds the fsync took."""
        began = time.monotonic()
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(self._wal_path, os.O_RDONLY)
            except FileNotFoundError:  # nothing written since the last checkpoint
                self.last_sync = began
                return 0.0
        os.fsync(self._wal_fd)
        self.last_sync = time.monotonic()
        return self.last_sync - began

    # Reading

    def since(
        self, starts: Mapping[str, int], until: int, page_bytes: int
    ) -> tuple[list[StoredEvent], bool, bool]:
        """The events on each topic of `starts` after its sequence there, up to `until`, in
        order, each once: at most a page (at least one event). Returns them, whether they
        are all there were (False: the page is full, the client comes back for the next),
        and whether nothing of those topics after their starts was trimmed (False: events
        may have been missed)."""
        topics = list(starts)
        either = " OR ".join(["(topic = ? AND sequence > ?)"] * len(topics))
        query = (
            "SELECT e.sequence, e.time, e.topics, e.name, e.data FROM events e WHERE e.sequence IN "
            f"(SELECT sequence FROM topic_events WHERE ({either}) AND sequence <= ?) "
            "ORDER BY e.sequence LIMIT ?"
        )
        found: list[StoredEvent] = []
        size = 0
        cursor = 0
        while True:
            bounds = [value for topic in topics for value in (topic, max(starts[topic], cursor))]
            rows = self._db.execute(query, (*bounds, until, REPLAY_BATCH)).fetchall()
            for sequence, at, joined, name, data in rows:
                size += len(data) + 64
                if size > page_bytes and found:
                    return found, False, self._not_trimmed_after(starts)
                found.append(StoredEvent(sequence, PublishItem(tuple(joined.split("\n")), data, name), at))
            if len(rows) < REPLAY_BATCH:
                return found, True, self._not_trimmed_after(starts)
            cursor = rows[-1][0]

    def _not_trimmed_after(self, starts: Mapping[str, int]) -> bool:
        """Whether nothing of each topic after its start was trimmed: the floors read after
        the rows (another process may trim meanwhile; read before, a trim in between would
        hide a gap)."""
        floors = self.floors(list(starts))
        return all(start >= floors[topic] for topic, start in starts.items())

    def floors(self, topics: Sequence[str]) -> dict[str, int]:
        """The highest sequence trimmed of each topic (0: none was)."""
        marks = ",".join("?" * len(topics))
        query = f"SELECT topic, sequence FROM topic_floors WHERE topic IN ({marks})"
        floors = dict.fromkeys(topics, self._untracked_floor)
        floors.update(self._db.execute(query, tuple(topics)).fetchall())
        self.floor = int(self._db.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()[0])
        return floors

    def recent(self, max_events: int, max_bytes: int, since_time: float) -> list[StoredEvent]:
        """The newest events, in order, at most `max_events` and `max_bytes` of data, none
        older than `since_time`: what memory history starts with. Reads only those (from
        the newest back), whatever the store holds."""
        query = "SELECT sequence, time, topics, name, data FROM events ORDER BY sequence DESC"
        rows = self._db.execute(query)
        found: list[StoredEvent] = []
        size = 0
        for sequence, at, joined, name, data in rows:
            size += len(data)
            if at < since_time or size > max_bytes or len(found) == max_events:
                break
            found.append(StoredEvent(sequence, PublishItem(tuple(joined.split("\n")), data, name), at))
        rows.close()
        found.reverse()
        return found

    # Acknowledgements (of private topics: rawsse.core.acks)

    def acknowledge(self, topics: Sequence[str], sequence: int) -> dict[str, int]:
        """Record that the user of each topic received its events up to `sequence` (an
        acknowledgement never moves back; 0 records nothing); returns the sequence each
        topic stands at now. Raises StoreUnavailable.

        Inside a loop turn's open batch of publishes, it is committed with them: if that
        commit fails, the acknowledgement is lost with it, and the events are delivered
        again (at least once), never lost."""
        try:
            acked = self.acked(topics)
            # Written only where it moves forward (a resume storm mostly acknowledges what
            # was), and only for a topic with events, kept or trimmed: no one grows the
            # table with names nothing was ever published to.
            rows = [(topic, sequence) for topic in topics if acked[topic] < sequence]
            if not rows:
                return acked
            if self._open:
                self._db.executemany(_ACKNOWLEDGE, rows)
            else:
                with self._transaction():
                    self._db.executemany(_ACKNOWLEDGE, rows)
            return self.acked(topics)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot write the store: {exc}") from None

    def acked(self, topics: Sequence[str]) -> dict[str, int]:
        """The sequence each topic's user acknowledged (0: none yet)."""
        marks = ",".join("?" * len(topics))
        found = dict.fromkeys(topics, 0)
        query = f"SELECT topic, sequence FROM acks WHERE topic IN ({marks})"
        found.update(self._db.execute(query, tuple(topics)))
        return found

    def unacked(self, topic: str, until: int) -> tuple[int, int, int, bool]:
        """What `topic`'s user has not acknowledged, up to the sequence `until`: how many
        events, the newest's sequence (0: none), the acknowledged sequence, and whether
        none after it was trimmed. Raises StoreUnavailable."""
        try:
            acked = self.acked((topic,))[topic]
            query = (
                "SELECT count(*), coalesce(max(sequence), 0) FROM topic_events "
                "WHERE topic = ? AND sequence > ? AND sequence <= ?"
            )
            count, newest = self._db.execute(query, (topic, acked, until)).fetchone()
            return count, newest, acked, acked >= self.floors((topic,))[topic]
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the store: {exc}") from None

    # Retention

    def trim(self, older_than: float, max_bytes: int) -> int:
        """Drop the events older than `older_than` (a time) and the oldest beyond
        `max_bytes`, reading only those (from the oldest on); returns how many went.
        Raises StoreUnavailable."""
        if self._open:
            return 0  # never inside a batch: the next sweep trims
        over = self.bytes - max_bytes
        cut = gone = size = 0
        topic_floors: dict[str, int] = {}
        rows = self._db.execute(
            "SELECT sequence, time, size, topics FROM events ORDER BY sequence LIMIT ?", (TRIM_BATCH,)
        )
        for sequence, at, record_size, joined in rows:
            if at >= older_than and size >= over:
                break
            cut, gone, size = sequence, gone + 1, size + record_size
            for topic in joined.split("\n"):
                topic_floors[topic] = sequence
        rows.close()
        if not gone:
            return 0
        self.recount()  # exact, for the count kept with the trim (other processes write too)
        try:
            with self._transaction():
                self._db.executemany(f"INSERT INTO topic_floors VALUES (?, ?) {_RAISE}", topic_floors.items())
                # By topic: the index of topic_events leads with it.
                pairs = [(topic, cut) for topic in topic_floors]
                self._db.executemany("DELETE FROM topic_events WHERE topic = ? AND sequence <= ?", pairs)
                self._db.execute("DELETE FROM events WHERE sequence <= ?", (cut,))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (str(cut),))
                counted = f"{self.last_sequence} {self.events - gone} {self.bytes - size}"
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('counted', ?)", (counted,))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot trim the store: {exc}") from None
        self._kept = counted
        self.floor = cut
        self.events -= gone
        self.bytes -= size
        self._committed = (self.last_sequence, self.events, self.bytes)
        return gone

    def close(self) -> None:
        self.commit()
        if self._wal_fd is not None:
            os.close(self._wal_fd)
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
