"""Who holds each authorized stream, until when, and how many streams each user and each
client address holds: what expiry, kicks, per-user and per-IP limits and presence read.

Per slot this keeps a place in four preallocated lists (the user, the rules a WebSocket
may still subscribe and publish by, the address) and a float (the expiry), allocated only
when a credential option or a per-address limit is set; an authorized stream adds its
`sub` string and 4 bytes in the expiry wheel. No object, timer or dict entry per stream:
the per-user and per-address counts are kept only when a limit asks for them, and only a
WebSocket that --auth-url authorized keeps its Cookie and Authorization (its later
subscribes are asked about with them).
"""

from __future__ import annotations

import enum
import heapq
import math
from array import array
from typing import NamedTuple

from rawsse.auth.rules import NO_TOPICS, TopicRules
from rawsse.auth.tokens import Grant


class AccessEnded(enum.StrEnum):
    """Why a stream's authorization ended while it was open: the `reason` its client is
    told (a `rawsse-reset` event, or the JSON of a WebSocket close)."""

    TOKEN_EXPIRED = "token-expired"
    """Its token's exp (and the leeway) passed: reconnect with a fresh token."""
    DISCONNECTED = "disconnected"
    """An operator's /disconnect?user= ended its user's session."""


class StreamAccess(NamedTuple):
    """What the API decided about who opens a stream (carried by OpenStream)."""

    grant: Grant | None
    """What its credential allows, until when (its `subscribe` rules: what a WebSocket
    may subscribe to later, beyond public and own topics); None without a credential."""
    address: str | None
    """The client's address, when a per-address limit counts it."""
    credential: tuple[str, str] | None = None
    """The Cookie and Authorization of a WebSocket that --auth-url authorized: its later
    subscribes beyond its grant are asked about with them."""

    @property
    def sub(self) -> str | None:
        return None if self.grant is None else self.grant.sub


NO_ACCESS = StreamAccess(None, None)


COMPACT_SLACK = 1024
"""Stale wheel entries allowed beyond twice the slots before the wheel is rebuilt."""


class ExpiryWheel:
    """Slots by the second their access expires: one array per second that has some, and
    a heap of those seconds (not of streams). An entry of a stream that closed meanwhile is
    recognised when its second comes (its slot's expiry no longer matches) and skipped."""

    def __init__(self) -> None:
        self._buckets: dict[int, array[int]] = {}
        self._seconds: list[int] = []
        self._entries = 0

    def add(self, slot: int, when: float) -> None:
        second = math.ceil(when)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = array("i")
            heapq.heappush(self._seconds, second)
        bucket.append(slot)
        self._entries += 1

    def due(self, now: float) -> list[int]:
        """Slots whose second has come (some may be stale: the caller checks)."""
        slots: list[int] = []
        while self._seconds and self._seconds[0] <= now:
            slots.extend(self._buckets.pop(heapq.heappop(self._seconds)))
        self._entries -= len(slots)
        return slots

    def __len__(self) -> int:
        return self._entries


class Ledger:
    def __init__(self, capacity: int, count_users: bool = False, count_addresses: bool = False) -> None:
        self.sub: list[str | None] = [None] * capacity
        self.subscribe: list[TopicRules] = [NO_TOPICS] * capacity
        self.publish: list[TopicRules] = [NO_TOPICS] * capacity
        self._address: list[str | None] = [None] * capacity
        self.credentials: dict[int, tuple[str, str]] = {}
        """By slot, for the WebSockets whose later subscribes go to --auth-url."""
        self._expires = array("d", [math.inf]) * capacity
        self._wheel = ExpiryWheel()
        self.users: dict[str, int] | None = {} if count_users else None
        self.addresses: dict[str, int] | None = {} if count_addresses else None

    @property
    def capacity(self) -> int:
        """Slots held; 0 where nothing needs a ledger (no credentials, no limits)."""
        return len(self.sub)

    def add(self, slot: int, access: StreamAccess, keep_rules: bool) -> None:
        """A stream opens in `slot`; `keep_rules` for one that may subscribe later."""
        grant = access.grant
        sub = access.sub
        if sub is not None:
            if self.users is not None:
                self.users[sub] = self.users.get(sub, 0) + 1
            self.sub[slot] = sub
        if keep_rules:
            if grant is not None:
                self.subscribe[slot] = grant.subscribe
                self.publish[slot] = grant.publish
            if access.credential is not None:
                self.credentials[slot] = access.credential
        address = access.address
        if address is not None and self.addresses is not None:
            self.addresses[address] = self.addresses.get(address, 0) + 1
            self._address[slot] = address
        if grant is not None and grant.expires != math.inf:
            self._expires[slot] = grant.expires
            self._add_expiry(slot, grant.expires)

    def release(self, slot: int) -> None:
        """The stream in `slot` is gone, or its credential no longer counts: nothing of it
        stays for the slot's next stream (a slot column: rawsse.core.slots)."""
        if not self.capacity:
            return  # no credentials, no limits: nothing is kept
        sub = self.sub[slot]
        if sub is not None:
            self.sub[slot] = None
            _decrement(self.users, sub)
        self.subscribe[slot] = self.publish[slot] = NO_TOPICS
        self.credentials.pop(slot, None)
        address = self._address[slot]
        if address is not None:
            self._address[slot] = None
            _decrement(self.addresses, address)
        self._expires[slot] = math.inf

    def regrant(self, slot: int, subscribe: TopicRules, publish: TopicRules, expires: float) -> None:
        """A WebSocket's credential was asked about again: its new rules and expiry."""
        self.subscribe[slot], self.publish[slot] = subscribe, publish
        self._expires[slot] = expires
        if expires != math.inf:
            self._add_expiry(slot, expires)

    def _add_expiry(self, slot: int, expires: float) -> None:
        self._wheel.add(slot, expires)
        if len(self._wheel) > 2 * len(self.sub) + COMPACT_SLACK:
            # Mostly entries of streams that closed before their second came (a client that
            # reconnects all the time): start again from the expiries in force.
            self._wheel = ExpiryWheel()
            for held, when in enumerate(self._expires):
                if when != math.inf:
                    self._wheel.add(held, when)

    def expired(self, now: float) -> list[int]:
        """Slots whose access ran out by `now` (wall-clock), each once."""
        expires = self._expires
        return [slot for slot in dict.fromkeys(self._wheel.due(now)) if expires[slot] <= now]

    def streams_of(self, sub: str) -> list[int]:
        """Every slot held by user `sub` (a scan of the slot list: kicks are rare)."""
        return [slot for slot, holder in enumerate(self.sub) if holder == sub]

    def held_by_user(self, sub: str) -> int:
        return self.users.get(sub, 0) if self.users is not None else 0

    def held_by_address(self, address: str) -> int:
        return self.addresses.get(address, 0) if self.addresses is not None else 0


def _decrement(counts: dict[str, int] | None, key: str) -> None:
    if counts is None:
        return
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
