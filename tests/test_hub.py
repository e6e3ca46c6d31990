"""Ids, history, coalescing and resume rules of the hub, without sockets."""

from __future__ import annotations

import json

import pytest

from rawsse.core.history import History
from rawsse.core.hub import RESET_EVENT, Hub
from rawsse.core.ids import EpochIds
from rawsse.core.metrics import Metrics
from rawsse.core.publish import PublishItem
from rawsse.core.slots import Framing
from rawsse.core.subscriptions import Subscriptions
from rawsse.errors import EventTooLarge, Overloaded, UnusableId
from tests.parts import memory_broker
from tests.sse_client import EventParser

KIND = "unit"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokeredHub(Hub):
    """A hub with the in-memory broker that numbers what is published to it."""

    def __init__(
        self, history: History, clock: Clock, max_event_bytes: int = 1 << 62, **options: int
    ) -> None:
        super().__init__(Subscriptions(64), history, Metrics(), **options)  # type: ignore[arg-type]
        self.broker = memory_broker(self, clock, max_event_bytes)


def make_hub(history: History | None = None, clock: Clock | None = None, **options: int) -> BrokeredHub:
    return BrokeredHub(history or History(), clock or Clock(), **options)


def epoch(hub: Hub) -> str:
    assert isinstance(hub.ids, EpochIds)
    return hub.ids.epoch


def publish(hub: BrokeredHub, topics: str, data: str) -> str:
    return hub.broker.publish_now([PublishItem(tuple(topics.split(",")), data)])[0]


def catch_up(hub: Hub, topics: tuple[str, ...], last_id: str | None) -> bytes:
    replay, whole = hub.catch_up(topics, last_id)
    assert whole
    return replay


def parse(wire: bytes) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in EventParser().feed(wire.decode())]


def test_ids_are_one_ordered_sequence_across_topics() -> None:
    hub = make_hub()
    ids = [publish(hub, t, "x") for t in ("a", "b", "a")]
    assert [int(i.split("-")[1]) for i in ids] == [1, 2, 3]
    assert {i.split("-")[0] for i in ids} == {epoch(hub)}
    assert epoch(make_hub()) != epoch(hub)


def test_a_pass_writes_each_group_its_events_coalesced_in_order() -> None:
    hub = make_hub()
    subscriptions = hub.subscriptions
    subscriptions.add(1, ("a",))
    subscriptions.add(2, ("a",))
    subscriptions.add(3, ("b", "a"))
    subscriptions.add(4, ("c",))
    publish(hub, "a", "1")
    publish(hub, "b", "2")
    publish(hub, "a,b", "3")
    deliveries = {tuple(d.slots): d for d in hub.take_batch().deliveries}
    assert set(deliveries) == {(1, 2), (3,)}
    assert [data for _, data, _ in parse(deliveries[(1, 2)].data)] == ["1", "3"]
    assert [data for _, data, _ in parse(deliveries[(3,)].data)] == ["1", "2", "3"]
    assert deliveries[(3,)].events == 3
    assert hub.take_batch().deliveries == []


def test_snapshot_excludes_streams_that_join_later() -> None:
    hub = make_hub()
    hub.subscriptions.add(1, ("a",))
    publish(hub, "a", "x")
    [delivery] = hub.take_batch().deliveries
    hub.subscriptions.add(2, ("a",))
    assert list(delivery.slots) == [1]


def test_subscriptions_remove_keeps_groups_consistent() -> None:
    subscriptions = Subscriptions(16)
    for slot in range(10):
        subscriptions.add(slot, ("t",))
    for slot in (0, 5, 9, 3):
        subscriptions.remove(slot)
    subscriptions.remove(3)  # twice is harmless
    [group] = subscriptions.groups_of_topic("t")
    assert sorted(group.members) == [1, 2, 4, 6, 7, 8]
    assert subscriptions.count == 6
    for slot in list(group.members):
        subscriptions.remove(slot)
    assert subscriptions.groups_of_topic("t") == [] and subscriptions.groups() == []


