"""What a flood is asked to do: its options, with their defaults (the command line's
too), and the loopback source addresses it connects from."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from rawsse.flood.publisher import PublishTemplate

DEFAULT_SOURCES = "127.0.0.2-127.0.0.9"
"""Loopback addresses to connect from, one per process in turn: each source address has
its own source ports (see rawsse.flood.worker.SOURCE_PORTS), so many processes can hold
many streams."""


OPEN_TIME_BASE = 60.0
STREAMS_PER_EXTRA_SECOND = 1000
"""The opening's default time limit: a minute, and a second more for every thousand
streams (a million: about 18 minutes), so a large run is never cut short by a limit sized
for a small one; a server slower than a thousand streams a second is a finding of its own."""


def parse_sources(text: str) -> list[str]:
    """`127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.5`: the loopback addresses to connect
    from. Raises ValueError for anything else (an address of another machine could not be
    bound, and every stream would fail)."""
    sources: list[str] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low = ipaddress.IPv4Address(first)
            high = ipaddress.IPv4Address(last) if last else low
        except ValueError:
            raise ValueError(f"not an IPv4 address or range: {part.strip()!r}") from None
        if not (low.is_loopback and high.is_loopback) or high < low:
            raise ValueError(f"not a range of loopback addresses (127.x.x.x), lowest first: {part.strip()!r}")
        sources.extend(str(ipaddress.IPv4Address(n)) for n in range(int(low), int(high) + 1))
    return sources


@dataclass
class FloodOptions:
    mode: str
    url: str
    streams: int = 1000
    processes: int = 2
    sources: list[str] = field(default_factory=lambda: parse_sources(DEFAULT_SOURCES))
    seconds: float | None = None
    """How long idle and storm hold the streams once open (default: idle 10 s, storm 0)."""
    connect_window: int = 1024
    """Connections in flight at once while opening, shared by the processes."""
    open_timeout: float = 0.0
    """How long the streams may take to open (0: OPEN_TIME_BASE, and a second more for
    every STREAMS_PER_EXTRA_SECOND streams asked for); those not tried by then are reported."""
    pause: float = 0.0
    """broadcast, unicast: seconds to hold the streams idle once open, before publishing."""
    events: int = 100
    size: int = 128
    rate: float = 0.0
    topic: str = "flood"
    subscribe_query: str = "topic={topic}"
    publish_url: str = ""
    publish_body: str = "topic={topic}&data={data}"
    publish_type: str = "application/x-www-form-urlencoded"
    publish_connections: int = 1
    pipeline: int = 1
    """Publish requests in flight per connection: 1 as ordinary HTTP clients send them;
    more to measure a server's pipelined path (a few dozen hide the round trip)."""
    settle: float = 10.0
    max_wait: float = 60.0
    max_publish_seconds: float = 0.0
    token_secret: str = ""
    """Sign a token for each stream (sub `flood-<n>`, allowed the flood's topics)."""
    progress: bool = True

    @property
    def urls(self) -> list[str]:
        """`url` may name several servers (a cluster's nodes), comma-separated: worker
        process i subscribes to the i-th (round-robin); publishing goes to the first."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def websocket(self) -> bool:
        """A ws:// URL floods WebSocket streams (rawsse's /ws) instead of SSE ones."""
        return urlsplit(self.urls[0]).scheme in ("ws", "wss")

    def stream_path(self, topic: str) -> str:
        parts = urlsplit(self.urls[0])
        query = self.subscribe_query.format(topic=topic)
        return (parts.path or "/") + (f"?{query}" if query else "")

    def topic_of(self, stream: int) -> str:
        return self.topic if self.mode != "unicast" else f"{self.topic}-{stream}"

    @property
    def opening_limit(self) -> float:
        if self.open_timeout:
            return self.open_timeout
        return OPEN_TIME_BASE + self.streams / STREAMS_PER_EXTRA_SECOND

    @property
    def hold_seconds(self) -> float:
        if self.seconds is not None:
            return self.seconds
        return 10.0 if self.mode == "idle" else 0.0

    def template(self) -> PublishTemplate:
        parts = urlsplit(self.urls[0])
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        url = self.publish_url or f"{scheme}://{parts.netloc}/publish"
        return PublishTemplate(url, self.publish_body, self.publish_type)
