"""The client's command protocol and the per-connection budget, on the sans-I/O session
with a fake clock."""

from __future__ import annotations

import json
from typing import Any

from rawsse.auth.keys import KeyRing, KeySources
from rawsse.auth.ledger import Ledger, StreamAccess
from rawsse.auth.rules import NO_TOPICS, parse_rules
from rawsse.auth.tokens import Grant, TokenOptions, TokenVerifier
from rawsse.core.access import Access, AccessOptions
from rawsse.core.state import ServerState
from rawsse.core.ws.frames import Opcode
from rawsse.core.ws.session import (
    MISSED_PINGS,
    AckTopics,
    BeginClose,
    Fail,
    Finish,
    PublishItems,
    Send,
    SessionLimits,
    Sessions,
    SetTopics,
)
from tests.tokens import SECRET
from tests.ws_frames import client_frame, close_code, close_payload, server_frames

KIND = "unit"

LIMITS = SessionLimits(max_topics=3, max_topic_length=16, max_message=4096)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def session(may_publish: bool = True, draining: bool = False, budget: int = 5) -> tuple[Sessions, Clock]:
    clock = Clock()
    sessions = Sessions(8, LIMITS, clock, ServerState(draining), budget)
    sessions.open(2, may_publish)
    return sessions, clock


def command(sessions: Sessions, body: Any, topics: tuple[str, ...] = ("a",)) -> list[Any]:
    raw = body if isinstance(body, str) else json.dumps(body)
    return sessions.receive(2, client_frame(Opcode.TEXT, raw.encode()), topics, False)


def answer(action: Any) -> dict[str, Any]:
    data = action.answer if isinstance(action, SetTopics) else action.data
    [(opcode, payload)] = server_frames(data)
    assert opcode == Opcode.TEXT
    result: dict[str, Any] = json.loads(payload)
    return result


def test_subscribe_adds_topics_and_answers_with_all_of_them() -> None:
    sessions, _ = session()
    [action] = command(sessions, {"type": "subscribe", "topics": ["b", "a"], "ref": 7})
    assert isinstance(action, SetTopics)
    assert action.topics == ("a", "b")
    assert answer(action) == {"type": "subscribed", "topics": ["a", "b"], "ref": 7}


def test_unsubscribe_may_leave_no_topic() -> None:
    sessions, _ = session()
    [action] = command(sessions, {"type": "unsubscribe", "topics": ["a"]})
    assert isinstance(action, SetTopics)
    assert action.topics == ()
    assert answer(action) == {"type": "unsubscribed", "topics": []}


def test_subscribe_keeps_the_topic_limits_of_events() -> None:
    sessions, _ = session()
    [too_many] = command(sessions, {"type": "subscribe", "topics": ["b", "c", "d"], "ref": 1})
    assert answer(too_many) == {
        "type": "error",
        "code": "invalid",
        "message": "at most 3 topics per stream",
        "ref": 1,
    }
    [bad] = command(sessions, {"type": "subscribe", "topics": ["no/slash"]})
    assert answer(bad)["code"] == "invalid"
    [long] = command(sessions, {"type": "subscribe", "topics": ["x" * 17]})
    assert answer(long)["code"] == "invalid"
    [reserved] = command(sessions, {"type": "subscribe", "topics": ["$other"]})
    assert answer(reserved)["code"] == "invalid"
    [stats] = command(sessions, {"type": "subscribe", "topics": ["$stats"]})
    assert isinstance(stats, SetTopics)


def test_malformed_commands_get_errors_and_the_connection_stays() -> None:
    sessions, _ = session(budget=100)
    for body in [
        "not json",
        "[1, 2]",
        '"text"',
        {"type": "dance"},
        {"topics": ["a"]},
        {"type": "subscribe"},
        {"type": "subscribe", "topics": "a"},
        {"type": "subscribe", "topics": []},
    ]:
        [action] = command(sessions, body)
        assert isinstance(action, Send)
        assert answer(action)["type"] == "error"
        assert answer(action)["code"] == "invalid"


def test_ping_command_answers_pong_with_its_ref() -> None:
    sessions, _ = session()
    [action] = command(sessions, {"type": "ping", "ref": "r1"})
    assert answer(action) == {"type": "pong", "ref": "r1"}


def test_publish_goes_to_the_publish_path_when_allowed() -> None:
    sessions, _ = session(may_publish=True)
    [action] = command(
        sessions, {"type": "publish", "topic": "a", "data": {"n": 1}, "event": "tick", "ref": 3}
    )
    assert isinstance(action, PublishItems)
    assert action.ref == 3
    [item] = action.items
    assert (item.topics, item.data, item.event) == (("a",), '{"n":1}', "tick")


