"""Publish requests: the three body forms of `POST /publish`, turned into events to publish.

- `?topic=T[&topic=U][&event=E]` in the URL: the raw body, whatever its type, is the data
  (so `curl --data-binary @file` and `curl -d text` both work);
- otherwise `application/x-www-form-urlencoded` with `topic` (repeatable), `data`, `event`;
- otherwise `application/json`: one object `{"topic"|"topics", "data", "event"}`, or a list
  of them (a batch, for throughput). A `data` that is not a string is sent as compact JSON.
  A body without any Content-Type that starts with `{` or `[` is read as JSON too (what a
  bare HTTP client sends); a form-typed body that starts so is refused with a hint, since
  it is JSON sent the way `curl -d` sends everything.
"""

from __future__ import annotations

import functools
import json
from typing import Any, NamedTuple

from rawsse.core.http import parse_pairs
from rawsse.core.sse import check_field
from rawsse.core.topics import MAX_TOPIC_LENGTH, check_topic
from rawsse.errors import FieldError, HttpError, TopicError

MAX_EVENT_NAME_LENGTH = 128
"""Event names are short dispatch keys; the cap keeps them so (same as ids)."""

MAX_FORM_FIELDS = 1000
"""A form publish has a handful of fields; parse_qsl's own guard against field floods."""


class PublishItem(NamedTuple):
    topics: tuple[str, ...]
    data: str
    event: str | None = None


class PublishRequest(NamedTuple):
    items: list[PublishItem]
    batch: bool
    """True for a JSON list: the answer lists ids even for one item."""


def parse_publish(
    query: str, content_type: str, body: bytes, max_topic_length: int = MAX_TOPIC_LENGTH
) -> PublishRequest:
    """Validate a publish request; raise HttpError with the reason when it is refused."""
    params = _form(query) if query else {}
    if "topic" in params:
        if not _QUERY_KEYS.issuperset(params):
            unknown = set(params) - _QUERY_KEYS
            raise HttpError(400, f"unknown query parameters: {', '.join(sorted(unknown))}")
        item = make_item(params["topic"], _utf8(body), _one(params, "event"), max_topic_length)
        return PublishRequest([item], False)
    if params:
        raise HttpError(400, "query parameters other than topic and event are not accepted")
    media_type = _media_type(content_type)
    first = body[:1]
    if first.isspace():
        first = body.lstrip()[:1]
    looks_like_json = first in (b"{", b"[")
    if not media_type and looks_like_json:
        media_type = "application/json"
    if media_type == "application/x-www-form-urlencoded":
        if looks_like_json:
            raise HttpError(
                400,
                "the body looks like JSON, but its Content-Type says form fields: send it with "
                "Content-Type: application/json (curl -H 'Content-Type: application/json' -d ...)",
            )
        fields = _form(_utf8(body))
        if not _FORM_KEYS.issuperset(fields):
            unknown = set(fields) - _FORM_KEYS
            raise HttpError(400, f"unknown form fields: {', '.join(sorted(unknown))}")
        form_data = _one(fields, "data")
        if form_data is None:
            raise HttpError(400, "form field 'data' is required")
        item = make_item(fields.get("topic", []), form_data, _one(fields, "event"), max_topic_length)
        return PublishRequest([item], False)
    if media_type == "application/json":
        try:
            document = json.loads(_utf8(body))
        except ValueError as exc:
            raise HttpError(400, f"invalid JSON: {exc}") from None
        except RecursionError:  # json refuses nesting deeper than the interpreter's stack
            raise HttpError(400, "invalid JSON: nested too deeply") from None
        if isinstance(document, list):
            if not document:
                raise HttpError(400, "a batch must hold at least one event")
            return PublishRequest([json_item(entry, max_topic_length) for entry in document], True)
        return PublishRequest([json_item(document, max_topic_length)], False)
    raise HttpError(
        415,
        "send form fields (application/x-www-form-urlencoded), JSON (application/json), or the data "
        "as the body with ?topic= in the URL",
    )


_QUERY_KEYS = frozenset({"topic", "event"})
_FORM_KEYS = frozenset({"topic", "data", "event"})


@functools.lru_cache(maxsize=64)  # a publisher sends the same Content-Type every time
def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "data is not valid UTF-8") from None


def _form(text: str) -> dict[str, list[str]]:
    try:
        pairs = parse_pairs(text, MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise HttpError(400, "form value is not valid UTF-8") from None
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        values = fields.get(name)
        if values is None:
            fields[name] = [value]
        else:
            values.append(value)
    return fields


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise HttpError(400, f"'{name}' given more than once")
    return values[0]


_JSON_KEYS = frozenset({"topic", "topics", "data", "event"})


def json_item(entry: Any, max_topic_length: int) -> PublishItem:
    if not isinstance(entry, dict):
        raise HttpError(400, "each event must be a JSON object")
    unknown = set(entry) - _JSON_KEYS
    if unknown:
        raise HttpError(400, f"unknown keys: {', '.join(sorted(unknown))}")
    topics: list[Any] = []
    if "topic" in entry:
        topics.append(entry["topic"])
    if "topics" in entry:
        if not isinstance(entry["topics"], list):
            raise HttpError(400, "'topics' must be a list of names")
        topics.extend(entry["topics"])
    if not all(isinstance(topic, str) for topic in topics):
        raise HttpError(400, "topic names must be strings")
    if "data" not in entry:
        raise HttpError(400, "'data' is required")
    data = entry["data"]
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    event = entry.get("event")
    if event is not None and not isinstance(event, str):
        raise HttpError(400, "'event' must be a string")
    try:  # JSON escapes can spell lone surrogates, which have no UTF-8 form
        data.encode()
        (event or "").encode()
    except UnicodeEncodeError:
        raise HttpError(400, "data is not valid UTF-8 (lone surrogate)") from None
    return make_item(topics, data, event, max_topic_length)


def make_item(topics: list[str], data: str, event: str | None, max_topic_length: int) -> PublishItem:
    """One event to publish; raises TopicError or FieldError (ValueErrors, status 400)."""
    if len(topics) == 1:  # the usual: no duplicates to drop
        checked: tuple[str, ...] = (check_topic(topics[0], max_topic_length),)
    elif not topics:
        raise TopicError("at least one topic is required")
    else:
        checked = tuple(dict.fromkeys([check_topic(t, max_topic_length) for t in topics]))
    if event is not None:
        if not event or len(event) > MAX_EVENT_NAME_LENGTH:
            raise FieldError(f"event name must be 1 to {MAX_EVENT_NAME_LENGTH} characters")
        check_field("event", event)
    return PublishItem(checked, data, event)
