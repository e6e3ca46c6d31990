"""The words between processes: one class each, one encoder, one decoder, one freshness
rule; what does not decode to a whole word of the right types is dropped."""

from __future__ import annotations

import pytest

from rawsse.core.control import (
    MAX_WORD_AGE,
    Kick,
    PresenceAnswer,
    PresenceAsk,
    is_fresh,
    read_word,
    word_item,
)

KIND = "unit"


@pytest.mark.parametrize(
    "word",
    [
        Kick("42", 1000.5),
        PresenceAsk("a1", "chat", "node-9", 1000.0),
        PresenceAnswer("a1", 3, ("42", "43"), True, 1000.0),
        PresenceAnswer("a1", 0, (), False, 1000.0),
    ],
)
def test_every_word_comes_back_as_it_was_put(word: object) -> None:
    item = word_item(word)  # type: ignore[arg-type]
    assert item.topics == ("$control",)
    assert read_word(item.data) == word


def test_the_json_every_process_of_a_cluster_reads_stays_the_same() -> None:
    assert word_item(Kick("42", 5.0)).data == '{"disconnect": "42", "at": 5.0}'


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1, 2]",
        '{"disconnect": "42"}',  # no time
        '{"disconnect": "42", "at": "5"}',  # a time that is no number
        '{"disconnect": "42", "at": NaN}',
        '{"disconnect": "42", "at": 1' + "0" * 400 + "}",  # an integer beyond any float
        '{"disconnect": 42, "at": 5}',
        '{"presence-ask": {"id": "a", "topic": 7, "from": "n"}, "at": 5}',
        '{"presence-answer": {"id": "a", "streams": true}, "at": 5}',
        '{"something-else": 1, "at": 5}',
    ],
)
def test_what_is_no_whole_word_is_dropped(data: str) -> None:
    assert read_word(data) is None


def test_a_word_read_too_late_is_not_fresh() -> None:
    word = Kick("42", 1000.0)
    assert is_fresh(word, 1000.0 + MAX_WORD_AGE)
    assert not is_fresh(word, 1000.0 + MAX_WORD_AGE + 0.1)
