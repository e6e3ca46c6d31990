"""A private topic in a real browser: a page whose session cookie holds a token receives
its user's topic; when the token expires the stream is ended, the browser reconnects by
itself with the refreshed cookie and resumes without a gap; a page that sends no cookie
gets nothing. Headless Chromium driven by Playwright, against `rawsse serve` on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser_helpers import RawsseProcess, missing, publish
from tests.tokens import SECRET, token

KIND = "browser"

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

# record(key, url, credentials): an EventSource whose events, opens and errors are kept in
# window.streams[key]; with `credentials` it sends the page's cookies across origins.
RECORDER = """() => {
window.streams = {};
window.record = (key, url, credentials) => {
  const seen = { events: [], opens: 0, errors: 0, closed: false };
  const source = new EventSource(url, { withCredentials: credentials });
  const keep = (e) => seen.events.push({ type: e.type, data: e.data, id: e.lastEventId });
  for (const name of ["message", "rawsse-reset"]) source.addEventListener(name, keep);
  source.onopen = () => { seen.opens += 1; };
  source.onerror = () => { seen.errors += 1; seen.closed = source.readyState === EventSource.CLOSED; };
  window.streams[key] = seen;
};
}"""


@pytest.fixture
def rawsse(page_origins: tuple[str, str]) -> Iterator[RawsseProcess]:
    os.environ["RAWSSE_JWT_SECRET"] = SECRET
    try:
        server = RawsseProcess(
            "--retry",
            "300",
            "--cors-origin",
            page_origins[0],
            "--token-cookie",
            "session",
            "--jwt-leeway",
            "0",
        )
    finally:
        del os.environ["RAWSSE_JWT_SECRET"]
    yield server
    server.stop()


def set_session(browser: BrowserContext, value: str) -> None:
    """What the application's login or refresh does: a cookie for rawsse's host (cookies
    are not bound to a port, so the page's own host sets it)."""
    browser.add_cookies([{"name": "session", "value": value, "domain": "127.0.0.1", "path": "/"}])


def test_a_cookie_session_receives_its_private_topic_and_resumes_after_a_refresh(
    browser: BrowserContext, rawsse: RawsseProcess, page_origins: tuple[str, str]
) -> None:
    page = browser.new_page()
    page.goto(page_origins[0] + "/")
    page.evaluate(RECORDER)
    set_session(browser, token("42", ttl=3))  # expires soon: the refresh below must be used
    url = f"{rawsse.url}/events?topic=notes@42"
    page.evaluate("([url]) => { record('mine', url, true); record('nocookie', url, false); }", [url])
    page.wait_for_function("() => window.streams.mine.opens === 1 && window.streams.nocookie.closed")
    first = publish(rawsse, "notes@42", "one")
    page.wait_for_function("() => window.streams.mine.events.length === 1")
    set_session(browser, token("42", ttl=600))  # the application refreshes the session
    # The first token expires: the stream gets its rawsse-reset and ends; the browser
    # reconnects with the refreshed cookie, its Last-Event-ID still the first event's.
    page.wait_for_function("() => window.streams.mine.events.length === 2", timeout=15_000)
    missed = publish(rawsse, "notes@42", "two")  # while the browser is away, or just back
    page.wait_for_function("() => window.streams.mine.opens === 2 && window.streams.mine.events.length === 3")
    live = publish(rawsse, "notes@42", "three")
    page.wait_for_function("() => window.streams.mine.events.length === 4")
    mine = page.evaluate("() => window.streams.mine")
    assert [(e["type"], e["data"], e["id"]) for e in mine["events"]] == [
        ("message", "one", first),
        ("rawsse-reset", '{"reason": "token-expired"}', first),
        ("message", "two", missed),
        ("message", "three", live),
    ]
    nocookie = page.evaluate("() => window.streams.nocookie")
    assert (nocookie["events"], nocookie["opens"], nocookie["closed"]) == ([], 0, True)
    page.close()
