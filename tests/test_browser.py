"""rawsse and the client that matters most: a real browser's EventSource, in Debian's
headless Chromium driven by Playwright, against `rawsse serve` on loopback.

Skipped, saying why, where Chromium or Playwright is missing; deselect with -m 'not browser'.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser_helpers import RawsseProcess, missing, publish

KIND = "browser"

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

RETRY_MS = 300
"""The server's `retry:` here, so the browser's reconnects in these tests are quick."""

# Installed in a page: record(key, url, names) opens an EventSource and keeps what it sees
# in window.streams[key]: its events (type, data, lastEventId), opens and errors. Page
# scripts are passed to Playwright as functions: a string expression would be eval'd in
# the page, which the dashboard's Content-Security-Policy forbids.
RECORDER = """() => {
window.streams = window.streams || {};
window.record = (key, url, names) => {
  const seen = { events: [], opens: 0, errors: 0, closed: false };
  const source = new EventSource(url);
  const keep = (e) => seen.events.push({ type: e.type, data: e.data, id: e.lastEventId });
  for (const name of names) source.addEventListener(name, keep);
  source.onopen = () => { seen.opens += 1; };
  source.onerror = () => { seen.errors += 1; seen.closed = source.readyState === EventSource.CLOSED; };
  window.streams[key] = seen;
  window.sources = window.sources || {};
  window.sources[key] = source;
};
}"""

# Fixtures: one rawsse for the whole module (the browser and the page servers: conftest.py)


@pytest.fixture(scope="module")
def rawsse(page_origins: tuple[str, str]) -> Iterator[RawsseProcess]:
    server = RawsseProcess("--retry", str(RETRY_MS), "--cors-origin", page_origins[0])
    yield server
    server.stop()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A fresh tab; the test fails if the page logs an error it did not expect."""
    tab = browser.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser's own favicon.ico request from the test pages is not the page's error.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location.get('url')})")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.errors = errors  # type: ignore[attr-defined]
    yield tab
    tab.close()


def open_blank(page: Page, origin: str) -> None:
    """Load a page of `origin` with the recorder installed."""
    page.goto(origin + "/healthz")
    page.evaluate(RECORDER)


def metric(server: RawsseProcess, name: str) -> int:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"rawsse_{name} "):
                return int(line.split()[1])
    raise AssertionError(f"no metric {name}")


