"""Request reading rules, without sockets: limits, smuggling shapes, pipelining, phases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawsse.core.http import (
    CHUNK_FRAMING_BYTES,
    CONTINUE,
    HttpError,
    HttpLimits,
    RequestReader,
    error_response,
    parse_pairs,
    response,
)

KIND = "unit"

GET = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: e-1\r\n\r\n"
POST = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


def status_of(data: bytes, limits: HttpLimits | None = None, chunk: int = 0) -> int:
    reader = RequestReader(limits or HttpLimits())
    try:
        if chunk:
            for start in range(0, len(data), chunk):
                reader.feed(data[start : start + chunk])
        else:
            reader.feed(data)
    except HttpError as error:
        return error.status
    return 200


def test_pipelined_requests_come_out_in_order() -> None:
    requests = RequestReader().feed(GET + POST + CHUNKED)
    assert [(r.method, r.path, r.body) for r in requests] == [
        ("GET", "/events", b""),
        ("POST", "/publish", b"hello"),
        ("POST", "/publish", b"hello"),
    ]
    assert requests[0].query == "topic=a"
    assert requests[0].headers["last-event-id"] == "e-1"


def test_byte_by_byte_delivery_gives_the_same_request() -> None:
    reader = RequestReader()
    done = []
    for byte in POST:
        done.extend(reader.feed(bytes([byte])))
    assert [(r.path, r.body) for r in done] == [("/publish", b"hello")]


def test_phases_tell_which_timeout_runs() -> None:
    reader = RequestReader()
    assert not reader.in_head and not reader.in_body
    reader.feed(POST[:10])
    assert reader.in_head
    reader.feed(POST[10:-2])
    assert reader.in_body
    assert reader.feed(POST[-2:])
    assert not reader.in_head and not reader.in_body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked123\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\x05hello", 400),
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded: header\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413),
        (b"GET /" + b"a" * 101 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 60 + b"\r\n", 431),
    ],
)
def test_bad_requests_map_to_statuses(raw: bytes, status: int) -> None:
    limits = HttpLimits(max_header_bytes=256, max_url_bytes=100, max_body_bytes=10)
    assert status_of(raw, limits) == status
    assert status_of(raw, limits, chunk=1) == status


def test_chunked_body_is_capped_as_it_streams() -> None:
    limits = HttpLimits(max_body_bytes=10)
    body = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4\r\nabcd\r\n" * 3
    assert status_of(body, limits) == 413


def test_chunk_extensions_count_against_the_body_limit() -> None:
    """httptools skips extensions without a callback: 20 MiB of `;ext=...` on one chunk
    line would be read to the end and accepted. The body's wire bytes are counted."""
    limits = HttpLimits(max_body_bytes=1024 * 1024)
    reader = RequestReader(limits)
    reader.feed(POST_HEAD + TE + b"\r\n1")
    fed = 0
    with pytest.raises(HttpError) as caught:
        while fed < 20 * 1024 * 1024:
            reader.feed(b";ext=" + b"v" * 16379)
            fed += 16384
    assert caught.value.status == 413
    assert fed <= limits.max_body_bytes + limits.max_header_bytes + CHUNK_FRAMING_BYTES


def test_ordinary_chunk_framing_stays_within_the_allowance() -> None:
    wire = POST_HEAD + TE + b"\r\n" + b"400;name=value\r\n" + b"x" * 1024 + b"\r\n"
    wire += (b"400;name=value\r\n" + b"x" * 1024 + b"\r\n") * 1022 + END
    reader = RequestReader(HttpLimits(max_body_bytes=1024 * 1024))
    done = [r for start in range(0, len(wire), 16384) for r in reader.feed(wire[start : start + 16384])]
    assert [len(r.body) for r in done] == [1023 * 1024]


POST_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\n"
GET_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
END = b"0\r\n\r\n"


def test_a_trailer_is_never_taken_for_a_header() -> None:
    wire = POST_HEAD + TE + b"\r\n1\r\nG\r\n0\r\nAuthorization: Bearer stolen\r\nOrigin: http://evil\r\n\r\n"
    [request] = RequestReader().feed(wire)
    assert request.body == b"G"
    assert "authorization" not in request.headers and "origin" not in request.headers


SMUGGLING = {
    "CL.TE": POST_HEAD + b"Content-Length: 6\r\n" + TE + b"\r\n" + END + b"G",
    "TE.CL": POST_HEAD + TE + b"Content-Length: 3\r\n\r\n1\r\nG\r\n" + END,
    "duplicate CL": POST_HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "same CL twice": POST_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    "CL list": POST_HEAD + b"Content-Length: 2, 2\r\n\r\nab",
    "obs-fold": GET_HEAD + b"X-A: a\r\n  folded\r\n\r\n",
    "obs-fold of TE": POST_HEAD + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + END,
    "bare CR in the request line": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "bare CR in a header": GET_HEAD + b"X: a\rb\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare LF after a chunk size": POST_HEAD + TE + b"\r\n1\nG\r\n" + END,
    "TE chunked, identity": POST_HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n" + END,
    "TE identity, chunked": POST_HEAD + b"Transfer-Encoding: identity, chunked\r\n\r\n" + END,
    "TE twice": POST_HEAD + TE + TE + b"\r\n" + END,
    "TE with a space before the colon": POST_HEAD + b"Transfer-Encoding : chunked\r\n\r\n" + END,
    "TE chunked123": POST_HEAD + b"Transfer-Encoding: chunked123\r\n\r\n" + END,
    "overlong chunk size": POST_HEAD + TE + b"\r\n" + b"f" * 40 + b"\r\n",
    "chunk size with a sign": POST_HEAD + TE + b"\r\n+1\r\nG\r\n" + END,
    "negative CL": POST_HEAD + b"Content-Length: -1\r\n\r\n",
    "CL with a sign": POST_HEAD + b"Content-Length: +1\r\n\r\nG",
    "two Hosts": GET_HEAD + b"Host: y\r\n\r\n",
    "NUL in a header": GET_HEAD + b"X: a\x00b\r\n\r\n",
}
"""Request-smuggling shapes: each is refused with 400 and the connection closed."""


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_shapes_are_refused(case: str) -> None:
    assert status_of(SMUGGLING[case]) == 400
    assert status_of(SMUGGLING[case], chunk=1) == 400


def test_a_header_trickled_in_many_reads_is_refused_within_one_read_of_the_limit() -> None:
    reader = RequestReader(HttpLimits(max_header_bytes=1000))
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: ")
    fed = 0
    with pytest.raises(HttpError) as caught:
        while True:
            reader.feed(b"a" * 100)
            fed += 100
    assert caught.value.status == 431
    assert fed <= 1000


def test_expect_continue_is_answered() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    assert reader.interim == CONTINUE


def test_keep_alive_follows_version_and_header() -> None:
    assert RequestReader().feed(b"GET / HTTP/1.0\r\n\r\n")[0].keep_alive is False
    assert (
        RequestReader().feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0].keep_alive is False
    )
    assert RequestReader().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0].keep_alive is True


def test_responses() -> None:
    assert response(200, b"ok") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
    )
    closing = error_response(HttpError(405, "use GET", [("Allow", "GET")]))
    assert closing.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET\r\n" in closing and b"Connection: close\r\n" in closing


@given(st.text(alphabet="ab=&%+2Ff é;", max_size=40))
def test_pairs_are_parsed_as_parse_qsl_parses_them(text: str) -> None:
    from urllib.parse import parse_qsl

    try:
        expected = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=5)
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            parse_pairs(text, 5)
        return
    assert parse_pairs(text, 5) == expected
