"""Who receives what: streams grouped by their exact set of topics.

A stream is a small integer slot (its file descriptor in the epoll reactor). Streams that
asked for the same topics share one `Group`, so a fan-out pass builds each group's bytes
once and writes them to every member; a stream of several topics still receives the
events of all its topics in id order, in one write.

Per stream this costs one list entry and one int in preallocated arrays plus its place in
its group's array: no dict entry, no object.
"""

from __future__ import annotations

from array import array
from typing import Protocol

from rawsse.core.slots import Framing


class TopicInterest(Protocol):
    """Told when this process has its first stream on a topic, and when its last one
    leaves (the workers' shared log wakes a worker only for the topics it reads)."""

    def gained(self, topic: str) -> None: ...

    def lost(self, topic: str) -> None: ...


class Group:
    """The streams of one framing (SSE or WebSocket: their bytes differ) on one set of
    topics. A WebSocket stream may have no topic yet: its group has `topics == ()`."""

    __slots__ = ("framing", "members", "topics")

    def __init__(self, topics: tuple[str, ...], framing: Framing) -> None:
        self.topics = topics
        self.framing = framing
        self.members = array("i")


class Subscriptions:
    def __init__(self, capacity: int, interest: TopicInterest | None = None) -> None:
        self._interest = interest
        self._group_of: list[Group | None] = [None] * capacity
        self._position = array("i", bytes(4 * capacity))
        self._groups: dict[tuple[int, tuple[str, ...]], Group] = {}
        self._by_topic: dict[str, list[Group]] = {}
        self.count = 0

    @property
    def capacity(self) -> int:
        return len(self._group_of)

    def add(self, slot: int, topics: tuple[str, ...], framing: Framing = Framing.SSE) -> None:
        names = topics if len(topics) == 1 else tuple(sorted(set(topics)))
        key = (framing, names)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(names, framing)
            for topic in names:
                groups = self._by_topic.get(topic)
                if groups is None:
                    groups = self._by_topic[topic] = []
                    if self._interest is not None:
                        self._interest.gained(topic)
                groups.append(group)
        self._group_of[slot] = group
        self._position[slot] = len(group.members)
        group.members.append(slot)
        self.count += 1

    def release(self, slot: int) -> None:
        """A slot column (rawsse.core.slots): out of its group, if still in one."""
        self.remove(slot)

    def remove(self, slot: int) -> None:
        group = self._group_of[slot]
        if group is None:
            return
        self._group_of[slot] = None
        members = group.members
        position = self._position[slot]
        last = members.pop()
        if last != slot:  # move the last member into the hole: O(1), order is irrelevant
            members[position] = last
            self._position[last] = position
        self.count -= 1
        if not members:
            del self._groups[group.framing, group.topics]
            for topic in group.topics:
                groups = self._by_topic[topic]
                groups.remove(group)
                if not groups:
                    del self._by_topic[topic]
                    if self._interest is not None:
                        self._interest.lost(topic)

    def topics_of(self, slot: int) -> tuple[str, ...]:
        group = self._group_of[slot]
        return () if group is None else group.topics

    def groups_of_topic(self, topic: str) -> list[Group]:
        return self._by_topic.get(topic, [])

    def groups(self) -> list[Group]:
        return list(self._groups.values())
