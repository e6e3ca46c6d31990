"""The bench suite at toy size, so its code cannot rot: every workload against rawsse and
against each peer installed here (the bench extras; nginx with nchan, which .ci/run
installs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

KIND = "bench"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare import SERVERS, WORKLOADS  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    available = [name for name, kind in SERVERS.items() if kind.available() is None]
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--tiny", "--max-wait", "10",
         "--servers", ",".join(available), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    document: dict[str, Any] = json.loads((out / "compare.json").read_text())
    document["stdout"] = finished.stdout
    document["chart"] = out / "compare.png"
    return document


@pytest.mark.parametrize("server", list(SERVERS))
def test_every_workload_runs_and_loses_nothing(tiny_run: dict[str, Any], server: str) -> None:
    reason = SERVERS[server].available()
    if reason is not None:
        pytest.skip(f"{server} is not measured on this machine: {reason}")
    for workload in WORKLOADS:
        result = tiny_run["results"][workload].get(server)
        assert result is not None, f"{workload} failed against {server}"
        assert result["opening"]["streams"] == WORKLOADS[workload].tiny_streams, workload
        if "publish" in result:
            assert result["summary"]["received"] == result["expected_deliveries"], workload
            assert result["summary"]["lost"] == result["summary"]["duplicates"] == 0, workload
        assert result["headline"], workload
        if workload != "W1":  # the CPU the flooder itself took, so a client-bound run shows
            assert result["headline"]["client cpu %"] > 0, workload
    storm = tiny_run["results"]["W4"][server]["headline"]
    assert {"streams/s", "cpu us/strm", "B/stream"} <= set(storm)


def test_table_and_chart(tiny_run: dict[str, Any]) -> None:
    assert "W2 broadcast" in tiny_run["stdout"]
    assert tiny_run["chart"].stat().st_size > 10_000


def test_the_reactor_bench_runs_at_toy_size(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "streams.py"), "all", "--streams", "50", "--rounds", "2",
         "--processes", "1", "--json", str(tmp_path / "streams.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    document = json.loads((tmp_path / "streams.json").read_text())
    assert document["idle"]["streams"] == 50 and document["broadcast"]["ratio"] > 0
