"""Acknowledged delivery in a real browser: notifications published while the user had no
page open reach the page opened afterwards, exactly those, once; the page acknowledges
them and its unread badge goes to zero; a second page of the same user opened afterwards
receives none of them again, and live events reach it. The page runs the README's own
example (its `js` block), against `rawsse serve --data-dir` on loopback, in headless
Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser_helpers import RawsseProcess, missing, publish
from tests.tokens import SECRET, token

KIND = "browser"

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
EXAMPLE = re.search(r"When the user opens the page.*?```js\n(.*?)```", README, flags=re.S).group(1)  # type: ignore[union-attr]
"""The README's page code: an EventSource with from=unacked that shows, acknowledges and
updates the badge."""

PAGE = """() => {
document.body.innerHTML = '<span id="unread">?</span>';
window.shown = [];
window.showNotification = (note) => window.shown.push(note);
}"""
"""What the README's example expects of its page: a badge, and a way to show a note."""


@pytest.fixture
def rawsse(page_origins: tuple[str, str], tmp_path: Path) -> Iterator[RawsseProcess]:
    os.environ["RAWSSE_JWT_SECRET"] = SECRET
    try:
        server = RawsseProcess(
            "--data-dir",
            str(tmp_path / "data"),
            "--cors-origin",
            page_origins[0],
            "--token-cookie",
            "session",
        )
    finally:
        del os.environ["RAWSSE_JWT_SECRET"]
    yield server
    server.stop()


def note(text: str) -> str:
    return json.dumps({"text": text})


def open_page(browser: BrowserContext, origin: str, server: RawsseProcess) -> Page:
    page = browser.new_page()
    page.goto(origin + "/")
    page.evaluate(PAGE)
    page.add_script_tag(content=EXAMPLE.replace('"https://push.example.com"', json.dumps(server.url)))
    return page


def test_a_page_opened_later_gets_what_was_sent_while_away_and_acknowledges_it(
    browser: BrowserContext, rawsse: RawsseProcess, page_origins: tuple[str, str]
) -> None:
    browser.add_cookies([{"name": "session", "value": token("42"), "domain": "127.0.0.1", "path": "/"}])
    away = [publish(rawsse, "notes@42", note(f"sent while away {n}")) for n in range(3)]
    publish(rawsse, "notes@7", note("someone else's"))

    first = open_page(browser, page_origins[0], rawsse)
    first.wait_for_function(
        "() => window.shown.length === 3 && document.querySelector('#unread').textContent === ''"
    )
    assert [note["text"] for note in first.evaluate("() => window.shown")] == [
        f"sent while away {n}" for n in range(3)
    ]
    with urllib.request.urlopen(f"{rawsse.url}/unacked?topic=notes@42", timeout=10) as answer:
        assert json.loads(answer.read())["acked"] == away[2]  # every one acknowledged
    first.close()

    second = open_page(browser, page_origins[0], rawsse)
    live = publish(rawsse, "notes@42", note("live"))
    second.wait_for_function("() => window.shown.length >= 1")
    assert [note["text"] for note in second.evaluate("() => window.shown")] == ["live"]
    with urllib.request.urlopen(f"{rawsse.url}/unacked?topic=notes@42", timeout=10) as answer:
        assert json.loads(answer.read())["acked"] == live
    second.close()
