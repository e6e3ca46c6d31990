"""Who is let in, before a request is answered: the accept budget that paces new streams
(--max-accept-rate), and what a request's headers say of where it comes from — a Host on
this machine's loopback (the DNS-rebinding check), and a proxy's mark (a relayed request).
Plain code on values and the clock's readings; no I/O."""

from __future__ import annotations

import functools

from rawsse.core.http import Request


class AcceptBudget:
    """A token bucket for --max-accept-rate: `rate` streams a second, in bursts of up to a
    second's worth. Plain arithmetic on the clock's readings; no timer."""

    __slots__ = ("_level", "_rate", "_since")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._level = rate
        self._since = now

    def take(self, now: float) -> bool:
        if not self._rate:
            return True
        self._level = min(self._rate, self._level + (now - self._since) * self._rate)
        self._since = now
        if self._level < 1:
            return False
        self._level -= 1
        return True


PROXY_HEADERS = frozenset(
    ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-forwarded-proto", "via")
)
"""Headers a reverse proxy adds to what it relays (RFC 7239, the X-Forwarded-* family,
nginx's X-Real-IP, RFC 9110's Via)."""


RELAYED = "a request relayed by a proxy is not the operator's: set --publish-token and send it"


def relayed(request: Request) -> bool:
    """Whether a proxy says it relayed `request` (for a client it names or not)."""
    return not request.headers.keys().isdisjoint(PROXY_HEADERS)


@functools.lru_cache(maxsize=1024)  # a publisher sends the same Host on every request
def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port); an absent one
    (HTTP/1.0) does too."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    else:
        name = name.rpartition(":")[0] or name if name.count(":") == 1 else name
    if name in ("", "localhost", "::1") or name.endswith(".localhost"):
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)
