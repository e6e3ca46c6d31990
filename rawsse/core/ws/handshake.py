"""The opening handshake (RFC 6455, section 4.2), without I/O: a parsed request in, the
`101 Switching Protocols` head out, or the HTTP error that says what is missing.

No extension is ever agreed (a `Sec-WebSocket-Extensions` offer is answered without one,
which is how the RFC says no), so permessage-deflate is off: its compression state costs
tens of kilobytes per connection, and compressing secrets next to attacker-chosen text
leaks them (CRIME, BREACH). No subprotocol is chosen either; the protocol is rawsse's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

from rawsse.core.http import Request
from rawsse.errors import HttpError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

VERSION = "13"


def _tokens(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


def check_upgrade(request: Request) -> str:
    """The Sec-WebSocket-Accept value for a valid upgrade request; raises HttpError
    otherwise (426 for a request that is no WebSocket upgrade or asks another version,
    400 for a broken one)."""
    headers = request.headers
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HttpError(
            426, "this is a WebSocket endpoint: send an RFC 6455 upgrade", [("Upgrade", "websocket")]
        )
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HttpError(400, "a WebSocket upgrade needs 'Connection: Upgrade'")
    if headers.get("sec-websocket-version", "").strip() != VERSION:
        raise HttpError(
            426,
            "only WebSocket version 13 is spoken",
            [("Sec-WebSocket-Version", VERSION), ("Upgrade", "websocket")],
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        raise HttpError(400, "Sec-WebSocket-Key must be 16 bytes in base64") from None
    return accept_key(key)


def switching_head(accept: str, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The whole 101 head."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
        f"{extra}\r\n"
    ).encode("latin-1")
