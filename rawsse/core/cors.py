"""Cross-origin rules for browsers: which page origins may open streams, publish and
disconnect, and the headers that tell the browser so. No I/O: request headers in,
response headers (or a 403) out.

A request without an `Origin` header (curl, servers) or from the page's own origin (the
dashboard) is always let through, as before. A request from another origin is let
through only when `--cors-origin` lists it (or is `*`), and is otherwise refused with 403:
the browser would refuse the answer anyway for want of `Access-Control-Allow-Origin`, and a
refusal keeps a page on some other site from publishing through a visitor's browser on
this machine (a loopback publish needs no token).
"""

from __future__ import annotations

from rawsse.core.http import Request, response
from rawsse.errors import ConfigError, HttpError

ANY = "*"

PREFLIGHT_MAX_AGE = 600
"""Seconds a browser may reuse a preflight answer (Chromium caps it at 7200)."""

ALLOWED_REQUEST_HEADERS = "Authorization, Content-Type, Last-Event-ID"
"""What a page may send: a publish token, a JSON body, and EventSource's resume header."""


def parse_origins(setting: str | None) -> frozenset[str]:
    """`*`, or comma-separated origins like `https://app.example.com:8443`; empty for none."""
    if not setting or not setting.strip():
        return frozenset()
    origins = frozenset(part.strip().rstrip("/").lower() for part in setting.split(",") if part.strip())
    for origin in origins:
        if origin == ANY:
            continue
        scheme, separator, host = origin.partition("://")
        if scheme not in ("http", "https") or not separator or not host or "/" in host or "*" in host:
            raise ConfigError("cors_origin", f"must be '*' or scheme://host[:port], got {origin!r}")
    if ANY in origins and len(origins) > 1:
        raise ConfigError("cors_origin", "'*' cannot be combined with other origins")
    return origins


def allow_headers(allowed: str, credentials: bool = False) -> tuple[tuple[str, str], ...]:
    """The response headers that let a page of origin `allowed` (or any page, `*`) read;
    with `credentials`, a listed origin may also send its cookies (`withCredentials`),
    which browsers never allow for `*`."""
    if allowed == ANY:
        return (("Access-Control-Allow-Origin", ANY),)
    headers = (("Access-Control-Allow-Origin", allowed), ("Vary", "Origin"))
    return (*headers, ("Access-Control-Allow-Credentials", "true")) if credentials else headers


class CorsPolicy:
    def __init__(self, origins: frozenset[str], credentials: bool = False) -> None:
        """`origins` as `parse_origins` gives them."""
        self.any = ANY in origins
        self.origins = origins - {ANY}
        self.credentials = credentials
        """Listed origins may send cookies: set when a cookie carries the credential
        (--token-cookie, --auth-url)."""

    def headers(self, allowed: str) -> tuple[tuple[str, str], ...]:
        return allow_headers(allowed, self.credentials)

    def allowed_values(self) -> list[str]:
        """Every value `check` can return, so callers can prepare their bytes once."""
        return [ANY] if self.any else sorted(self.origins)

    def check(self, request: Request) -> str | None:
        """The value of Access-Control-Allow-Origin for this request, None when it needs
        none; raises HttpError(403) for an origin that is not allowed."""
        origin = request.headers.get("origin")
        if origin is None:
            return None
        origin = origin.lower()
        if self.any:
            return ANY
        if origin in self.origins:
            return origin
        host = request.headers.get("host", "").lower()
        if host and origin.partition("://")[2] == host:
            return None  # the page's own origin (the dashboard), whatever the scheme
        raise HttpError(403, f"origin not allowed: {origin[:100]} (see --cors-origin)")

    def preflight(self, request: Request, methods: tuple[str, ...]) -> bytes:
        """The answer to `OPTIONS`: what a page of an allowed origin may send here."""
        allowed = self.check(request)
        headers = [
            *(self.headers(allowed) if allowed else ()),
            ("Allow", ", ".join((*methods, "OPTIONS"))),
            ("Access-Control-Allow-Methods", ", ".join(methods)),
            ("Access-Control-Allow-Headers", ALLOWED_REQUEST_HEADERS),
            ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)),
        ]
        return response(204, headers=headers, keep_alive=request.keep_alive)
