"""`rawsse store`: an operator's look at a data directory — what it holds (`stat`), one
topic's events (`dump`), and its space given back (`compact`). Reading works while the
server runs (the log is opened read-only; WAL lets readers in); compacting needs the
server stopped, since it rewrites the whole file."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator

from rawsse.errors import StoreUnusable
from rawsse.store.directory import DATABASE_NAME, DataDirectory


def _read_only(directory: str) -> sqlite3.Connection:
    path = os.path.join(directory, DATABASE_NAME)
    if not os.path.exists(path):
        raise StoreUnusable(f"{directory} holds no durable log ({DATABASE_NAME})")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM meta LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise StoreUnusable(f"cannot read the durable log in {directory}: {exc}") from None
    return db


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def stat(directory: str) -> list[tuple[str, str]]:
    """What the log holds, as (name, value) lines."""
    db = _read_only(directory)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        count, size, first, last, oldest, newest = db.execute(
            "SELECT count(*), coalesce(sum(size), 0), min(sequence), max(sequence), min(time), max(time) "
            "FROM events"
        ).fetchone()
        topics = db.execute("SELECT count(DISTINCT topic) FROM topic_events").fetchone()[0]
    finally:
        db.close()
    epoch = meta.get("epoch", "?")
    files = sum(
        os.path.getsize(os.path.join(directory, name))
        for name in (DATABASE_NAME, f"{DATABASE_NAME}-wal")
        if os.path.exists(os.path.join(directory, name))
    )
    return [
        ("format", meta.get("format", "?")),
        ("epoch", epoch),
        ("events", str(count)),
        ("topics", str(topics)),
        ("bytes of events (data and topics)", str(size)),
        ("bytes on disk", str(files)),
        ("first id", "-" if first is None else f"{epoch}-{first}"),
        ("last id", "-" if last is None else f"{epoch}-{last}"),
        ("oldest", _when(oldest)),
        ("newest", _when(newest)),
        ("trimmed up to", f"{epoch}-{meta.get('floor', '0')}"),
    ]


def dump(directory: str, topic: str, after: int = 0, limit: int | None = None) -> Iterator[str]:
    """The events of `topic` after sequence `after`, oldest first, one JSON object a line."""
    db = _read_only(directory)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        rows = db.execute(
            "SELECT e.sequence, e.time, e.topics, e.name, e.data FROM topic_events t "
            "JOIN events e ON e.sequence = t.sequence WHERE t.topic = ? AND t.sequence > ? "
            "ORDER BY t.sequence LIMIT ?",
            (topic, after, -1 if limit is None else limit),
        )
        for sequence, at, topics, name, data in rows:
            event = {"id": f"{epoch}-{sequence}", "time": _when(at), "topics": topics.split("\n")}
            if name is not None:
                event["event"] = name
            event["data"] = data
            yield json.dumps(event, ensure_ascii=False)
    finally:
        db.close()


def compact(directory: str) -> tuple[int, int]:
    """Rewrite the log without the space trimmed events left (SQLite's VACUUM): the
    server must be stopped (its lock is taken here). Returns the sizes before and after."""
    if not os.path.isdir(directory):
        raise StoreUnusable(f"no such data directory: {directory}")
    held = DataDirectory(directory)  # raises StoreUnusable while a server holds it
    try:
        path = held.database
        if not os.path.exists(path):
            raise StoreUnusable(f"{directory} holds no durable log ({DATABASE_NAME})")
        before = os.path.getsize(path)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        finally:
            db.close()
        return before, os.path.getsize(path)
    finally:
        held.release()
