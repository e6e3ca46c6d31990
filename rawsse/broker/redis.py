"""The cluster broker: every node appends to, and reads from, one Redis stream.

Redis gives the one order: an event's id is its stream entry id (`<ms>-<n>`), the same on
every node. Each node reads the stream from its last id (XREAD BLOCK), encodes each event
once and hands it to its hub; the node that accepted a publish gets its event back the
same way, so every node sees the same order. History lives in the stream (trimmed with
`XADD MAXLEN ~`), and a node loads it when it starts, so a client resumes on any node,
after any node's restart.

Publishes that arrive while a round trip is under way are sent together in one MULTI/EXEC
pipeline: dense publishing costs one round trip per batch, not per event, and each HTTP
request's events are still accepted whole or not at all.

When Redis cannot be reached, publishing answers 503 at once, streams stay open, and the
reader reconnects with backoff and catches up from its last id. A publish whose round trip
times out also answers 503, though Redis may have taken it: publishing is at least once.
If Redis trimmed entries this node had not read yet, the node cannot replay them: it marks
its history so that resumes from before them reset, and closes its streams, whose clients
reconnect and are told (`rawsse-reset`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from rawsse.broker.base import Broker, BrokerNeeds, EventSink, Outcome, Reach
from rawsse.core.events import Event
from rawsse.core.publish import PublishItem
from rawsse.errors import BrokerUnavailable, RawsseError

log = logging.getLogger("rawsse")

Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""Stream entries as redis-py returns them (bytes, since responses are not decoded)."""

STREAM_KEY = "rawsse:events"
"""One stream for all topics: one order, so one Last-Event-ID resumes any topic set."""

READ_BLOCK_MS = 1000
READ_COUNT = 1000
"""Entries per XREAD: large enough to batch a burst, small enough to keep a pass short."""

CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0
"""A publish, an acknowledgement or a count fails (503) within this long when Redis stops
answering."""

NODES_KEY = "rawsse:nodes"
"""The live nodes: a sorted set of node names, each scored with when its record expires.
Every node renews its own once a second; a node that dies drops out when its record
expires, and is no longer waited for when presence is counted."""

NODE_TTL = 5.0

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


