"""A real browser's WebSocket (headless Chromium, driven by Playwright) on /ws: subscribe,
receive, subscribe to a second topic on the open connection, be cut by /disconnect,
reconnect and resume without a gap or a duplicate; and the Origin rule (--cors-origin)
that keeps pages of other origins out.

Skipped, saying why, where Chromium or Playwright is missing; deselect with -m 'not browser'.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_helpers import RawsseProcess, missing, publish
from tests.test_browser import cut_and_publish, metric

KIND = "browser"

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

# open(url) opens a WebSocket and keeps what it sees in window.seen: messages (parsed),
# opens and close codes; window.ws is the socket, for sending commands.
RECORDER = """() => {
window.seen = { messages: [], opens: 0, closes: [] };
window.open_ws = (url) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { seen.opens += 1; };
  ws.onmessage = (e) => { seen.messages.push(JSON.parse(e.data)); };
  ws.onclose = (e) => { seen.closes.push(e.code); };
  window.ws = ws;
};
}"""


@pytest.fixture(scope="module")
def rawsse(page_origins: tuple[str, str]) -> Iterator[RawsseProcess]:
    server = RawsseProcess("--cors-origin", page_origins[0])
    yield server
    server.stop()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    tab = browser.new_page()
    yield tab
    tab.close()


def events(page: Page) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = page.evaluate("() => seen.messages")
    return [m for m in messages if "type" not in m]


def wait_messages(page: Page, count: int) -> list[dict[str, Any]]:
    page.wait_for_function(f"() => seen.messages.length >= {count}")
    messages: list[dict[str, Any]] = page.evaluate("() => seen.messages")
    return messages


def test_subscribe_add_a_topic_be_cut_reconnect_and_resume(rawsse: RawsseProcess, page: Page) -> None:
    page.goto(rawsse.url + "/healthz")
    page.evaluate(RECORDER)
    ws_base = rawsse.url.replace("http://", "ws://") + "/ws"
    page.evaluate(f"() => open_ws({ws_base + '?topic=alpha'!r})")
    page.wait_for_function("() => seen.opens === 1")
    first = [publish(rawsse, "alpha", f"alpha {n} ✓") for n in range(3)]
    wait_messages(page, 3)
    page.evaluate("""() => ws.send(JSON.stringify({type: "subscribe", topics: ["beta"], ref: 1}))""")
    assert wait_messages(page, 4)[3] == {"type": "subscribed", "topics": ["alpha", "beta"], "ref": 1}
    second = [publish(rawsse, "beta", "beta 0\nsecond line")]
    wait_messages(page, 5)
    missed = [{"topic": "alpha", "data": "missed 0"}, {"topic": "beta", "data": "missed 1"}]
    missed_ids = cut_and_publish(rawsse, "alpha", missed)
    page.wait_for_function("() => seen.closes.length === 1")
    assert page.evaluate("() => seen.closes") == [1012]
    received = events(page)
    assert [e["id"] for e in received] == first + second
    assert received[3]["data"] == "beta 0\nsecond line"
    # The page reconnects with the last id it holds, as a client of the protocol does.
    last = received[-1]["id"]
    page.evaluate(f"() => open_ws({ws_base + '?topic=alpha&topic=beta&lastEventId=' + last!r})")
    page.wait_for_function("() => seen.opens === 2")
    live = publish(rawsse, "alpha", "after the resume")
    page.wait_for_function(f"() => seen.messages.filter(m => !('type' in m)).length >= {len(received) + 3}")
    after = [e["id"] for e in events(page)][len(received) :]
    assert after == [*missed_ids, live]  # no gap, no duplicate
    assert metric(rawsse, "ws_streams_open") == 1
    page.evaluate("() => ws.close(1000)")
    page.wait_for_function("() => seen.closes.length === 2")
    assert page.evaluate("() => seen.closes")[1] == 1000


def test_pages_of_other_origins_are_kept_out_unless_allowed(
    rawsse: RawsseProcess, page_origins: tuple[str, str], page: Page
) -> None:
    ws_url = rawsse.url.replace("http://", "ws://") + "/ws?topic=alpha"
    page.goto(page_origins[1] + "/")  # not in --cors-origin: the handshake is refused (403)
    page.evaluate(RECORDER)
    page.evaluate(f"() => open_ws({ws_url!r})")
    page.wait_for_function("() => seen.closes.length === 1")
    assert page.evaluate("() => [seen.opens, seen.closes]") == [0, [1006]]
    page.goto(page_origins[0] + "/")  # allowed
    page.evaluate(RECORDER)
    page.evaluate(f"() => open_ws({ws_url!r})")
    page.wait_for_function("() => seen.opens === 1")
    event_id = publish(rawsse, "alpha", "to an allowed page")
    assert wait_messages(page, 1)[0]["id"] == event_id
