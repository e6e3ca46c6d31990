"""A client's side of SSE for the tests: the WHATWG event stream parser, as a browser
runs it, to check what rawsse sends against the rules rather than against itself."""

from __future__ import annotations

import re

# The WHATWG parser ends a line at CRLF, LF or a bare CR.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
    across events as in a browser. It takes text; feed it through an incremental UTF-8
    decoder, since a character may be split across reads."""

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