class RedisBroker(Broker):
    reach = Reach.CLUSTER

    def __init__(
        self, needs: BrokerNeeds, url: str, max_entries: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(needs)
        self._loop = loop
        self._max_entries = max_entries
        self._publisher = aioredis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT
        )
        self._reader = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT,
        )
        self._waiting: list[tuple[Sequence[PublishItem], Callable[[Outcome], None]]] = []
        self._sending: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._last_id = b"0-0"
        self._name = secrets.token_hex(8)
        self._nodes = 1
        self._registering: asyncio.Task[None] | None = None
        self.connected = False

    def unready_reason(self) -> str | None:
        return None if self.connected else "cannot reach redis"

    # Start and stop

    async def start(self, sink: EventSink) -> None:
        await super().start(sink)
        try:
            await self._load_history()
            await self._register()
        except (RedisError, OSError) as exc:
            log.warning("redis unreachable at start (%s); serving streams and retrying", exc)
        self._reading = self._loop.create_task(self._read_forever())

    async def stop(self) -> None:
        for task in (self._reading, self._sending, self._registering):
            if task is not None:
                task.cancel()
        try:
            await self._publisher.zrem(NODES_KEY, self._name)
        except (RedisError, OSError):
            pass  # its record expires by itself
        waiting, self._waiting = self._waiting, []
        for _, done in waiting:
            done(BrokerUnavailable("server stopping"))
        await self._publisher.aclose()
        await self._reader.aclose()

    async def _load_history(self) -> None:
        """Load the stream's entries into history, so resumes work on a node that just
        started; mark everything older as gone when the stream was ever trimmed."""
        entries = cast(Entries, await self._reader.xrevrange(STREAM_KEY, count=self._max_entries))
        entries.reverse()
        events = self._events(entries)
        dropped = 0
        if entries:
            info = await self._reader.xinfo_stream(STREAM_KEY)
            if info.get("entries-added", len(entries) + 1) > len(entries):  # trimmed, or unknown
                dropped = self.encoder.ids.sequence_of(entries[0][0].decode()) - 1
            self._last_id = entries[-1][0]
        self.sink.preload(events, dropped)
        self.connected = True

    # The live nodes

    def process_count(self) -> int:
        return self._nodes

    def sweep(self) -> None:
        if self.connected and self._registering is None:
            self._registering = self._loop.create_task(self._register())

    async def _register(self) -> None:
        """Renew this node's record, drop the expired ones, count the live ones."""
        try:
            now = time.time()
            pipe = self._publisher.pipeline(transaction=False)
            pipe.zadd(NODES_KEY, {self._name: now + NODE_TTL})
            pipe.zremrangebyscore(NODES_KEY, "-inf", now)
            pipe.zcard(NODES_KEY)
            *_, count = await pipe.execute()
            self._nodes = max(int(count), 1)
        except (RedisError, OSError):
            pass  # unreachable: the reader reports it, and the count stays as it was
        finally:
            self._registering = None

    # Publishing

    def publish(self, items: Sequence[PublishItem], done: Callable[[Outcome], None]) -> None:
        """Answered after the round trip that takes `items` with the publishes that came
        meanwhile; refused at once when Redis is out of reach or an item is too large."""
        try:
            self.room.check_room()
            for item in items:  # the id comes from Redis: counted at its longest
                self.encoder.body(item)
            if not self.connected:
                raise BrokerUnavailable("cannot reach redis; retry shortly")
        except RawsseError as error:
            done(error)
            return
        self._waiting.append((items, done))
        if self._sending is None:
            self._sending = self._loop.create_task(self._send())

    async def _send(self) -> None:
        """Send what waits, one pipeline per round trip, until nothing waits."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                pipe = self._publisher.pipeline(transaction=True)
                for items, _ in batch:
                    for item in items:
                        fields: dict[str, str] = {"t": "\n".join(item.topics), "d": item.data}
                        if item.event is not None:
                            fields["e"] = item.event
                        pipe.xadd(STREAM_KEY, fields, maxlen=self._max_entries, approximate=True)  # type: ignore[arg-type]
                try:
                    entry_ids = await pipe.execute()
                except (RedisError, OSError) as exc:
                    for _, done in batch:
                        done(BrokerUnavailable(str(exc) or type(exc).__name__))
                    continue
                position = 0
                for items, done in batch:
                    ids = [entry_id.decode() for entry_id in entry_ids[position : position + len(items)]]
                    position += len(items)
                    done(ids)
        finally:
            self._sending = None

    # Reading

    async def _read_forever(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                if not self.connected:
                    await self._reconnect()
                reply = cast(
                    list[tuple[bytes, Entries]],
                    await self._reader.xread(
                        {STREAM_KEY: self._last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                    ),
                )
                delay = BACKOFF_FIRST
                for _, entries in reply:
                    if entries:
                        self._last_id = entries[-1][0]
                        self.sink.deliver(self._events(entries))
                        if len(entries) == READ_COUNT:  # behind: trimming may overtake us
                            await self._check_gap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reader must outlive anything: streams depend on it
                if isinstance(exc, (RedisError, OSError)):
                    if self.connected:
                        log.warning("redis unreachable (%s); publishing refused until it is back", exc)
                else:
                    log.exception("redis reader failed; retrying")
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            while self.room.overloaded:
                # This node's fan-out is behind: leave the rest in Redis meanwhile.
                await asyncio.sleep(0.01)

    async def _reconnect(self) -> None:
        """Back after an outage: the reader goes on from its last id; if Redis trimmed
        past it meanwhile, resumes from before the gap get a reset instead of a hole."""
        if self._last_id == b"0-0":
            await self._load_history()
            return
        await self._check_gap()
        for _ in range(2):  # the publisher's pooled connection may be stale: refresh it
            try:
                await self._publisher.ping()
                break
            except (RedisError, OSError):
                pass
        log.info("redis reachable again; catching up from %s", self._last_id.decode())
        self.connected = True

    async def _check_gap(self) -> None:
        """If the stream's oldest entry is newer than the last one read here, what lay
        between may be gone (trimmed by MAXLEN, or Redis restarted without its data): the
        streams open here may have missed events, and history cannot replay them."""
        try:
            info = await self._reader.xinfo_stream(STREAM_KEY)
        except ResponseError:  # no stream at all: Redis restarted empty
            info = {}
        first = info.get("first-entry")
        ids = self.encoder.ids
        last = ids.sequence_of(self._last_id.decode())
        oldest = ids.sequence_of(first[0].decode()) if first else None
        if oldest is None and info.get("last-generated-id", b"0-0") == b"0-0":
            oldest = last + 2  # an empty, new stream: whatever followed our last id is lost
        if oldest is not None and oldest > last + 1:
            log.error(
                "events this node had not read are gone from redis; closing its streams so "
                "their clients resume (raise --broker-history, run redis with persistence)"
            )
            self.sink.lost(oldest - 1)

    def _events(self, entries: Entries) -> list[Event]:
        """Encode stream entries once each; an entry this node cannot use (written by
        something else, or over this node's size limit) is logged and skipped."""
        now = self.clock()  # the fan-out's clock: it times each event from here
        encoder = self.encoder
        events = []
        for entry_id, fields in entries:
            event_id = entry_id.decode()
            name = fields.get(b"e")
            try:
                topics = tuple(fields[b"t"].decode().split("\n"))
                item = PublishItem(topics, fields[b"d"].decode(), None if name is None else name.decode())
                events.append(encoder.encode(item, encoder.ids.sequence_of(event_id), event_id, now))
            except (KeyError, ValueError) as exc:
                log.error("skipping stream entry %s: %s", event_id, exc)
        return events
