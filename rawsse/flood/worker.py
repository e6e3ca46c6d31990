"""A flooder worker process: opens its share of streams from one source address, parses
what arrives (httptools for the HTTP framing, chunked or not; one regular expression
for our payloads' data lines, see PAYLOAD) and tallies it. It talks to the main process over a pipe:

    worker -> main   ("ready", summary-so-far)      once every stream is open (or failed)
    main -> worker   ("progress",)                   answered with ("progress", streams, received)
    main -> worker   ("finish", expected, refused, settle, limit)
                                                     read until all expected events came,
                                                     nothing came for `settle` s, or `limit`
                                                     s passed; answered with ("done", summary)
"""

from __future__ import annotations

import multiprocessing.connection
import re
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Any

import httptools

from rawsse.flood.tally import StreamTally, Summary

CONNECT_WINDOW = 512
"""Connections in flight at once while opening, so the server's backlog never overflows."""

READ_SIZE = 256 * 1024

# The flooder must not be the bottleneck, so it does not run the full WHATWG parser per
# event: it cuts the body after the last complete event (a blank line, LF or CRLF) and
# finds our payloads' data lines with one regular expression, in C. Our payloads are one
# line; anything else in the stream (comments, retry, other data) is skipped.
# The pattern starts with a literal newline rather than `^` with MULTILINE: the regex
# engine then finds candidates by a fast literal search (twice as fast per event), and
# the stream's buffer always keeps the newline before its next line (see on_body).
PAYLOAD = re.compile(rb"\ndata: ?([A-Za-z0-9_-]+):([0-9]+):([0-9]+):")


@dataclass(frozen=True)
class WorkerSpec:
    host: str
    port: int
    source: str
    paths: list[str]
    """One request path per stream."""
    keys: list[str]
    """The payload key each stream expects (the broadcast key, or its own topic)."""
    headers: dict[str, str]
    open_timeout: float = 60.0


class _Stream:
    """One subscriber: its socket, HTTP response parser, event parser and tally."""

    def __init__(self, sock: socket.socket, key: str, started: float) -> None:
        self.sock = sock
        self.key = key
        self.started = started
        self.first_byte = 0.0
        self.worker = ""
        """The server process serving this stream, where it says (X-Rawsse-Worker)."""
        self.status = 0
        self.open = True
        self.http = httptools.HttpResponseParser(self)
        self.partial = b"\n"  # what the body starts with is a line start
        self.tally = StreamTally()
        self.summary: Summary | None = None

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.http.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-rawsse-worker":
            self.worker = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.first_byte = time.monotonic()

    def on_body(self, body: bytes) -> None:
        buffer = self.partial + body
        if buffer.endswith(b"\n\n"):  # the usual case: the read ended with an event
            cut = len(buffer)
        else:
            cut = max(buffer.rfind(b"\n\n") + 2, buffer.rfind(b"\n\r\n") + 3)
            if cut < 3:
                self.partial = buffer
                return
        self.partial = buffer[cut - 1 :]  # from the newline that ends the blank line
        summary = self.summary
        assert summary is not None
        now_ns = time.time_ns()
        add = self.tally.add
        latency = summary.latency_of(self.worker).add
        got = False
        for key, sequence, sent_ns in PAYLOAD.findall(buffer, 0, cut):
            if add(key, int(sequence)):
                latency(now_ns - int(sent_ns))
                got = True
        if got:
            summary.last_event_at = now_ns / 1e9


