"""A bounded cache of answers that expire: what a verified token grants, what the
application answered. Each entry is kept until its own time; past `entries`, the oldest
put goes first. No timer: an entry found expired is dropped when it is asked for."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class ExpiringCache(Generic[Key, Value]):
    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._kept: OrderedDict[Key, tuple[float, Value]] = OrderedDict()

    def get(self, key: Key, now: float) -> Value | None:
        found = self._kept.get(key)
        if found is None:
            return None
        until, value = found
        if until <= now:
            del self._kept[key]
            return None
        return value

    def put(self, key: Key, value: Value, until: float) -> None:
        self._kept[key] = (until, value)
        self._kept.move_to_end(key)
        if len(self._kept) > self._entries:
            self._kept.popitem(last=False)

    def clear(self) -> None:
        self._kept.clear()
