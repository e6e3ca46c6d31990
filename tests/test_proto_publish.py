"""The body forms of POST /publish, without sockets."""

from __future__ import annotations

import json

import pytest

from rawsse.core.publish import PublishItem, PublishRequest, parse_publish
from rawsse.errors import RawsseError

KIND = "unit"

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def test_form() -> None:
    parsed = parse_publish("", FORM, b"topic=a&topic=b&data=hi%0Athere&event=e")
    assert parsed.items == [PublishItem(("a", "b"), "hi\nthere", "e")]
    assert not parsed.batch
    # Named tuples compare as tuples: the types are checked too.
    assert type(parsed) is PublishRequest and type(parsed.items[0]) is PublishItem


def test_raw_body_with_topic_in_the_url_whatever_the_type() -> None:
    for content_type in ("text/plain", "", FORM, JSON):
        parsed = parse_publish("topic=a&event=e", content_type, '{"x": 1}\nünï'.encode())
        assert parsed.items == [PublishItem(("a",), '{"x": 1}\nünï', "e")]


def test_json_single_and_batch() -> None:
    single = parse_publish("", JSON, json.dumps({"topics": ["a", "b"], "data": "x"}).encode())
    assert single.items == [PublishItem(("a", "b"), "x")] and not single.batch
    batch = parse_publish(
        "", "application/json; charset=utf-8", json.dumps([{"topic": "a", "data": {"n": 1}}]).encode()
    )
    assert batch.items == [PublishItem(("a",), '{"n":1}')] and batch.batch


def test_duplicate_topics_collapse() -> None:
    assert parse_publish("", FORM, b"topic=a&topic=a&data=x").items[0].topics == ("a",)


def test_json_without_a_content_type_is_read_as_json() -> None:
    parsed = parse_publish("", "", b' {"topic": "a", "data": "x"}')
    assert [(item.topics, item.data) for item in parsed.items] == [(("a",), "x")]
    assert parse_publish("", "", b'[{"topic": "a", "data": "x"}]').batch


def test_json_sent_as_a_form_gets_a_hint() -> None:
    with pytest.raises(RawsseError, match="Content-Type: application/json"):
        parse_publish("", FORM, b'{"topic": "a", "data": "x"}')


@pytest.mark.parametrize(
    ("query", "content_type", "body", "status"),
    [
        ("", FORM, b"topic=a", 400),  # no data
        ("", FORM, b"data=x", 400),  # no topic
        ("", FORM, b"topic=a&data=x&extra=1", 400),
        ("", FORM, b"topic=a&data=1&data=2", 400),
        ("", FORM, b"topic=a&data=%FF", 400),
        ("", FORM, b"topic=a/b&data=x", 400),
        ("", FORM, b"topic=a&data=x&event=", 400),
        ("", FORM, b"topic=a&data=x&event=" + b"e" * 129, 400),
        ("", FORM, b"topic=a&data=x&event=a%0Db", 400),
        ("topic=a", "text/plain", b"\xff\xfe", 400),
        ("topic=a&id=1", "text/plain", b"x", 400),
        ("event=e", "text/plain", b"x", 400),
        ("", "text/plain", b"x", 415),
        ("", "", b"x", 415),
        ("", FORM, b'{"topic": "a", "data": "x"}', 400),  # JSON sent as curl -d sends it
        ("", FORM, b' [{"topic": "a"}]', 400),
        ("", JSON, b"{", 400),
        ("", JSON, b"[]", 400),
        ("", JSON, b'"x"', 400),
        ("", JSON, b'{"topic": "a"}', 400),
        ("", JSON, b'{"topic": 1, "data": "x"}', 400),
        ("", JSON, b'{"topic": "a", "data": "x", "id": "1"}', 400),
        ("", JSON, b'{"topic": "a", "data": "\\ud800"}', 400),
        ("", JSON, b'{"topics": "a", "data": "x"}', 400),
        ("", JSON, b"[" * 100_000, 400),
    ],
)
def test_refusals(query: str, content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(RawsseError) as caught:
        parse_publish(query, content_type, body)
    assert caught.value.status == status
