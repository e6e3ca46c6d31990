from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_helpers import chromium
from tests.helpers import BACKENDS

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

BROWSER_TIMEOUT_MS = 10_000
"""Upper bound for any one condition a browser test awaits; a passing test never waits for it."""

KINDS = ("unit", "integration", "cluster", "browser", "bench")
"""What a test needs, and so how fast it runs; select with `scripts/test -m unit` (or
`-m "not browser and not cluster"`):

    unit         the sans-I/O core and pure helpers: no socket, no process, no real time
    integration  a server on loopback sockets, in this process or in child processes
    cluster      redis-server (started by the test) behind several nodes
    browser      headless Chromium
    bench        the benchmark and load tools at toy size

A module says its kind with `KIND = "..."`; a test of another kind in it says its own
with `@pytest.mark.kind("...")`."""


@pytest.hookimpl(tryfirst=True)  # before -m selects by the markers given here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        own = item.get_closest_marker("kind")
        kind = own.args[0] if own is not None else getattr(getattr(item, "module", None), "KIND", None)
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: say its kind (KIND = one of {', '.join(KINDS)})")
        item.add_marker(kind)


@pytest.fixture(params=BACKENDS, ids=["-".join(b) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every integration test runs on uvloop and the stdlib loop, with the epoll reactor
    and with the transport fallback."""
    value: tuple[str, str] = request.param
    return value


# The browser tests' shared parts: one Chromium, and two page servers of other origins

CROSS_ORIGIN_PAGE = b"""<!doctype html><meta charset="utf-8"><title>another origin</title>
<p>A page of another origin.</p>"""


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(CROSS_ORIGIN_PAGE)))
        self.end_headers()
        self.wfile.write(CROSS_ORIGIN_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origins() -> Iterator[tuple[str, str]]:
    """Two loopback page servers: the first origin is allowed by --cors-origin, the second not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with chromium() as context:
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        yield context
