"""A server of many workers (16 here; a million streams on this machine take about 60):
it starts, reloads its keys and stops in bounded time, and its metrics and presence count
the streams of every worker."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.helpers import TIMEOUT, StreamClient, wait_until
from tests.processes import Served, parse_metrics
from tests.tokens import bearer, token

KIND = "integration"

WORKERS = 16
STREAMS = 64
"""Each on a connection of its own, which the kernel spreads over the workers."""

START_LIMIT = 60.0
"""Sixteen workers forked and serving on two shared cores: a few seconds; a minute is a
bound that only a hang misses."""

OLD_SECRET = "the-secret-before-the-rotation-long-enough"
NEW_SECRET = "the-secret-after-the-rotation-also-long-enough"


def open_streams(port: int, count: int, headers: dict[str, str]) -> list[int]:
    async def scenario() -> list[int]:
        streams = [await StreamClient.open(port, "topic=room@7", headers) for _ in range(count)]
        statuses = [stream.status for stream in streams]
        for stream in streams:
            stream.close()
        return statuses

    return asyncio.run(scenario())


def test_sixteen_workers_start_reload_their_keys_and_stop_in_bounded_time(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(OLD_SECRET)
    began = time.monotonic()
    served = Served("--workers", str(WORKERS), "--jwt-secret-file", str(secret), "--heartbeat", "30",
                    ready_lines=WORKERS)  # fmt: skip
    try:
        assert time.monotonic() - began < START_LIMIT
        workers = served.children()
        assert len(workers) == WORKERS
        assert set(open_streams(served.port, STREAMS, bearer(token("7", secret=OLD_SECRET)))) == {200}
        secret.write_text(NEW_SECRET)
        served.process.send_signal(signal.SIGHUP)  # passed to every worker
        new = bearer(token("7", secret=NEW_SECRET))
        wait_until(
            lambda: set(open_streams(served.port, STREAMS, new)) == {200}, "every worker to reload its key"
        )
        assert set(open_streams(served.port, STREAMS, bearer(token("7", secret=OLD_SECRET)))) == {401}
        assert served.children() == workers  # reloaded, not restarted
    finally:
        began = time.monotonic()
        status = served.stop()
    assert status == 0 and time.monotonic() - began < START_LIMIT
    for pid in workers:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), "every worker to be gone")


def test_metrics_and_presence_count_the_streams_of_every_worker() -> None:
    with Served("--workers", str(WORKERS), "--heartbeat", "30", ready_lines=WORKERS) as served:

        async def scenario() -> None:
            streams = [await StreamClient.open(served.port, "topic=room") for _ in range(STREAMS)]
            assert {stream.status for stream in streams} == {200}

            def metrics() -> dict[str, float]:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{served.port}/metrics", timeout=TIMEOUT
                ) as answer:
                    return parse_metrics(answer.read().decode())

            def open_per_worker() -> list[float]:
                values = metrics()
                return [values.get(f'rawsse_streams_open{{worker="{n}"}}', -1) for n in range(WORKERS)]

            # Each worker's figures are shared at its sweep: once a second.
            await asyncio.to_thread(
                wait_until, lambda: sum(open_per_worker()) == STREAMS, "every worker's streams counted"
            )
            assert all(count >= 0 for count in open_per_worker())  # every worker reports
            assert sum(1 for count in open_per_worker() if count > 0) > 1  # spread over several

            def presence() -> dict[str, object]:
                url = f"http://127.0.0.1:{served.port}/presence?topic=room"
                with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
                    found: dict[str, object] = json.loads(answer.read())
                return found

            found = await asyncio.to_thread(presence)
            assert (found["streams"], found["complete"]) == (STREAMS, True)  # every worker answered
            for stream in streams:
                stream.close()

        asyncio.run(scenario())
