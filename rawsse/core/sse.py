"""Server-Sent Events wire format (WHATWG HTML, "Server-sent events").

Every event is encoded once, here, into the exact bytes that go to every subscriber.
"""

from __future__ import annotations

import re

from rawsse.errors import FieldError

# The WHATWG parser ends a line at CRLF, LF or a bare CR. Splitting on all three is what
# stops a publisher from smuggling an `id:` or `event:` field inside its data.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Event names and ids become one field line each: a line break would start a new field and
# NUL makes the browser ignore an id, so these are refused rather than escaped.
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

HEARTBEAT_COMMENT = b":\n\n"
"""A comment line: ignored by every client, it keeps proxies from timing out the stream
and makes a write that finds dead peers."""


def check_field(name: str, value: str) -> None:
    """Raise FieldError if `value` cannot stand as one `name:` line."""
    if _FORBIDDEN_IN_FIELD.search(value):
        raise FieldError(f"{name} must not contain CR, LF or NUL")


def data_lines(data: str) -> list[str]:
    """The lines of an event's data as every client reads them (a CR, LF or CRLF ends
    one), each sent as one `data:` line."""
    return _LINE_BREAK.split(data)


def encode_event(data: str, event_id: str | None = None, event: str | None = None) -> bytes:
    """Return the wire bytes of one event: `id:`, `event:`, one `data:` line per line of
    data, and the blank line that dispatches it."""
    if event_id is None:
        return event_body(data, event)
    check_field("id", event_id)
    return with_id(event_id, event_body(data, event))


def with_id(event_id: str, body: bytes) -> bytes:
    """An event's bytes: its `id:` line, then its `body` (see `event_body`). The id is one
    of ours (letters, digits and '-'), or checked by `encode_event`."""
    return b"id: %b\n%b" % (event_id.encode(), body)


def event_body(data: str, event: str | None = None) -> bytes:
    """The bytes of one event after its `id:` line: `event:`, one `data:` line per line
    of data, and the blank line."""
    if event is None and "\n" not in data and "\r" not in data:
        return f"data: {data}\n\n".encode()  # the usual event: one line
    parts: list[str] = []
    if event is not None:
        check_field("event", event)
        parts.append(f"event: {event}\n")
    for line in data_lines(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_retry(milliseconds: int) -> bytes:
    """The `retry:` line that sets the client's reconnection delay. No blank line follows:
    the field takes effect when parsed, and a blank line here would make lenient parsers
    (httpx-sse, for one) dispatch an empty event."""
    return f"retry: {int(milliseconds)}\n".encode()
