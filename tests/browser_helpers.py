"""Driving Debian's Chromium with Playwright, and running `rawsse serve` for it. Shared by
tests/test_browser.py and scripts/screenshot. Never downloads a browser: Playwright only
drives the `chromium` found on PATH."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.helpers import free_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
"""Quiet, offline, and able to run as root in a container."""


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Python's playwright is not installed (pip install -e '.[test]')"
    if shutil.which("chromium") is None:
        return "no `chromium` on PATH (Debian: apt-get install chromium)"
    return None


@contextmanager
def chromium(viewport: tuple[int, int] = (1200, 800)) -> Iterator[BrowserContext]:
    """One headless Chromium with a fresh profile, removed afterwards."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="rawsse-chromium-") as profile, sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            profile,
            executable_path=shutil.which("chromium"),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            yield context
        finally:
            context.close()


class RawsseProcess:
    """`rawsse serve` as a user runs it, on a free loopback port."""

    def __init__(self, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "RAWSSE_HEARTBEAT": "30"}
        env.pop("RAWSSE_PUBLISH_TOKEN", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rawsse", "serve", "--port", str(self.port), *options],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # the server says where it listens once it does
        if f"listening on {self.url}" not in line:
            self.stop()
            raise RuntimeError(f"rawsse did not start: {line}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def publish(server: RawsseProcess, topic: str | list[str], data: str, event: str | None = None) -> str:
    topics = [topic] if isinstance(topic, str) else topic
    fields = [("topic", t) for t in topics] + [("data", data)] + ([("event", event)] if event else [])
    body = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(f"{server.url}/publish", body, timeout=10) as answer:
        event_id: str = json.loads(answer.read())["id"]
        return event_id