def test_catch_up_replays_only_what_passes_already_took() -> None:
    hub = make_hub()
    first = publish(hub, "a", "1")
    publish(hub, "b", "2")
    publish(hub, "a", "3")
    hub.take_batch()
    hub.subscriptions.add(0, ("a",))
    publish(hub, "a", "4")  # queued for a stream: reaches a joining stream live, not by replay
    assert [data for _, data, _ in parse(catch_up(hub, ("a", "b"), first))] == ["2", "3"]
    assert catch_up(hub, ("a",), None) == b""


def test_an_event_no_stream_is_on_is_taken_at_once_unless_others_wait_before_it() -> None:
    """No pass for an event nobody here reads: it is history at once, so a stream that
    opens next replays it if it resumes and never receives it live. Behind a queued event
    it waits its turn, so events are taken in order."""
    hub = make_hub()
    first = publish(hub, "nobody", "1")
    assert not hub.has_queued and hub.not_yet_taken(first) is None
    hub.subscriptions.add(0, ("a",))
    publish(hub, "a", "2")
    third = publish(hub, "nobody", "3")
    assert hub.not_yet_taken(third) is not None  # behind "2"
    taken: list[str] = []
    hub.when_taken(hub.ids.sequence_of(third), lambda: taken.append("3"))
    batch = hub.take_batch()
    assert [event.item.data for event in batch.events] == ["2", "3"]
    assert taken == ["3"]
    assert [data for _, data, _ in parse(catch_up(hub, ("nobody",), first))] == ["3"]


def test_a_waiter_for_an_event_nobody_here_reads_is_answered_by_the_next_pass() -> None:
    """Not inside the broker's delivery (the waiter opens a stream): the pass that follows
    wakes it, though it has no event to write."""
    hub = make_hub()
    taken: list[int] = []
    hub.when_taken(2, lambda: taken.append(2))
    publish(hub, "nobody", "1")
    assert not hub.has_queued
    publish(hub, "nobody", "2")
    assert taken == [] and hub.has_queued  # a pass is due
    assert hub.take_batch().deliveries == []
    assert taken == [2] and not hub.has_queued


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [("garbage", "malformed-id"), ("ffffffff-1", "unknown-epoch"), ("EPOCH-99", "unknown-id")],
)
def test_unusable_ids_get_a_reset_that_moves_the_client_on(last_id: str, reason: str) -> None:
    hub = make_hub()
    taken = publish(hub, "a", "1")
    hub.take_batch()
    [(event, data, event_id)] = parse(catch_up(hub, ("a",), last_id.replace("EPOCH", epoch(hub))))
    assert (event, json.loads(data), event_id) == (RESET_EVENT, {"reason": reason}, taken)
    assert hub.metrics.resets == 1


def test_history_bounded_per_topic_reports_the_gap_then_replays_what_it_has() -> None:
    hub = make_hub(History(per_topic=2))
    first = publish(hub, "a", "1")
    for n in "2345":
        publish(hub, "a", n)
    publish(hub, "b", "other")
    hub.take_batch()
    parsed = parse(catch_up(hub, ("a",), first))
    assert parsed[0][0] == RESET_EVENT and parsed[0][2] == ""
    assert [data for _, data, _ in parsed[1:]] == ["4", "5"]
    # From an id still covered, no reset.
    assert [data for _, data, _ in parse(catch_up(hub, ("a",), parsed[1][2]))] == ["5"]
    # Topic b lost nothing, so resuming b from the same old id is complete.
    assert [data for _, data, _ in parse(catch_up(hub, ("b",), first))] == ["other"]


