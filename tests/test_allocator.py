"""When the server gives the allocator's slack back: after start, and once a burst of
streams is over — never in the middle of one, never more often than TRIM_INTERVAL."""

from __future__ import annotations

from rawsse.reactor.allocator import TRIM_AFTER, TRIM_INTERVAL, TRIM_QUIET, Trimmer

KIND = "unit"


def make() -> tuple[Trimmer, list[int]]:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    return Trimmer(trim), calls


def test_a_burst_is_trimmed_once_it_is_over() -> None:
    trimmer, calls = make()
    trimmer.sweep(TRIM_AFTER, 1.0)  # the burst is still on: many in the last second
    assert calls == []
    trimmer.sweep(TRIM_AFTER + TRIM_QUIET, 2.0)  # quiet enough now
    assert calls == [0]
    trimmer.sweep(TRIM_AFTER + TRIM_QUIET, 3.0)  # nothing new since
    assert calls == [0]


def test_trims_are_spaced_by_the_interval_and_start_counts() -> None:
    trimmer, calls = make()
    trimmer.trim_now(0.0)  # after start
    assert calls == [0]
    trimmer.sweep(2 * TRIM_AFTER, 1.0)
    trimmer.sweep(2 * TRIM_AFTER, 2.0)  # a quiet burst, but too soon after the last trim
    assert calls == [0]
    trimmer.sweep(2 * TRIM_AFTER, TRIM_INTERVAL + 0.5)
    assert calls == [0, 0]
