"""SSE encoding and the client-side parser, without sockets."""

from __future__ import annotations

import pytest

from rawsse.core.ids import EpochIds, StreamIds
from rawsse.core.sse import HEARTBEAT_COMMENT, encode_event, encode_retry
from rawsse.core.topics import check_topic
from rawsse.errors import FieldError, TopicError, UnusableId
from tests.sse_client import EventParser

KIND = "unit"


def test_event_wire_format() -> None:
    assert encode_event("hello", "e-1", "greet") == b"id: e-1\nevent: greet\ndata: hello\n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_retry(2500) == b"retry: 2500\n"
    assert HEARTBEAT_COMMENT.startswith(b":") and HEARTBEAT_COMMENT.endswith(b"\n\n")


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
    ids = EpochIds("abcd1234")
    assert ids.format(42) == "abcd1234-42"
    assert ids.sequence_of("abcd1234-42") == 42
    with pytest.raises(UnusableId, match="unknown-epoch"):
        ids.sequence_of("ffff0000-42")
    for bad in ["", "42", "-42", "abc-", "abc-x1", "ab c-1", "abc-1-2", "é-1", "a-" + "9" * 200]:
        with pytest.raises(UnusableId, match="malformed-id"):
            ids.sequence_of(bad)


def test_redis_entry_ids_keep_their_order_as_integers() -> None:
    ids = StreamIds()
    spelled = ["1700000000000-0", "1700000000000-1", "1700000000001-0"]
    sequences = [ids.sequence_of(text) for text in spelled]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    assert [ids.format(n) for n in sequences] == spelled
    for bad in ["abc-1", "1-" + str(1 << 20), "1-x"]:
        with pytest.raises(UnusableId):
            ids.sequence_of(bad)


def test_topic_rules() -> None:
    for good in ["news", "user:42", "a.b-c_d@e", "x" * 255]:
        assert check_topic(good) == good
    for bad in ["", "x" * 256, "a/b", "a b", "a\x00", "a\nb", "naïve", "%2F", "$system"]:
        with pytest.raises(TopicError):
            check_topic(bad)