def test_publish_is_checked_as_post_publish_is() -> None:
    sessions, _ = session(may_publish=True)
    for body in [
        {"type": "publish", "data": "x"},
        {"type": "publish", "topic": "$stats", "data": "x"},
        {"type": "publish", "topic": "a"},
        {"type": "publish", "topic": "a", "data": "x", "extra": 1},
        {"type": "publish", "topic": "a", "data": "x", "event": "two\nlines"},
    ]:
        [action] = command(sessions, body)
        assert answer(action)["code"] == "invalid", body


def test_publish_is_refused_without_the_right_and_while_draining() -> None:
    sessions, _ = session(may_publish=False)
    [action] = command(sessions, {"type": "publish", "topic": "a", "data": "x"})
    assert answer(action)["code"] == "forbidden"
    sessions, _ = session(may_publish=True, draining=True)
    [action] = command(sessions, {"type": "publish", "topic": "a", "data": "x"})
    assert answer(action)["code"] == "unavailable"


def test_a_command_flood_is_throttled_then_closed_with_1008() -> None:
    sessions, _clock = session(budget=5)
    results = [command(sessions, {"type": "ping"})[0] for _ in range(10)]
    assert [answer(r)["type"] for r in results[:5]] == ["pong"] * 5
    assert [answer(r)["code"] for r in results[5:]] == ["rate-limited"] * 5
    [closing] = command(sessions, {"type": "ping"})
    assert isinstance(closing, BeginClose)
    [(opcode, payload)] = server_frames(closing.frame)
    assert (opcode, close_code(payload)) == (Opcode.CLOSE, 1008)


def test_the_budget_is_per_second() -> None:
    sessions, clock = session(budget=5)
    for _ in range(5):
        assert answer(command(sessions, {"type": "ping"})[0])["type"] == "pong"
    clock.now += 1.0
    for _ in range(5):
        assert answer(command(sessions, {"type": "ping"})[0])["type"] == "pong"


def test_many_commands_in_one_read_are_each_answered_in_order() -> None:
    sessions, _ = session(budget=100)
    data = b"".join(
        client_frame(Opcode.TEXT, json.dumps({"type": "ping", "ref": n}).encode()) for n in range(20)
    )
    actions = sessions.receive(2, data, ("a",), False)
    assert [answer(a)["ref"] for a in actions] == list(range(20))


def test_keepalive_drops_a_connection_only_after_missed_pings_in_a_row() -> None:
    sessions, _ = session()
    sessions.open(3, False)
    for check in range(MISSED_PINGS):  # each check's pings left unanswered, but not yet enough
        assert sessions.unanswered([2, 3]) == [], check
        sessions.receive(2, client_frame(0xA), ("a",), False)  # a pong from 2 only
    assert sessions.unanswered([2, 3]) == [3]


def test_keepalive_counts_missed_pings_afresh_after_any_frame() -> None:
    sessions, _ = session()
    for _ in range(MISSED_PINGS):
        assert sessions.unanswered([2]) == []
    sessions.receive(2, client_frame(0xA), ("a",), False)  # a late pong: alive after all
    for _ in range(MISSED_PINGS):
        assert sessions.unanswered([2]) == []
    assert sessions.unanswered([2]) == [2]


def test_a_client_silent_through_a_whole_interval_is_kept_and_through_two_dropped() -> None:
    # The million-stream run's readers: alive, but too busy reading a broadcast to answer
    # a ping within the interval after it (what docs/websocket.md promises, in numbers).
    sessions, _ = session()
    sessions.open(3, False)
    assert sessions.unanswered([2, 3]) == []  # nothing since the slot opened
    assert sessions.unanswered([2, 3]) == []  # nor through the whole interval after
    sessions.receive(2, client_frame(0xA), ("a",), False)  # 2 answers at last
    assert sessions.unanswered([2, 3]) == [3]  # 3, silent through two: dropped at the third
    assert sessions.unanswered([2]) == []


def test_a_reused_slot_starts_heard() -> None:
    sessions, _ = session()
    for _ in range(MISSED_PINGS):
        sessions.unanswered([2])
    sessions.release(2)
    sessions.open(2, False)  # another connection in the same slot
    assert sessions.unanswered([2]) == []


def test_no_parser_is_kept_between_whole_frames() -> None:
    sessions, _ = session()
    command(sessions, {"type": "ping"})
    assert not sessions._parsers
    half = client_frame(Opcode.TEXT, b'{"type": "ping"}')[:5]
    sessions.receive(2, half, ("a",), False)
    assert 2 in sessions._parsers
    sessions.release(2)
    assert not sessions._parsers


def test_deeply_nested_json_is_refused_not_raised() -> None:
    sessions, _ = session(budget=100)
    deep = "[" * 2000 + "]" * 2000
    [action] = command(sessions, '{"type": "ping", "ref": ' + deep + "}")
    assert answer(action)["code"] == "invalid"
    nested = '{"type": "publish", "topic": "a", "data": ' + "[" * 985 + "]" * 985 + "}"
    [action] = command(sessions, nested)
    assert answer(action)["code"] == "invalid" or isinstance(action, PublishItems)