def test_history_expires_by_age_and_bytes() -> None:
    clock = Clock()
    history = History(per_topic=100, max_age=60, max_bytes=10_000)
    hub = make_hub(history, clock)
    first = publish(hub, "a", "old")
    second = publish(hub, "a", "missed")
    clock.now += 61
    publish(hub, "b", "new")
    hub.take_batch()
    assert parse(catch_up(hub, ("a",), first))[0][0] == RESET_EVENT
    assert parse(catch_up(hub, ("a",), second)) == []  # nothing after it was lost
    ids = [publish(hub, "c", "x" * 500) for _ in range(100)]
    hub.take_batch()
    replayed = parse(catch_up(hub, ("c",), ids[0]))
    assert replayed[0][0] == RESET_EVENT  # the oldest went, to keep within the byte cap
    # Each event holds its encoding and the data it was published with: both count.
    assert len(replayed) - 1 <= 10_000 // (2 * 500)


def test_publishing_is_refused_while_the_queue_is_full() -> None:
    hub = make_hub(max_queued_bytes=1000)
    hub.subscriptions.add(0, ("a",))  # a stream on "a": its events wait for a pass
    publish(hub, "a", "x" * 2000)  # accepted: the queue was empty
    with pytest.raises(Overloaded):
        publish(hub, "a", "y")
    hub.take_batch()
    publish(hub, "a", "z")


def test_a_long_replay_comes_in_pages_of_whole_events() -> None:
    hub = make_hub()
    first = publish(hub, "a", "0")
    for n in range(1, 10):
        publish(hub, "a", str(n) * 100)
    hub.take_batch()
    received: list[str] = []
    last = first
    pages = 0
    while True:
        replay, whole = hub.catch_up(("a",), last, page_bytes=350)
        assert len(replay) <= 350 or replay.count(b"\n\n") == 1
        events = parse(replay)
        received.extend(data for _, data, _ in events)
        pages += 1
        if whole:
            break
        last = events[-1][2]
    assert received == [str(n) * 100 for n in range(1, 10)]
    assert pages > 3


