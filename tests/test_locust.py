"""The locustfile at toy size, checked against `rawsse flood` on the same server: a load
tool that misreported latency (a reader holding events back in 512-byte chunks once made
locust report 1.3 s where the server took a millisecond) would be worse than none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rawsse.flood.options import FloodOptions
from rawsse.flood.run import run_flood
from tests.processes import Served

KIND = "bench"

ROOT = Path(__file__).resolve().parent.parent
LOCUST = shutil.which("locust", path=str(Path(sys.executable).parent))

TOLERANCE_MS = 5.0
"""How far apart the two medians may be: both should see about a millisecond here."""


def locust_event_medians(port: int, seconds: int) -> dict[str, tuple[float, int]]:
    """(median latency in ms, events counted) of the SSE and the WS subscribers."""
    assert LOCUST is not None
    finished = subprocess.run(
        [LOCUST, "-f", str(ROOT / "bench" / "locustfile.py"), "--headless", "--json", "--skip-log",
         "-u", "10", "-r", "10", "-t", f"{seconds}s", "--host", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    stats: list[dict[str, Any]] = json.loads(finished.stdout)
    medians = {}
    for entry in stats:
        if entry["name"] == "event":
            medians[entry["method"]] = _median(entry["response_times"])
    return medians


def _median(times: dict[str, int]) -> tuple[float, int]:
    """`times`: rounded milliseconds -> count."""
    count = sum(times.values())
    seen = 0
    for value, hits in sorted(times.items(), key=lambda item: float(item[0])):
        seen += hits
        if seen * 2 >= count:
            return float(value), count
    raise AssertionError("no events were counted")


@pytest.mark.skipif(LOCUST is None, reason="locust is not installed (the bench extra)")
def test_locust_and_flood_see_the_same_latency() -> None:
    with Served("--heartbeat", "30") as served:
        medians = locust_event_medians(served.port, 6)
        flood = run_flood(
            FloodOptions(
                mode="broadcast",
                url=f"http://127.0.0.1:{served.port}/events",
                streams=9,
                processes=1,
                events=40,
                rate=10,
                settle=2,
                progress=False,
            )
        )
    flood_median = flood["latency"]["p50"] * 1000
    assert set(medians) == {"SSE", "WS"}, "both kinds of subscriber received events"
    for kind, (locust_median, count) in medians.items():
        assert count >= 10, kind
        assert abs(locust_median - flood_median) <= TOLERANCE_MS, (kind, locust_median, flood_median)