def test_the_right_to_publish_does_not_outlive_the_connection() -> None:
    sessions, _ = session(may_publish=True)
    sessions.release(2)
    [action] = command(sessions, {"type": "publish", "topic": "a", "data": "x"})
    assert answer(action)["code"] == "forbidden"


def test_after_a_message_over_the_limit_the_client_close_is_still_found() -> None:
    sessions, _ = session()
    frame = client_frame(Opcode.TEXT, b"a" * 5000)  # the limit here is 4096
    [closing] = sessions.receive(2, frame[:1000], ("a",), False)
    assert isinstance(closing, BeginClose)
    assert close_code(server_frames(closing.frame)[0][1]) == 1009
    # The rest of the oversized frame is skipped unread; the close after it ends the stream.
    rest = frame[1000:] + client_frame(Opcode.CLOSE, b"\x03\xf1")
    actions = [a for piece in (rest[:2000], rest[2000:]) for a in sessions.receive(2, piece, ("a",), True)]
    assert actions == [Finish()]


def test_a_protocol_error_fails_the_connection_and_parses_no_garbage_after_it() -> None:
    sessions, _ = session()
    [failing] = sessions.receive(2, client_frame(Opcode.TEXT, b"x", rsv=4), ("a",), False)
    assert isinstance(failing, Fail)
    reason = b"reserved bits set; no extension was agreed"
    assert server_frames(failing.frame) == [(Opcode.CLOSE, close_payload(1002, reason))]
    assert sessions.receive(2, b"garbage that is no frame", ("a",), True) == []


def test_a_frame_half_read_across_two_checks_is_stuck() -> None:
    sessions, _ = session()
    sessions.open(3, False)
    frame = client_frame(Opcode.TEXT, b'{"type": "ping"}' + b" " * 3000)
    sessions.receive(2, frame[:100], ("a",), False)
    sessions.receive(3, frame[:100], ("a",), False)
    assert sessions.stuck() == []  # half-read now, but not yet since the last check
    sessions.receive(2, frame[100:2000], ("a",), False)  # trickling on: still not done
    sessions.receive(3, frame[100:], ("a",), False)  # done in time
    assert sessions.stuck() == [2]
    sessions.release(2)
    assert sessions.stuck() == []


def test_ack_names_the_streams_private_topics_without_users() -> None:
    """Without a token option there are no users: a stream's private topics are its own."""
    sessions, _ = session()
    [action] = command(sessions, {"type": "ack", "id": "e-3", "ref": 1}, ("n@1", "news", "m@2"))
    assert action == AckTopics(("n@1", "m@2"), "e-3", 1)
    [action] = command(sessions, {"type": "ack", "id": "e-3", "topic": "m@2"}, ("n@1", "m@2"))
    assert action == AckTopics(("m@2",), "e-3", None)
    [action] = command(sessions, {"type": "ack", "id": "e-3", "topic": "m@2"}, ("n@1",))
    assert answer(action)["code"] == "invalid"  # not a topic of the stream


def test_ack_refuses_what_names_no_private_topic() -> None:
    sessions, _ = session(budget=10)
    for body, code in [
        ({"type": "ack"}, "invalid"),
        ({"type": "ack", "id": 3}, "invalid"),
        ({"type": "ack", "id": "e-3", "topic": ["n@1"]}, "invalid"),
        ({"type": "ack", "id": "e-3"}, "invalid"),  # the stream is on "a" only
        ({"type": "ack", "id": "e-3", "topic": "news"}, "invalid"),  # not the stream's
        ({"type": "ack", "id": "e-3", "topic": "x" * 300 + "@1"}, "invalid"),
    ]:
        [action] = command(sessions, body)
        assert answer(action)["code"] == code, body


def test_ack_names_only_the_users_own_topics() -> None:
    """A credential whose patterns read another user's topic never acknowledges it."""
    ledger = Ledger(8)
    verifier = TokenVerifier(KeyRing(KeySources(secret=SECRET)), TokenOptions())
    sessions = Sessions(8, LIMITS, Clock(), ServerState(), access=Access(AccessOptions(), verifier, ledger))
    sessions.open(2, False)
    grant = Grant("42", parse_rules(["n@*"], 255), NO_TOPICS, 1e12)
    ledger.add(2, StreamAccess(grant, None), keep_rules=False)
    [action] = command(sessions, {"type": "ack", "id": "e-3"}, ("n@42", "n@7"))
    assert action == AckTopics(("n@42",), "e-3", None)
    [action] = command(sessions, {"type": "ack", "id": "e-3", "topic": "n@7"}, ("n@42", "n@7"))
    assert answer(action)["code"] == "forbidden"