def run_worker(spec: WorkerSpec, control: multiprocessing.connection.Connection) -> None:
    summary = Summary()
    selector = selectors.DefaultSelector()
    streams: list[_Stream] = []
    extra = "".join(f"{name}: {value}\r\n" for name, value in spec.headers.items())
    opening = 0
    index = 0
    deadline = time.monotonic() + spec.open_timeout
    summary.opening_started = time.time()
    while (index < len(spec.paths) or opening) and time.monotonic() < deadline:
        while index < len(spec.paths) and opening < CONNECT_WINDOW:
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.bind((spec.source, 0))
                sock.connect_ex((spec.host, spec.port))
            except OSError:
                summary.connect_errors += 1
                sock.close()
                index += 1
                continue
            stream = _Stream(sock, spec.keys[index], time.monotonic())
            stream.summary = summary
            request = f"GET {spec.paths[index]} HTTP/1.1\r\nHost: {spec.host}\r\n{extra}\r\n".encode()
            selector.register(sock, selectors.EVENT_WRITE, (stream, request))
            streams.append(stream)
            opening += 1
            index += 1
        for key, _ in selector.select(timeout=0.2):
            stream, request = key.data
            if request is not None:  # connected (or failed)
                try:
                    stream.sock.send(request)
                except OSError:
                    _drop(selector, stream, summary, connect_error=True)
                    opening -= 1
                    continue
                selector.modify(stream.sock, selectors.EVENT_READ, (stream, None))
                continue
            was_open = not stream.first_byte
            _read(selector, stream, summary)
            if was_open and (stream.first_byte or not stream.open):
                opening -= 1
    summary.streams = sum(1 for s in streams if s.open and s.first_byte)
    summary.first_byte_seconds = sorted(s.first_byte - s.started for s in streams if s.first_byte)
    summary.opening_ended = time.time()
    control.send(("ready", summary.to_json()))
    expected: dict[str, int] | None = None
    refused: dict[str, int] = {}
    settle = limit = 0.0
    last_progress = finish_asked = time.monotonic()
    while True:
        if control.poll():
            message = control.recv()
            if message[0] == "progress":
                control.send(("progress", summary.streams, sum(s.tally.received for s in streams)))
            elif message[0] == "finish":
                expected, refused, settle, limit = message[1:5]
                last_progress = finish_asked = time.monotonic()
        received_before = summary.received
        for key, _ in selector.select(timeout=0.05):
            _read(selector, key.data[0], summary)
        summary.received = sum(s.tally.received for s in streams)
        now = time.monotonic()
        if summary.received != received_before:
            last_progress = now
        if expected is not None:
            complete = all(
                s.tally.received >= expected.get(s.key, 0) - refused.get(s.key, 0) for s in streams if s.open
            )
            if complete or now - last_progress > settle or now - finish_asked > limit:
                break
    _finish(streams, summary, expected or {}, refused)
    control.send(("done", summary.to_json()))
    for stream in streams:
        stream.sock.close()


def _read(selector: selectors.BaseSelector, stream: _Stream, summary: Summary) -> None:
    try:
        data = stream.sock.recv(READ_SIZE)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        _drop(selector, stream, summary)
        return
    summary.bytes += len(data)
    try:
        stream.http.feed_data(data)
    except httptools.HttpParserError:
        _drop(selector, stream, summary)
        return
    if stream.status and stream.status != 200:
        _drop(selector, stream, summary, connect_error=True)


def _drop(
    selector: selectors.BaseSelector, stream: _Stream, summary: Summary, connect_error: bool = False
) -> None:
    if not stream.open:
        return
    stream.open = False
    try:
        selector.unregister(stream.sock)
    except (KeyError, ValueError):
        pass
    if connect_error or not stream.first_byte:
        summary.connect_errors += 1
        stream.first_byte = 0.0
    else:
        summary.disconnects += 1


def _finish(
    streams: list[_Stream], summary: Summary, expected: dict[str, int], refused: dict[str, int]
) -> None:
    """Loss per stream: what was sent and accepted for its key but never arrived (events
    the server refused at publish are not expected)."""
    for stream in streams:
        if not stream.first_byte:
            continue
        summary.duplicates += stream.tally.duplicates
        summary.out_of_order += stream.tally.out_of_order
        missing = stream.tally.missing({stream.key.encode(): expected.get(stream.key, 0)})
        summary.lost += max(missing - refused.get(stream.key, 0), 0)


def worker_entry(spec: WorkerSpec, control: Any) -> None:
    """multiprocessing target: never raise into the parent's face; report instead."""
    try:
        run_worker(spec, control)
    except Exception as exc:  # pragma: no cover - reported to the parent
        control.send(("error", f"{type(exc).__name__}: {exc}"))
