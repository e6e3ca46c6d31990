"""Server-Sent Events wire format (WHATWG HTML, "Server-sent events").

Every event is encoded once, here, into the exact bytes that go to every subscriber.
"""

from __future__ import annotations

import re

# The WHATWG parser ends a line at CRLF, LF or a bare CR. Splitting on all three is what
# stops a publisher from smuggling an `id:` or `event:` field inside its data.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Event names and ids become one field line each: a line break would start a new field and
# NUL makes the browser ignore an id, so these are refused rather than escaped.
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

HEARTBEAT = b":\n\n"
"""A comment line: ignored by every client, it keeps proxies from timing out the stream
and makes a write that finds dead peers."""


class FieldError(ValueError):
    """An `id` or `event` value that cannot be one SSE field line."""


def check_field(name: str, value: str) -> None:
    """Raise FieldError if `value` cannot stand as one `name:` line."""
    if _FORBIDDEN_IN_FIELD.search(value):
        raise FieldError(f"{name} must not contain CR, LF or NUL")


def encode_event(data: str, event_id: str | None = None, event: str | None = None) -> bytes:
    """Return the wire bytes of one event: `id:`, `event:`, one `data:` line per line of
    data, and the blank line that dispatches it."""
    parts: list[str] = []
    if event_id is not None:
        check_field("id", event_id)
        parts.append(f"id: {event_id}\n")
    if event is not None:
        check_field("event", event)
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_retry(milliseconds: int) -> bytes:
    """The `retry:` line that sets the client's reconnection delay. No blank line follows:
    the field takes effect when parsed, and a blank line here would make lenient parsers
    (httpx-sse, for one) dispatch an empty event."""
    return f"retry: {int(milliseconds)}\n".encode()


class ReceivedEvent:
    """One event as a client sees it (WHATWG's "dispatch the event")."""

    __slots__ = ("data", "event", "id")

    def __init__(self, data: str, event: str, event_id: str) -> None:
        self.data = data
        self.event = event
        self.id = event_id

    def __repr__(self) -> str:
        return f"ReceivedEvent(data={self.data!r}, event={self.event!r}, id={self.id!r})"


class EventParser:
    """Incremental client-side parser following the WHATWG event stream rules: lines end
    at CRLF, LF or CR; comments are counted; `retry:` is kept; the last event id persists
    across events as in a browser. Used by the flooder and the tests."""

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: str) -> list[ReceivedEvent]:
        text = self._buffer + chunk
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        lines = _LINE_BREAK.split(text)
        self._buffer = lines.pop()
        if self._buffer == "" and text.endswith("\r"):
            self._pending_cr = True
        events: list[ReceivedEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ReceivedEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ReceivedEvent("\n".join(self._data), self._event or "message", self.last_event_id)
            self._data = []
            self._event = ""
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None
