"""Real processes for tests: `rawsse serve` (with workers, or as a cluster node) and a
redis-server the tests start themselves on a free loopback port."""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tests.helpers import free_port

RAWSSE = [sys.executable, "-m", "rawsse"]
START_TIMEOUT = 20.0


class Served:
    """`rawsse serve` on a free port, started and stopped by the test; its log lines are
    collected so a test can wait for one."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        ready_lines: int = 1,
        file_size_limit: int | None = None,
    ) -> None:
        """`file_size_limit`: the largest file the server may write (RLIMIT_FSIZE), to
        stand for a full disk: a write past it fails (Python ignores SIGXFSZ)."""
        self.port = port or free_port()
        self.args = args
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [*RAWSSE, "serve", "--port", str(self.port), "--log-level", "info", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if file_size_limit is None else _limit_file_size(file_size_limit),
        )
        threading.Thread(target=self._collect, daemon=True).start()
        try:
            self.wait_for_lines("listening on", ready_lines)
        except BaseException:
            self.stop()
            raise

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_lines(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        with self._changed:
            done = self._changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= count or self.process.poll() is not None,
                timeout,
            )
            if not done or sum(text in line for line in self.lines) < count:
                raise AssertionError(f"no {count} x {text!r} in the log:\n{''.join(self.lines)}")

    def children(self) -> list[int]:
        """The worker pids (for --workers)."""
        pid = self.process.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(n) for n in text.split()]

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> Served:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _limit_file_size(size: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A private redis-server on a free loopback port, persisting every write (so a kill
    and restart keeps the stream, as a production Redis with AOF would)."""

    def __init__(self) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="rawsse-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        for line in self.process.stdout:  # redis says when it is ready
            if b"Ready to accept connections" in line:
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def lose_data(self) -> None:
        """Kill it and delete what it persisted: it comes back empty."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
        Path(self.directory).mkdir()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels} value` lines into a dict keyed by the name with its labels."""
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values