def events_of(page: Page, key: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = page.evaluate(f"() => window.streams[{key!r}].events")
    return events


def wait_events(page: Page, key: str, count: int) -> list[dict[str, str]]:
    page.wait_for_function(f"() => window.streams[{key!r}].events.length >= {count}")
    return events_of(page, key)


# EventSource against rawsse


def test_events_arrive_in_order_with_data_event_and_id(rawsse: RawsseProcess, page: Page) -> None:
    open_blank(page, rawsse.url)
    page.evaluate("() => record('news', '/events?topic=news', ['message', 'greeting'])")
    page.wait_for_function("() => window.streams.news.opens === 1")
    sent = [
        ("plain", None),
        ("first line\nsecond line\r\nthird line\rfourth", None),
        ("héllo wörld ✓ 日本語 🎉", "greeting"),
        ("data: not a field\nid: 666\nevent: forged", None),
        ("", None),
    ]
    ids = [publish(rawsse, "news", data, event) for data, event in sent]
    received = wait_events(page, "news", len(sent))
    expected_data = [data.replace("\r\n", "\n").replace("\r", "\n") for data, _ in sent]
    assert [e["data"] for e in received] == expected_data
    assert [e["type"] for e in received] == [event or "message" for _, event in sent]
    assert [e["id"] for e in received] == ids
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_multi_topic_stream_gets_only_its_topics(rawsse: RawsseProcess, page: Page) -> None:
    open_blank(page, rawsse.url)
    page.evaluate("() => record('ab', '/events?topic=alpha&topic=beta', ['message'])")
    page.wait_for_function("() => window.streams.ab.opens === 1")
    publish(rawsse, "alpha", "a1")
    publish(rawsse, "gamma", "not mine")
    publish(rawsse, "beta", "b1")
    publish(rawsse, ["gamma", "alpha"], "a2 and gamma")
    publish(rawsse, "beta", "last")
    received = wait_events(page, "ab", 4)
    assert [e["data"] for e in received] == ["a1", "b1", "a2 and gamma", "last"]


def test_reconnect_and_resume_after_the_server_drops_the_stream(rawsse: RawsseProcess, page: Page) -> None:
    open_blank(page, rawsse.url)
    page.evaluate("() => record('feed', '/events?topic=feed', ['message', 'rawsse-reset'])")
    page.wait_for_function("() => window.streams.feed.opens === 1")
    before = [publish(rawsse, "feed", f"before {n}") for n in range(3)]
    wait_events(page, "feed", 3)
    resumes = metric(rawsse, "resumes_total")

    # Only a resume can bring these: they are published while the browser is away.
    missed = [{"topic": "feed", "data": f"missed {n}"} for n in range(5)]
    missed_ids = cut_and_publish(rawsse, "feed", missed)

    # EventSource reconnects by itself after `retry` ms, sending Last-Event-ID.
    page.wait_for_function("() => window.streams.feed.opens === 2")
    after = publish(rawsse, "feed", "after")
    received = wait_events(page, "feed", 9)
    assert [e["id"] for e in received] == [*before, *missed_ids, after]  # each once, in order
    assert [e["data"] for e in received[3:8]] == [m["data"] for m in missed]
    assert metric(rawsse, "resumes_total") == resumes + 1
    assert page.evaluate("() => window.streams.feed.errors") == 1  # the drop, seen once


def request_bytes(method: str, path: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def cut_and_publish(server: RawsseProcess, topic: str, missed: list[dict[str, str]]) -> list[str]:
    """/disconnect the topic's one stream and publish `missed`, in one write: the server
    handles both before its loop can accept anything else, so the events are published
    while the browser is certainly away. Returns their ids."""
    answers = pipeline(
        server,
        request_bytes("POST", f"/disconnect?topic={topic}", b""),
        request_bytes("POST", "/publish", json.dumps(missed).encode(), "application/json"),
    )
    assert json.loads(answers[0]) == {"closed": 1}
    ids: list[str] = json.loads(answers[1])["ids"]
    return ids


def pipeline(server: RawsseProcess, *requests: bytes) -> list[bytes]:
    """Send requests in one write on one connection; return the response bodies."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"".join(requests))
        buffered = b""
        bodies: list[bytes] = []
        while len(bodies) < len(requests):
            while b"\r\n\r\n" not in buffered:
                buffered += connection.recv(65536)
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(buffered) < length:
                buffered += connection.recv(65536)
            bodies.append(buffered[:length])
            buffered = buffered[length:]
        return bodies


def test_cross_origin_page_connects_only_when_its_origin_is_allowed(
    rawsse: RawsseProcess, page: Page, page_origins: tuple[str, str]
) -> None:
    allowed, refused = page_origins
    open_blank(page, allowed)
    page.evaluate(f"() => record('far', '{rawsse.url}/events?topic=far', ['message'])")
    page.wait_for_function("() => window.streams.far.opens === 1")
    event_id = publish(rawsse, "far", "across origins")
    assert wait_events(page, "far", 1) == [{"type": "message", "data": "across origins", "id": event_id}]
    # A JSON publish from the page needs a preflight (OPTIONS) first; it passes too.
    answer = page.evaluate(
        """async (url) => {
             const r = await fetch(url + '/publish', {method: 'POST',
               headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({topic: 'far', data: 'from the page'})});
             return [r.status, await r.json()];
           }""",
        rawsse.url,
    )
    assert answer[0] == 200 and "id" in answer[1]
    assert wait_events(page, "far", 2)[1]["data"] == "from the page"

    other = page.context.new_page()
    try:
        open_blank(other, refused)
        other.evaluate(f"() => record('far', '{rawsse.url}/events?topic=far', ['message'])")
        other.wait_for_function("() => window.streams.far.closed")  # 403: EventSource gives up
        publish(rawsse, "far", "not for that page")
        assert wait_events(page, "far", 3)[2]["data"] == "not for that page"  # it was sent...
        assert events_of(other, "far") == []  # ...and that page got nothing
        assert other.evaluate("() => window.streams.far.opens") == 0
        refused_publish = other.evaluate(
            """async (url) => { try { await fetch(url + '/publish', {method: 'POST',
                 body: new URLSearchParams({topic: 'far', data: 'x'})}); return 'sent'; }
               catch (e) { return 'refused'; } }""",
            rawsse.url,
        )
        assert refused_publish == "refused"
    finally:
        other.close()


# The dashboard


def figure(page: Page, name: str) -> float | None:
    value = page.get_attribute(f"#{name}", "data-value")
    return None if value is None else float(value)


def test_dashboard_shows_live_figures_and_its_topic_tester_works(
    rawsse: RawsseProcess, page: Page, tmp_path: Path
) -> None:
    page.goto(rawsse.url + "/")
    page.wait_for_function("() => document.getElementById('published-total').dataset.value !== undefined")
    assert page.text_content("#live-state") == "live"
    before = figure(page, "published-total")
    assert before is not None
    for n in range(7):
        publish(rawsse, "dash", f"event {n}")
    page.wait_for_function(
        f"() => Number(document.getElementById('published-total').dataset.value) >= {before + 7}"
    )
    page.wait_for_function("() => Number(document.getElementById('published-rate').dataset.value) > 0")
    assert (figure(page, "streams-open") or 0) >= 1  # this page's own $stats stream
    assert page.locator("#workers tr").count() == 1

    # The topic tester: subscribe, publish from the page, see it arrive.
    page.fill("#tester-topic", "tester")
    page.click("#subscribe-button")
    page.wait_for_function("() => document.getElementById('tester-state').dataset.state === 'live'")
    page.fill("#publish-data", "hello from the tester ✓")
    page.fill("#publish-event", "note")
    page.click("#publish-button")
    page.wait_for_selector("#tester-log li[data-event='note']")
    assert page.text_content("#tester-log li .data") == "hello from the tester ✓"
    assert (page.text_content("#publish-state") or "").startswith("Published as ")
    from_outside = publish(rawsse, "tester", "from outside")
    page.wait_for_selector(f"#tester-log li[data-id='{from_outside}']")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    page.set_viewport_size({"width": 360, "height": 740})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 360")  # nothing sticks out
    page.screenshot(path=str(tmp_path / "dashboard-narrow.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
