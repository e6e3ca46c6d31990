"""The server as an operator runs it: one server per port, a supervisor that gives up on
workers that cannot start, and the exit statuses that say which happened."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import free_port
from tests.processes import RAWSSE, Served

KIND = "integration"


def refused(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAWSSE, "serve", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def in_use_message(port: int) -> str:
    return f"rawsse: cannot serve: 127.0.0.1:{port} is already in use by another server"


@pytest.mark.parametrize("first", [(), ("--workers", "2")], ids=["single", "workers"])
@pytest.mark.parametrize("second", [(), ("--workers", "2")], ids=["single", "workers"])
def test_a_second_server_on_a_served_port_is_refused(first: tuple[str, ...], second: tuple[str, ...]) -> None:
    with Served(*first, ready_lines=2 if first else 1) as served:
        finished = refused("--port", str(served.port), *second)
        assert finished.returncode == 1
        assert finished.stderr.startswith(in_use_message(served.port)), finished.stderr
        assert len(finished.stderr.splitlines()) == 1
        # ... and the first one still has every connection
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/healthz", timeout=5) as answer:
            assert answer.status == 200


def test_workers_refuse_a_port_another_program_shares_with_reuseport() -> None:
    """A program that set SO_REUSEPORT itself would otherwise take half of the
    connections from workers that set it too."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        for args in ((), ("--workers", "2")):
            finished = refused("--port", str(port), *args)
            assert finished.returncode == 1
            assert finished.stderr.startswith(in_use_message(port)), finished.stderr
    finally:
        other.close()


FAILING_WORKER = """
import sys
from rawsse.reactor.server import Server

async def start(self):
    raise OSError(28, "No space left on device")

Server.start = start  # every worker fails as it starts
from rawsse.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_worker_that_cannot_start_stops_the_server_after_a_few_attempts() -> None:
    from rawsse.process.supervisor import RESTART_BACKOFF_FIRST, START_FAILURES

    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-c", FAILING_WORKER, "serve", "--workers", "2", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert finished.returncode == 1
    last = finished.stderr.splitlines()[-1]
    assert last.startswith("rawsse: worker "), finished.stderr
    assert last.endswith(
        f"failed to start {START_FAILURES} times in a row: OSError: [Errno 28] No space left on device"
    )
    # Restarts backed off: 0.1 + 0.2 + 0.4 + 0.8 s between the five attempts.
    assert took >= sum(RESTART_BACKOFF_FIRST * 2**n for n in range(START_FAILURES - 1))
    assert "Traceback" not in finished.stderr


def test_the_supervisor_says_how_many_workers_it_stops() -> None:
    with Served("--workers", "2", ready_lines=2) as served:
        pass
    served.wait_for_lines("stopping 2 workers")
