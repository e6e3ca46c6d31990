"""Take the README's screenshot of the dashboard: start `rawsse serve`, hold some streams,
publish a varying load for a while, then photograph the page in headless Chromium.

Run through scripts/screenshot (which sets up .venv); not a test."""

from __future__ import annotations

import argparse
import http.client
import math
import selectors
import socket
import threading
import time
import urllib.parse
from pathlib import Path

from tests.browser_helpers import RawsseProcess, chromium

SIZE = (1200, 800)


def hold_streams(port: int, topics: list[str], stop: threading.Event) -> threading.Thread:
    """Subscribers that read (and drop) what they get, so the fan-out has work to show."""
    selector = selectors.DefaultSelector()
    for topic in topics:
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(f"GET /events?topic={topic} HTTP/1.1\r\nHost: shot\r\n\r\n".encode())
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)

    def drain() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.2):
                key.fileobj.recv(65536)  # type: ignore[union-attr]
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread


def publish_load(port: int, stop: threading.Event) -> None:
    """A load that rises and falls, so the charts have a shape: 20 to 180 events/s."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    started = last = time.monotonic()
    due = 0.0
    sent = 0
    while not stop.is_set():
        now = time.monotonic()
        due += (100 + 80 * math.sin((now - started) / 6)) * (now - last)
        last = now
        if sent < due:
            topic = ("prices", "news", "chat")[sent % 3]
            body = urllib.parse.urlencode({"topic": topic, "data": f'{{"n": {sent}, "t": {now:.3f}}}'})
            connection.request("POST", "/publish", body, headers)
            connection.getresponse().read()
            sent += 1
        else:
            time.sleep(0.002)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to publish first")
    args = parser.parse_args()
    server = RawsseProcess()
    stop = threading.Event()
    try:
        drainer = hold_streams(server.port, ["prices"] * 30 + ["news"] * 15 + ["chat", "news"] * 5, stop)
        load = threading.Thread(target=publish_load, args=(server.port, stop), daemon=True)
        with chromium(SIZE) as browser:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#tester-topic", "news")
            page.click("#subscribe-button")
            load.start()
            page.wait_for_timeout(args.seconds * 1000)  # the charts fill while the load runs
            page.fill("#publish-data", "Hello from the topic tester")
            page.click("#publish-button")
            page.wait_for_selector("#tester-log li .data >> text=Hello from the topic tester")
            page.evaluate("() => window.scrollTo(0, 0)")  # publishing scrolled to the log
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output))
        stop.set()
        load.join()
        drainer.join()
    finally:
        stop.set()
        server.stop()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