def test_an_event_larger_than_the_limit_is_refused_and_takes_no_id() -> None:
    hub = make_hub(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        hub.broker.publish_now([PublishItem(("a",), "small"), PublishItem(("a",), "x" * 200)])
    assert publish(hub, "a", "small").endswith("-1")  # the refused batch used no ids


def test_a_resume_ahead_of_this_process_waits_for_the_pass_that_takes_it() -> None:
    """With workers, a client may resume here with an id another worker delivered and
    this one has only queued: it must neither reset nor get those events twice."""
    hub = make_hub()
    hub.subscriptions.add(0, ("a",))  # a stream on "a": its events wait for a pass
    first = publish(hub, "a", "1")
    hub.take_batch()
    second = publish(hub, "a", "2")
    assert hub.not_yet_taken(first) is None
    waiting_for = hub.not_yet_taken(second)
    assert waiting_for is not None
    called: list[int] = []
    hub.when_taken(waiting_for, lambda: called.append(1))
    assert called == []
    hub.take_batch()
    assert called == [1]
    assert catch_up(hub, ("a",), second) == b""
    assert [data for _, data, _ in parse(catch_up(hub, ("a",), first))] == ["2"]
    assert hub.metrics.resets == 0


def test_a_stream_opened_by_a_waiting_resume_gets_the_pass_it_waited_for_once() -> None:
    """The waiter opens its stream at once, with a replay that holds the pass's events:
    the pass's deliveries must not include it as well."""
    hub = make_hub()
    hub.subscriptions.add(0, ("a",))  # a stream on "a": its events wait for a pass
    publish(hub, "a", "1")
    hub.take_batch()
    second = publish(hub, "a", "2")
    publish(hub, "a", "3")
    waiting_for = hub.not_yet_taken(second)
    assert waiting_for is not None
    replays: list[bytes] = []

    def open_stream() -> None:
        replays.append(catch_up(hub, ("a",), second))
        hub.subscriptions.add(7, ("a",))

    hub.when_taken(waiting_for, open_stream)
    deliveries = hub.take_batch().deliveries
    assert [data for _, data, _ in parse(replays[0])] == ["3"]
    assert all(7 not in delivery.slots for delivery in deliveries)


class Told:
    """A TopicInterest that keeps what it was told."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def gained(self, topic: str) -> None:
        self.said.append(("gained", topic))

    def lost(self, topic: str) -> None:
        self.said.append(("lost", topic))


def test_subscriptions_tell_when_the_first_stream_comes_to_a_topic_and_the_last_leaves() -> None:
    told = Told()
    subscriptions = Subscriptions(16, told)
    subscriptions.add(1, ("a",))
    subscriptions.add(2, ("a", "b"))
    subscriptions.add(3, ("a",), Framing.WS)
    assert told.said == [("gained", "a"), ("gained", "b")]
    subscriptions.remove(1)
    subscriptions.remove(2)
    assert told.said[2:] == [("lost", "b")]
    subscriptions.remove(3)
    assert told.said[3:] == [("lost", "a")]


def test_a_stream_from_unacked_starts_its_users_topics_after_their_acknowledgements() -> None:
    hub = make_hub()
    first = publish(hub, "n@1", "1")
    publish(hub, "news", "2")
    publish(hub, "n@2", "3")
    publish(hub, "n@1", "4")
    publish(hub, "n@2,news", "5")
    hub.take_batch()
    # Without a Last-Event-ID: n@1 after its acknowledged event, n@2 from its start, news live.
    replay, whole = hub.catch_up(
        ("n@1", "n@2", "news"), None, acked={"n@1": hub.position_of(first), "n@2": 0}
    )
    assert whole and [data for _, data, _ in parse(replay)] == ["3", "4", "5"]
    # A resume: the shared topic after the Last-Event-ID, the user's after both.
    replay, _ = hub.catch_up(("n@1", "news"), first, acked={"n@1": 4})
    assert [data for _, data, _ in parse(replay)] == ["2", "5"]


def test_an_acknowledgement_older_than_history_is_told_it_missed_events() -> None:
    hub = make_hub(History(per_topic=2))
    for n in range(4):
        publish(hub, "n@1", str(n))
    hub.take_batch()
    events = parse(hub.catch_up(("n@1",), None, acked={"n@1": 0})[0])
    assert [name for name, _, _ in events] == [RESET_EVENT, "message", "message"]


def test_position_of_reads_back_only_ids_this_process_has() -> None:
    """An id answered to its publisher is known at once, queued for the next pass or not:
    a user may acknowledge it before a pass took it."""
    hub = make_hub()
    hub.subscriptions.add(1, ("a",))
    first = publish(hub, "a", "1")
    assert hub.position_of(first) == 1  # queued, not taken by a pass yet
    with pytest.raises(UnusableId, match="unknown-id"):
        hub.position_of(f"{epoch(hub)}-2")  # not given out
    with pytest.raises(UnusableId, match="unknown-epoch"):
        hub.position_of("other-1")


def test_from_unacked_with_an_unusable_last_event_id_still_gets_what_was_not_acknowledged() -> None:
    hub = make_hub()
    sent = [publish(hub, "n@1", str(n)) for n in range(3)]
    hub.take_batch()
    events = parse(hub.catch_up(("n@1",), "other-7", acked={"n@1": 1})[0])
    assert [(name, data) for name, data, _ in events] == [(RESET_EVENT, '{"reason": "unknown-epoch"}'), *[
        ("message", "1"), ("message", "2")]]  # fmt: skip
    assert [event_id for _, _, event_id in events] == ["", *sent[1:]]  # the reset moves no id


def test_stats_snapshots_are_not_kept_for_resumes() -> None:
    """A snapshot of sixty workers' figures is some 50 KB a second: kept, it filled every
    worker's history up to its byte cap. It means nothing a second later."""
    hub = make_hub()
    hub.subscriptions.add(1, ("$stats",))
    first = publish(hub, "$stats", '{"streams_open": 1}')
    publish(hub, "$stats", '{"streams_open": 2}')
    assert len(hub.take_batch().deliveries) == 1  # delivered live, as before
    assert not hub.history.holds("$stats")
    assert catch_up(hub, ("$stats",), first) == b""  # a dashboard's reconnect: no replay, no reset
