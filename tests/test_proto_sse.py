"""SSE encoding and the client-side parser, without sockets."""

from __future__ import annotations

import pytest

from rawsse.proto.ids import format_id, parse_id
from rawsse.proto.sse import HEARTBEAT, EventParser, FieldError, encode_event, encode_retry
from rawsse.proto.topics import TopicError, check_topic


def test_event_wire_format() -> None:
    assert encode_event("hello", "e-1", "greet") == b"id: e-1\nevent: greet\ndata: hello\n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_retry(2500) == b"retry: 2500\n"
    assert HEARTBEAT.startswith(b":") and HEARTBEAT.endswith(b"\n\n")


@pytest.mark.parametrize("separator", ["\n", "\r", "\r\n"])
def test_every_line_break_starts_a_new_data_line(separator: str) -> None:
    wire = encode_event(f"a{separator}id: 9{separator}b")
    assert wire == b"data: a\ndata: id: 9\ndata: b\n\n"


def test_data_with_leading_space_and_blank_lines_round_trips() -> None:
    data = "  indented\n\n\nlast line\r\n"
    [event] = EventParser().feed(encode_event(data, "x-1").decode())
    assert event.data == data.replace("\r\n", "\n")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_id_and_event_refuse_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(FieldError):
        encode_event("x", event_id=bad)
    with pytest.raises(FieldError):
        encode_event("x", event=bad)


def test_parser_handles_chunks_split_anywhere() -> None:
    wire = (
        encode_retry(1000)
        + b": comment\r\n\r\n"
        + encode_event("one\ntwo", "e-1", "kind").replace(b"\n", b"\r\n")
        + encode_event("three", "e-2")
    ).decode()
    for size in (1, 2, 3, 7, len(wire)):
        parser = EventParser()
        events = []
        for start in range(0, len(wire), size):
            events.extend(parser.feed(wire[start : start + size]))
        assert [(e.data, e.event, e.id) for e in events] == [
            ("one\ntwo", "kind", "e-1"),
            ("three", "message", "e-2"),
        ]
        assert parser.retry == 1000
        assert parser.comments == 1


def test_ids_round_trip_and_reject_malformed() -> None:
    parsed = parse_id(format_id("abcd1234", 42))
    assert parsed is not None and (parsed.epoch, parsed.sequence) == ("abcd1234", 42)
    for bad in ["", "42", "-42", "abc-", "abc-x1", "ab c-1", "abc-1-2", "é-1", "a-" + "9" * 200]:
        assert parse_id(bad) is None, bad


def test_topic_rules() -> None:
    for good in ["news", "user:42", "a.b-c_d@e", "x" * 255]:
        assert check_topic(good) == good
    for bad in ["", "x" * 256, "a/b", "a b", "a\x00", "a\nb", "naïve", "%2F", "$system"]:
        with pytest.raises(TopicError):
            check_topic(bad)
