"""The rawsse command as a user runs it: serve, publish, environment variables, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.sse_client import EventParser

KIND = "integration"

RAWSSE = [sys.executable, "-m", "rawsse"]


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {**os.environ, "RAWSSE_PORT": str(port), "RAWSSE_HEARTBEAT": "30"}
    process = subprocess.Popen(
        [*RAWSSE, "serve", "--log-level", "info"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    line = process.stderr.readline()  # the server says where it listens once it does
    assert f"listening on http://127.0.0.1:{port}" in line, line
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


def test_help_explains_every_option() -> None:
    text = subprocess.run([*RAWSSE, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--port", "--history", "--heartbeat", "--max-connections", "--max-pending-bytes"):
        assert option in text
    assert "RAWSSE_MAX_PENDING_BYTES" in text


def test_serve_publish_and_sigterm(served: tuple[subprocess.Popen[str], int]) -> None:
    process, port = served
    with socket.create_connection(("127.0.0.1", port)) as stream:
        stream.sendall(b"GET /events?topic=news HTTP/1.1\r\nHost: x\r\n\r\n")
        stream.settimeout(10)
        head = stream.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 OK")
        published = subprocess.run(
            [*RAWSSE, "publish", "news", "hello", "--event", "greet", "--url", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=True,
        )
        event_id = published.stdout.strip()
        parser = EventParser()
        events = parser.feed(head.partition(b"\r\n\r\n")[2].decode())
        while not events:
            events = parser.feed(stream.recv(4096).decode())
        assert (events[0].data, events[0].event, events[0].id) == ("hello", "greet", event_id)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        rest = b""
        while chunk := stream.recv(4096):  # the stream was closed, not left hanging
            rest += chunk
        parser.feed(rest.decode())
        # ... after telling the client to come back within the default spread, 3 to 13 s
        assert parser.retry is not None and 3000 <= parser.retry <= 13000


def test_publish_reports_errors(served: tuple[subprocess.Popen[str], int]) -> None:
    _, port = served
    failed = subprocess.run(
        [*RAWSSE, "publish", "bad/topic", "x", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1
    assert "400" in failed.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.read() == b"ok\n"


def test_bad_environment_value_is_a_clear_error() -> None:
    env = {**os.environ, "RAWSSE_PORT": "eighty"}
    failed = subprocess.run([*RAWSSE, "serve"], env=env, capture_output=True, text=True)
    assert failed.returncode == 2
    assert "RAWSSE_PORT" in failed.stderr


def test_scripts_are_executable() -> None:
    root = Path(__file__).resolve().parent.parent
    for script in ("serve", "test", "screenshot"):
        assert os.access(root / "scripts" / script, os.X_OK)


def test_flood_help_explains_modes() -> None:
    text = subprocess.run([*RAWSSE, "flood", "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("idle", "storm", "broadcast", "unicast", "--source-addresses", "--publish-body", "--json"):
        assert word in text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_address_is_told_at_any_log_level(workers: str) -> None:
    """With --port 0 the port is the server's to pick: it says which even when the log
    says only warnings, in one process and as a supervisor of workers."""
    process = subprocess.Popen(
        [*RAWSSE, "serve", "--port", "0", "--log-level", "warning", "--workers", workers, "--no-dashboard"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("rawsse listening on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.read() == b"ok\n"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_the_top_help_names_both_transports() -> None:
    text = subprocess.run([*RAWSSE, "--help"], capture_output=True, text=True, check=True).stdout
    assert "Server-Sent Events and WebSocket" in text
