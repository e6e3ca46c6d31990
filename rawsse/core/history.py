"""Recent events per topic, kept for resuming streams, bounded by count, age and bytes."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping

from rawsse.core.events import Event

HISTORY_PER_TOPIC = 300
"""Centrifugo's recovery ceiling; nchan keeps 10. Enough to bridge a reconnect at tens of
events per second."""

HISTORY_AGE = 3600.0
"""nchan's message_timeout: an hour-old event is no longer worth replaying."""

HISTORY_BYTES = 64 * 1024 * 1024
"""Caps history memory whatever the number of topics; the oldest events go first."""


class History:
    def __init__(
        self,
        per_topic: int = HISTORY_PER_TOPIC,
        max_age: float = HISTORY_AGE,
        max_bytes: int = HISTORY_BYTES,
    ) -> None:
        self._per_topic = per_topic
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._by_topic: dict[str, deque[Event]] = {}
        # Highest sequence dropped from each topic that still has events; `_floor` covers
        # topics whose last events were dropped (their entries are deleted to stay bounded).
        self._dropped: dict[str, int] = {}
        self._floor = 0
        self._all: deque[Event] = deque()
        self._bytes = 0

    def mark_dropped(self, sequence: int) -> None:
        """Events up to `sequence` may exist but are not here (history loaded late)."""
        self._floor = max(self._floor, sequence)

    def add(self, event: Event) -> None:
        if self._per_topic <= 0:
            self._floor = event.sequence
            return
        self._all.append(event)
        self._bytes += event.held
        for topic in event.topics:
            events = self._by_topic.get(topic)
            if events is None:
                events = self._by_topic[topic] = deque()
            events.append(event)
            if len(events) > self._per_topic:
                self._dropped[topic] = events.popleft().sequence
        # Most adds expire nothing: the check is made here, without the call.
        if self._all[0].time < event.time - self._max_age or self._bytes > self._max_bytes:
            self.expire(event.time)

    def expire(self, now: float) -> None:
        """Drop events older than the age limit, and the oldest beyond the byte limit."""
        oldest = now - self._max_age
        everything = self._all
        while everything and (everything[0].time < oldest or self._bytes > self._max_bytes):
            event = everything.popleft()
            self._bytes -= event.held
            for topic in event.topics:
                events = self._by_topic.get(topic)
                if events and events[0] is event:
                    events.popleft()
                    self._dropped[topic] = event.sequence
                    if not events:
                        del self._by_topic[topic]
                        del self._dropped[topic]
                        self._floor = max(self._floor, event.sequence)

    def holds(self, topic: str) -> bool:
        return topic in self._by_topic

    def since(self, starts: Mapping[str, int], upto: int) -> tuple[list[Event], bool]:
        """Events on each topic of `starts` after its sequence there, up to `upto`, in
        sequence order, each once; and whether that list is complete (False when some may
        have been dropped)."""
        complete = True
        runs: list[list[Event]] = []
        for topic, after in starts.items():
            if after < self._floor or self._dropped.get(topic, 0) > after:
                complete = False
            events = self._by_topic.get(topic)
            if not events:
                continue
            run: list[Event] = []
            for event in reversed(events):
                if event.sequence <= after:
                    break
                if event.sequence <= upto:
                    run.append(event)
            run.reverse()
            if run:
                runs.append(run)
        if len(runs) == 1:
            return runs[0], complete
        merged: list[Event] = []
        for event in heapq.merge(*runs, key=lambda e: e.sequence):
            if not merged or merged[-1] is not event:  # one event on two of the topics
                merged.append(event)
        return merged, complete
