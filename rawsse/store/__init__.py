"""The durable event log of `--data-dir`: events kept in their one order, with their ids,
in SQLite (WAL mode) from the standard library, so ids and resume outlive the process.

- rawsse.store.directory: the data directory itself: one server's at a time, ours, of a
  format this version reads.
- rawsse.store.events: the events in it: appended in order, replayed by topic in pages,
  trimmed by age and size, synced to disk as `--fsync` promises.
"""
