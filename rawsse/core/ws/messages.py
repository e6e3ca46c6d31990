"""What travels in WebSocket text frames: the server's events, encoded once per event
from what it was published with, as SSE streams get it, and the replies to the client's
commands.

An event is one text frame holding one JSON object:

    {"id": "…", "topic": "news", "event": null, "data": "…"}

- `id`, `event` and `data` are exactly what an EventSource on `/events` sees (`event` is
  null for an unnamed event, which EventSource calls "message"; `data` is always a
  string, its lines joined with "\\n"), in the same order, so a client can switch between
  the transports and resume from the same id;
- `topic` is the first topic the event was published to, and `topics` lists them all
  when there are several (a client subscribed to several topics can tell them apart
  without parsing `data`);
- a reply to a command carries `type`; an event never does.
"""

from __future__ import annotations

import json
from typing import Any

from rawsse.core.ws.frames import text_frame


def event_frame(event_id: str | None, topics: tuple[str, ...], event: str | None, data: str) -> bytes:
    fields: dict[str, Any] = {
        "id": event_id,
        "topic": topics[0] if topics else None,
        "event": event,
        "data": data,
    }
    if len(topics) > 1:
        fields["topics"] = list(topics)
    return text_frame(json.dumps(fields, ensure_ascii=False, separators=(",", ":")))


def reply(kind: str, ref: Any = None, **fields: Any) -> bytes:
    """A command's answer: `{"type": kind, …, "ref": ref}` (`ref` only when the command
    had one)."""
    body: dict[str, Any] = {"type": kind, **fields}
    if ref is not None:
        body["ref"] = ref
    return text_frame(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def error_reply(code: str, message: str, ref: Any = None) -> bytes:
    return reply("error", ref, code=code, message=message)
