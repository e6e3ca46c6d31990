"""`rawsse serve --data-dir`: events, ids and resume outlive the process, real processes
killed and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from rawsse.core.hub import RESET_EVENT
from tests.helpers import StreamClient, get, post, publish, wait_until
from tests.processes import RAWSSE, Served, parse_metrics

KIND = "integration"


async def publish_all(port: int, topic: str, datas: list[str]) -> list[str]:
    return [await publish(port, topic, data) for data in datas]


async def replay(port: int, topic: str, last_id: str, count: int) -> list[tuple[str, str, str | None]]:
    stream = await StreamClient.open(port, f"topic={topic}", {"Last-Event-ID": last_id})
    events = await stream.events(count)
    stream.close()
    return [(e.id, e.data, e.event) for e in events]


async def everything_after(port: int, topic: str, last_id: str) -> list[str]:
    """The ids the log holds on `topic` after `last_id`: a resume read up to a last event
    published for the purpose (how many there are is not known ahead)."""
    end = await publish(port, topic, "the end")
    stream = await StreamClient.open(port, f"topic={topic}", {"Last-Event-ID": last_id})
    ids = []
    while (event := await stream.next_event()).id != end:
        ids.append(event.id)
    stream.close()
    return ids


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return parse_metrics(answer.read().decode())[name]


GROUPS = [pytest.param((), id="one-process"), pytest.param(("--workers", "2"), id="2-workers")]
"""A server of one process, and a group of workers sharing the log."""


def serve(data: str, group: tuple[str, ...], *args: str) -> Served:
    return Served("--data-dir", data, *group, *args, ready_lines=2 if group else 1)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_ids_and_resume_outlive_a_restart(tmp_path: Path, fsync: str, group: tuple[str, ...]) -> None:
    data = str(tmp_path / "data")
    with serve(data, group, "--fsync", fsync) as first:
        ids = asyncio.run(publish_all(first.port, "t", [f"before {n}" for n in range(5)]))
    with serve(data, group, "--fsync", fsync) as second:
        [later] = asyncio.run(publish_all(second.port, "t", ["after"]))
        assert later.split("-")[0] == ids[0].split("-")[0]  # the same epoch: ids go on
        received = asyncio.run(replay(second.port, "t", ids[1], 4))
    assert received == [(ids[2], "before 2", "message"), (ids[3], "before 3", "message"),
                        (ids[4], "before 4", "message"), (later, "after", "message")]  # fmt: skip


def test_a_resume_older_than_memory_is_replayed_from_the_store(tmp_path: Path) -> None:
    with Served("--data-dir", str(tmp_path / "data"), "--history", "2") as served:
        ids = asyncio.run(publish_all(served.port, "t", [f"event {n}" for n in range(10)]))
        received = asyncio.run(replay(served.port, "t", ids[0], 9))
        assert [event_id for event_id, _, _ in received] == ids[1:]
        assert RESET_EVENT not in [name for _, _, name in received]
        assert metric(served.port, "rawsse_store_replays_total") >= 1


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_every_answered_publish_survives_a_kill_in_the_middle_of_a_burst(
    tmp_path: Path, fsync: str, group: tuple[str, ...]
) -> None:
    """The server killed (every process of a group at once) right after answers, while
    four publishers send: the publishes of one turn share a commit, and none is answered
    before it."""
    data = str(tmp_path / "data")
    served = serve(data, group, "--fsync", fsync)
    processes = [served.process.pid, *(served.children() if group else [])]
    answered: list[str] = []

    async def burst() -> None:
        async def lane(lane_number: int) -> None:
            n = 0
            while True:
                try:
                    answered.append(await publish(served.port, "t", f"{lane_number}.{n}"))
                except (OSError, AssertionError, asyncio.IncompleteReadError):
                    return  # killed: this one may or may not be stored
                n += 1
                if len(answered) == 300:
                    for pid in processes:
                        os.kill(pid, signal.SIGKILL)

        await asyncio.gather(*(lane(n) for n in range(4)))

    asyncio.run(burst())
    served.process.wait()
    for pid in processes[1:]:  # the workers, gone with their supervisor
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), "the killed worker to be gone")
    assert len(answered) >= 300
    # Answers come in any order across lanes: resume from before the lowest one.
    epoch, lowest = answered[0].split("-")[0], min(int(i.split("-")[1]) for i in answered)
    with serve(data, group, "--fsync", fsync) as again:
        stored = asyncio.run(everything_after(again.port, "t", f"{epoch}-{lowest - 1}"))
    assert set(answered) <= set(stored)  # nothing answered is lost (and more may be there)
    assert stored == sorted(stored, key=lambda i: int(i.split("-")[1]))


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with Served("--data-dir", data):
        second = subprocess.run(
            [*RAWSSE, "serve", "--port", "0", "--data-dir", data], capture_output=True, text=True, timeout=30
        )
    assert second.returncode == 2
    refusal = second.stderr.strip().splitlines()[-1]
    assert refusal == f"rawsse: another server is using the data directory {data}"


def test_a_data_dir_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("someone else's")
    run = subprocess.run([*RAWSSE, "serve", "--port", "0", "--data-dir", str(theirs)], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert run.returncode == 2 and "not a rawsse data directory" in run.stderr
    assert (theirs / "notes.txt").read_text() == "someone else's" and len(list(theirs.iterdir())) == 1


def test_a_full_disk_refuses_publishes_with_503_and_loses_nothing_answered(tmp_path: Path) -> None:
    """RLIMIT_FSIZE stands for the full disk: a write past it fails. Publishes get 503
    with Retry-After, /readyz says why, a stream stays open, and after a restart with
    room every answered event is there."""
    data = str(tmp_path / "data")
    answered: list[str] = []
    with Served("--data-dir", data, file_size_limit=256 * 1024) as served:

        async def fill() -> tuple[int, dict[str, str], str, int, list[str]]:
            stream = await StreamClient.open(served.port, "topic=t")
            for n in range(2000):
                body = urlencode({"topic": "t", "data": f"{n} " + "x" * 1000}).encode()
                answer = await post(served.port, "/publish", body)
                if answer.status != 200:
                    break
                answered.append(answer.json()["id"])
            else:
                raise AssertionError("the limit was never reached")
            ready = await get(served.port, "/readyz")
            received = [e.id for e in await stream.events(len(answered))]  # it stayed open
            stream.close()
            return answer.status, answer.headers, ready.body.decode(), ready.status, received

        status, headers, ready, ready_status, received = asyncio.run(fill())
        assert status == 503 and headers.get("retry-after") == "1"
        assert ready_status == 503 and "durable log" in ready
        assert received == answered
    assert len(answered) > 10
    with Served("--data-dir", data) as again:
        replayed = asyncio.run(replay(again.port, "t", answered[0], len(answered) - 1))
    assert [event_id for event_id, _, _ in replayed] == answered[1:]


def test_a_torn_tail_of_the_log_is_never_served(tmp_path: Path) -> None:
    """A power loss can leave the log's last write half done: SQLite's WAL checksums drop
    it at the next start; what is served is whole, and ids go on after the last event kept."""
    data = tmp_path / "data"
    served = Served("--data-dir", str(data))
    ids = asyncio.run(publish_all(served.port, "t", [f"event {n}" for n in range(50)]))
    served.process.send_signal(signal.SIGKILL)
    served.process.wait()
    wal = data / "events.db-wal"
    assert wal.stat().st_size > 4096
    with wal.open("r+b") as file:  # the last frame half written
        file.truncate(wal.stat().st_size - 2000)
    with Served("--data-dir", str(data)) as again:
        replayed = asyncio.run(replay(again.port, "t", ids[0], 1))
        assert replayed[0][0] == ids[1] and replayed[0][1] == "event 1"
        [after] = asyncio.run(publish_all(again.port, "t", ["after"]))
        kept = asyncio.run(replay(again.port, "t", ids[0], 1))
    assert after.split("-")[0] == ids[0].split("-")[0]
    assert int(after.split("-")[1]) <= int(ids[-1].split("-")[1]) + 1  # goes on from what was kept
    assert kept[0][1] == "event 1"


def test_every_answered_publish_survives_a_worker_killed_in_the_middle_of_a_burst(tmp_path: Path) -> None:
    """One worker of a group killed while four publishers send; the others go on, the
    supervisor replaces it, and every answered event is in the log after a restart."""
    data = str(tmp_path / "data")
    group = ("--workers", "2")
    answered: list[str] = []
    with serve(data, group) as served:
        victim = served.children()[0]

        async def burst() -> None:
            async def lane(lane_number: int) -> None:
                n = 0
                while len(answered) < 600:
                    try:
                        answered.append(await publish(served.port, "t", f"{lane_number}.{n}"))
                    except (OSError, AssertionError, asyncio.IncompleteReadError):
                        await asyncio.sleep(0.01)  # its worker was killed: the next lands elsewhere
                    n += 1
                    if len(answered) == 300 and victim in served.children():
                        os.kill(victim, signal.SIGKILL)

            await asyncio.gather(*(lane(n) for n in range(4)))

        asyncio.run(burst())
        served.wait_for_lines("was killed by SIGKILL")
    epoch, lowest = answered[0].split("-")[0], min(int(i.split("-")[1]) for i in answered)
    with serve(data, group) as again:
        stored = asyncio.run(everything_after(again.port, "t", f"{epoch}-{lowest - 1}"))
    assert set(answered) <= set(stored)
