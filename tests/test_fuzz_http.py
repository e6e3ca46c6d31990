"""Fuzzing the HTTP front with hypothesis: request lines, headers, chunked bodies, every
publish body form, query strings. Whatever arrives, the only outcomes are requests or a
documented status; nothing else is raised, and a server that took the lot still serves.

The sans-I/O front (the request reader and the API) gets many cases; the real server over
loopback gets fewer, each on its own connection."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawsse.core.effects import OpenStream
from rawsse.core.http import HttpLimits, RequestReader
from rawsse.errors import HttpError, RawsseError
from tests.processes import Served
from tests.test_api import Harness

KIND = "integration"

READER_STATUSES = {400, 413, 414, 431}
"""What the request reader may refuse with (README, "Errors")."""

API_STATUSES = {200, 204, 304, 400, 401, 403, 404, 405, 413, 415, 503}
"""Every status the API answers with."""

SERVER_STATUSES = {100, 408} | READER_STATUSES | API_STATUSES

LIMITS = HttpLimits(max_header_bytes=2048, max_url_bytes=512, max_body_bytes=4096)

# Pieces of requests: mostly well-formed, with hostile values mixed in.

topic_names = st.one_of(
    st.sampled_from(["news", "a", "t-1", "user:42", "$stats", "x" * 300, "", "a/b", "..", "é"]),
    st.text(min_size=0, max_size=20),
)
query_pairs = st.lists(
    st.tuples(st.sampled_from(["topic", "lastEventId", "event", "_", "id", "x"]), topic_names), max_size=6
)
methods = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT", "GETT", "get", "CONNECT"])
paths = st.sampled_from(
    ["/events", "/publish", "/disconnect", "/healthz", "/readyz", "/metrics", "/", "/static/app.js",
     "/static/../x", "/nope", "*", "http://h/publish", "/events%00"]
)  # fmt: skip
header_names = st.sampled_from(
    ["Content-Type", "Content-Length", "Transfer-Encoding", "Host", "Origin", "Last-Event-ID",
     "Authorization", "Expect", "Connection", "X-Any", "Upgrade"]
)  # fmt: skip
HEADER_VALUES = [
    "application/json", "application/x-www-form-urlencoded", "text/plain", "chunked",
    "chunked, identity", "100-continue", "close", "keep-alive", "127.0.0.1", "[::1]",
    "http://evil.example", "Bearer x", "5f2c09e1-3", "0", "-1", "99999999999", " 7",
]  # fmt: skip
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
publish_objects = st.fixed_dictionaries(
    {"topic": topic_names, "data": json_values},
    optional={"event": st.text(max_size=10) | st.none(), "topics": st.lists(topic_names, max_size=3)},
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["form", "json", "json-list", "raw", "binary"]))
    if kind == "form":
        names = st.sampled_from(["topic", "data", "event", "x"])
        pairs = draw(st.lists(st.tuples(names, topic_names), max_size=5))
        return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()
    if kind == "json":
        return json.dumps(draw(publish_objects)).encode()
    if kind == "json-list":
        return json.dumps(draw(st.lists(publish_objects, max_size=4))).encode()
    if kind == "raw":
        return draw(st.text(max_size=200)).encode()
    return draw(st.binary(max_size=200))


def chunked(body: bytes, sizes: list[int], extension: bytes) -> bytes:
    out = b""
    rest = body
    for size in sizes:
        piece, rest = rest[:size], rest[size:]
        if piece:
            out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
    if rest:
        out += b"%x\r\n%s\r\n" % (len(rest), rest)
    return out + b"0\r\n\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(methods)
    path = draw(paths)
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in draw(query_pairs))
    target = path + (f"?{query}" if query else "")
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]))
    headers: list[tuple[str, str]] = [("Host", draw(st.sampled_from(["127.0.0.1", "[::1]", "evil"])))]
    headers += draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    body = draw(bodies()) if method in ("POST", "PUT") or draw(st.booleans()) else b""
    framing = draw(st.sampled_from(["length", "chunked", "none", "wrong-length"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "wrong-length":
        headers.append(("Content-Length", str(max(len(body) + draw(st.integers(-5, 5)), 0))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        extension = draw(st.sampled_from([b"", b";a=b", b";" + b"x" * 100, b";\x00"]))
        body = chunked(body, draw(st.lists(st.integers(1, 64), max_size=6)), extension)
    line_end = draw(st.sampled_from(["\r\n"] * 8 + ["\n", "\r"]))
    head = f"{method} {target} {version}{line_end}" + "".join(f"{n}: {v}{line_end}" for n, v in headers)
    raw = head.encode("latin-1", errors="replace") + line_end.encode() + body
    if draw(st.booleans()):  # a mutation: a byte flipped, cut short or repeated
        position = draw(st.integers(0, max(len(raw) - 1, 0)))
        flipped = raw[:position] + bytes([draw(st.integers(0, 255))]) + raw[position + 1 :]
        raw = draw(st.sampled_from([raw[:position], flipped, raw * 2]))
    return raw


def make_api() -> Harness:
    return Harness(max_body_bytes=4096, max_pending_bytes=4096)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:40]
    return int(answer[9:12])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=requests(), split=st.integers(1, 64))
def test_the_request_reader_and_the_api_give_only_documented_outcomes(raw: bytes, split: int) -> None:
    api = make_api()
    for pieces in ([raw], [raw[i : i + split] for i in range(0, len(raw), split)]):
        reader = RequestReader(LIMITS)
        try:
            parsed = [request for piece in pieces for request in reader.feed(piece)]
        except HttpError as error:
            assert error.status in READER_STATUSES, error
            continue
        finally:
            reader.close()
        for request in parsed:
            try:
                result = api.handle(request, from_loopback=True)
            except RawsseError as error:
                assert error.status in API_STATUSES, error
                continue
            if isinstance(result, bytes):
                assert status_of(result) in API_STATUSES
            else:
                assert isinstance(result, OpenStream) and status_of(result.preamble) == 200


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with Served("--max-body-bytes", "4096", "--max-header-bytes", "2048", "--max-url-bytes", "512") as server:
        yield server
    failures = [line for line in server.lines if "Traceback" in line or " ERROR " in line]
    assert not failures, "".join(failures)  # nothing went wrong inside the server either


def first_status(port: int, raw: bytes) -> int | None:
    """The status of the first response to `raw` (after any 100 Continue), or None when
    the server closed without a word."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed while we were still sending
        received = b""
        while b"\r\n\r\n" not in received.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    received = received.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    return status_of(received) if received else None


def forms_a_request(raw: bytes) -> bool:
    """Whether `raw` holds at least one whole request or a refusable error, by the same
    rules the server reads with; input that ends inside a request can only be closed."""
    reader = RequestReader(LIMITS)
    try:
        return bool(reader.feed(raw))
    except HttpError:
        return True
    finally:
        reader.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=requests())
def test_the_server_answers_only_documented_statuses_and_keeps_serving(served: Served, raw: bytes) -> None:
    status = first_status(served.port, raw)
    if forms_a_request(raw):
        assert status in SERVER_STATUSES, raw
    else:
        assert status is None, raw  # half-closed inside a request: closed without an answer
    assert first_status(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == 200
