"""The acknowledgements of private topics (rawsse.core.acks) with the cluster broker: kept
in Redis, next to the stream of events they name, so that every node reads the same, and
they persist as Redis persists (docs/scaling.md: AOF for the promises of --data-dir).

One hash, `rawsse:acks`, field the topic, value the acknowledged entry id (`<ms>-<n>`). A
Lua script moves it only forward, comparing the two numbers of the id (not as one Lua
number: that is a double, too narrow for `ms << 20 | n`). What a user has not
acknowledged is counted from this node's history, which holds the stream's entries as
Redis keeps them (--broker-history); older unread events are reported as trimmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rawsse.broker.redis import COMMAND_TIMEOUT, CONNECT_TIMEOUT
from rawsse.core.acks import Acked, AckedDone, Unacked, UnackedDone
from rawsse.core.ids import IdScheme
from rawsse.core.metrics import Metrics
from rawsse.errors import BrokerUnavailable, RawsseError

log = logging.getLogger("rawsse")

T = TypeVar("T")

ACKS_KEY = "rawsse:acks"


_ACKNOWLEDGE = """
local ms, n = string.match(ARGV[1], "^(%d+)-(%d+)$")
ms, n = tonumber(ms), tonumber(n)
local out = {}
for i = 2, #ARGV do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  local keep = current
  if ms > 0 or n > 0 then
    if not current then
      keep = ARGV[1]
    else
      local cms, cn = string.match(current, "^(%d+)-(%d+)$")
      cms, cn = tonumber(cms), tonumber(cn)
      if ms > cms or (ms == cms and n > cn) then keep = ARGV[1] end
    end
    if keep ~= current then redis.call("HSET", KEYS[1], ARGV[i], keep) end
  end
  out[#out + 1] = keep or "0-0"
end
return out
"""
"""Acknowledge ARGV[2..] up to the id ARGV[1] ("0-0": only read); answer where each stands."""


class Unread(Protocol):
    """What this node's history holds of a topic (the hub)."""

    def unread(self, topic: str, after: int) -> tuple[int, int, bool]:
        """How many events on `topic` after `after`, the newest's sequence, and whether
        none after `after` is gone from history."""
        ...

    def holds(self, topic: str) -> bool:
        """Whether history holds events of `topic`."""
        ...


class RedisAcks:
    """An AckBook in Redis: it answers after a round trip."""

    kept = True

    def __init__(
        self, url: str, ids: IdScheme, history: Unread, metrics: Metrics, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT
        )
        self._script = self._redis.register_script(_ACKNOWLEDGE)
        self._ids, self._history, self._metrics, self._loop = ids, history, metrics, loop
        self._tasks: set[asyncio.Task[Any]] = set()

    def acknowledge(self, topics: Sequence[str], sequence: int, done: AckedDone) -> None:
        self._watch(self._loop.create_task(self._acknowledge(topics, sequence)), done)

    def unacked(self, topic: str, until: int, done: UnackedDone) -> None:
        self._watch(self._loop.create_task(self._unacked(topic)), done)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._redis.aclose()

    async def _acknowledge(self, topics: Sequence[str], sequence: int) -> Acked:
        # Written only for a topic this node has events of: no one grows the hash with
        # names nothing was published to. The others are only read.
        moving = [topic for topic in topics if sequence and self._history.holds(topic)]
        staying = [topic for topic in topics if topic not in moving]
        acked: Acked = {}
        for named, given in ((moving, self._ids.format(sequence)), (staying, "0-0")):
            if named:
                answer = await self._script(keys=[ACKS_KEY], args=[given, *named])
                acked.update(
                    (topic, self._sequence(value)) for topic, value in zip(named, answer, strict=True)
                )
        if moving:
            self._metrics.acks += 1
        return {topic: acked[topic] for topic in topics}

    async def _unacked(self, topic: str) -> Unacked:
        acked = (await self._acknowledge((topic,), 0))[topic]
        count, newest, complete = self._history.unread(topic, acked)
        return Unacked(count, newest, acked, complete)

    def _sequence(self, value: bytes | str) -> int:
        text = value.decode() if isinstance(value, bytes) else value
        return self._ids.sequence_of(text)  # "0-0", nothing acknowledged: 0

    def _watch(self, task: asyncio.Task[T], done: Callable[[T | RawsseError], None]) -> None:
        """`done` with the task's result, or BrokerUnavailable when Redis cannot answer."""
        self._tasks.add(task)  # held: the loop keeps only a weak reference

        def finished(task: asyncio.Task[T]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                done(task.result())
            elif isinstance(error, RedisError | OSError | TimeoutError):
                done(BrokerUnavailable(f"cannot reach redis: {error}"))
            elif isinstance(error, RawsseError):
                done(error)
            else:
                log.error("an acknowledgement failed", exc_info=error)
                done(BrokerUnavailable("acknowledgements failed"))

        task.add_done_callback(finished)
