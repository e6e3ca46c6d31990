"""HTTP/1.1 requests: httptools does the parsing, this module adds the limits and rules
it leaves out, and builds responses. Bytes in, `Request` values and response bytes out.

httptools (llhttp) already refuses smuggling shapes in strict mode: Content-Length together
with Transfer-Encoding, two Content-Lengths, `chunked123`, bare LF, invalid methods and
versions. It has no size limits, so the header block, URL and body are counted here.

One piece, though long: the request reader's limits and its parser callbacks share one
state (where a message is, how much of it was counted), and the responses it builds are
the few byte strings that state answers with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

import httptools

from rawsse.errors import HttpError, RawsseError

MAX_HEADER_BYTES = 16 * 1024
"""h11's default for the whole head (status 431); nginx and aiohttp allow 8 KiB per line."""

MAX_URL_BYTES = 8 * 1024
"""nginx's large_client_header_buffers line size (status 414)."""

MAX_BODY_BYTES = 1024 * 1024
"""nginx's client_max_body_size, also aiohttp's and Mercure's (status 413)."""

CHUNK_FRAMING_BYTES = 64 * 1024
"""What the framing of a chunked body (its chunk-size lines and their extensions, which
httptools skips without a word) may add to the body limit, beyond one read and the head:
1 MiB of data in 1 KiB chunks needs 7 KiB; a body made of extensions is cut here (413)."""

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

MAX_EARLY_BYTES = 64 * 1024
"""What a client may send after an upgrade request before it is answered (RFC 6455 has
it wait for the 101; what came anyway is kept, up to this, for the new protocol)."""

SINGLE_HEADERS = frozenset({"host", "content-type", "authorization", "last-event-id", "origin"})
"""Headers a request may carry once: two Hosts must get 400 (RFC 9112 3.2), and two of the
others would be joined into a value nobody sent (two tokens, a comma in an id)."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ", " as RFC 9110 allows."""
    body: bytes
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = MAX_HEADER_BYTES
    max_url_bytes: int = MAX_URL_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


MAX_KNOWN_HEADER_NAMES = 512
MAX_KNOWN_HEADER_NAME = 64
_HEADER_NAMES: dict[bytes, str] = {}
"""Header names as sent, lower-cased once: clients send the same few names every time
(bounded in count and length, so a client inventing names cannot grow it beyond 32 KiB)."""

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH")}


class RequestReader:
    """Turns the bytes of one connection into complete requests, enforcing the limits.

    `feed()` returns the requests completed by the new bytes, or raises HttpError; after
    an error the connection must be closed. `interim` holds bytes to send before the final
    response (a `100 Continue`), and `in_head`/`in_body` tell the caller which timeout runs.
    """

    __slots__ = (
        "_began_in_chunk", "_body", "_body_bytes", "_body_wire", "_deferred", "_done", "_error",
        "_head_bytes", "_head_done", "_headers", "_in_message", "_keep_alive", "_limits",
        "_parser", "_spilled", "_url", "after_upgrade", "interim", "upgraded",
    )  # fmt: skip

    def __init__(self, limits: HttpLimits = HttpLimits()) -> None:
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[Request] = []
        self._error: HttpError | None = None
        self._deferred: HttpError | None = None
        self.interim = b""
        self.upgraded = False
        """A request asked to switch protocols (a WebSocket): no more HTTP is parsed, and
        what arrives after its head gathers in `after_upgrade`."""
        self.after_upgrade = b""
        # per request (one message is read at a time)
        self._keep_alive = True
        self.on_message_begin()
        self._in_message = False

    # Parser callbacks (called by httptools from inside feed_data, once per request or
    # per header: kept short, and few, since each is a Python call)

    def on_message_begin(self) -> None:
        """The state of a new message."""
        self._in_message = True
        self._head_done = False
        self._began_in_chunk = True
        self._spilled = 0
        self._body_wire = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0

    @property
    def deferred(self) -> HttpError | None:
        """A fault met after whole requests in the same read: to be answered once they are."""
        return self._deferred

    def close(self) -> None:
        """Drop the parser. The parser calls back into this reader, so the two form a
        reference cycle that only the garbage collector would free; thousands of short
        connections would pile up between its runs."""
        self._parser = None  # type: ignore[assignment]

    @property
    def between_messages(self) -> bool:
        """Nothing half-read, nothing deferred, and the last message kept its connection
        alive: the parser waits for a message as if none had come. The raw accept path
        then reads the next connection's first request with it."""
        return (
            not self._in_message
            and self._keep_alive
            and self._deferred is None
            and not self.interim
            and not self.upgraded
        )

    def renew(self) -> None:
        """Ready to read another connection's first request after an upgrade (the
        parser stops for good at one): a fresh parser, nothing carried over."""
        self._parser = httptools.HttpRequestParser(self)
        self.upgraded = False
        self.after_upgrade = b""
        self._keep_alive = True
        self._in_message = False

    @property
    def in_head(self) -> bool:
        return self._in_message and not self._head_done

    @property
    def in_body(self) -> bool:
        return self._in_message and self._head_done

    def feed(self, data: bytes) -> list[Request]:
        if self._deferred is not None:
            raise self._deferred
        if self.upgraded:
            if len(self.after_upgrade) + len(data) > MAX_EARLY_BYTES:
                raise HttpError(400, "too much data sent before the upgrade was answered")
            self.after_upgrade += data
            return []
        self._began_in_chunk = False
        head_open_before = self._in_message and not self._head_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The request asking for the upgrade is whole (its message completed): what
            # follows its head is the new protocol's, kept for whoever takes it on.
            last = self._done[-1] if self._done else None
            if last is None or last.method != "GET" or last.body or _has_body(last.headers):
                raise HttpError(400, "a protocol upgrade is asked only by a GET without a body") from None
            self.upgraded = True
            self.after_upgrade = bytes(data[upgrade.args[0] :])
            self._done[-1].keep_alive = False  # nothing more is read as HTTP
        except httptools.HttpParserError as exc:
            # An HttpError raised by a callback below comes back wrapped; unwrap it.
            error, self._error = self._error, None
            error = error or HttpError(400, f"malformed request: {exc}")
            if not self._done:
                raise error from None
            # The requests that came whole before the fault are answered first (the one
            # before may have said Connection: close, after which anything is an error).
            self._deferred = error
        # httptools buffers a header that is still arriving without telling us, so a chunk
        # that began and ended inside one head is counted whole: the head can outgrow the
        # limit by at most one read before it is refused.
        if not self._in_message:
            pass  # between messages: the usual end of a read
        elif not self._head_done:
            if head_open_before and not self._began_in_chunk:
                self._spilled += len(data)
                if self._spilled > self._limits.max_header_bytes:
                    raise _head_too_large()
        else:
            # Everything read while a body is open counts, framing included; a read that
            # also held the head or an earlier request over-counts by at most that read.
            self._body_wire += len(data)
            limits = self._limits
            if self._body_wire > limits.max_body_bytes + limits.max_header_bytes + CHUNK_FRAMING_BYTES:
                raise HttpError(413, f"body with its chunk framing larger than {limits.max_body_bytes} bytes")
        done, self._done = self._done, []
        return done

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            self._fail(HttpError(414, "request URL too long"))
        self._head_bytes += len(url)
        if self._head_bytes > self._limits.max_header_bytes:
            self._fail(_head_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a chunked body's trailer: counted with the body, never taken as a header
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._limits.max_header_bytes:
            self._fail(_head_too_large())
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(name) <= MAX_KNOWN_HEADER_NAME and len(_HEADER_NAMES) < MAX_KNOWN_HEADER_NAMES:
                _HEADER_NAMES[name] = key
        text = value.decode("latin-1")
        headers = self._headers
        previous = headers.get(key)
        if previous is None:
            headers[key] = text
            return
        if key in SINGLE_HEADERS:
            self._fail(HttpError(400, f"more than one {key} header"))
        headers[key] = f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._head_done = True
        headers = self._headers
        if "host" not in headers and self._parser.get_http_version() == "1.1":
            self._fail(HttpError(400, "missing Host header"))
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            self._fail(HttpError(400, "only 'Transfer-Encoding: chunked' is accepted"))
        length = headers.get("content-length")
        if length is not None and int(length) > self._limits.max_body_bytes:
            self._fail(HttpError(413, f"body larger than {self._limits.max_body_bytes} bytes"))
        if "expect" in headers and headers["expect"].lower() == "100-continue":
            self.interim += CONTINUE

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.max_body_bytes:
            self._fail(HttpError(413, f"body larger than {self._limits.max_body_bytes} bytes"))

    def on_message_complete(self) -> None:
        self._in_message = False
        # Its body came whole in this read: a 100 Continue asked for in it is moot, and
        # would arrive after the final answer.
        self.interim = b""
        url = self._url
        # find, not `in`: bytes.__contains__ first tries its argument as an int, raising
        # and clearing a TypeError for every bytes argument (a thousand instructions).
        if url[:1] == b"/" and url.find(b"#") < 0:  # the usual origin form, split by hand
            path, _, query = url.decode("latin-1").partition("?")
        else:
            path, query = _target(url)
        body = self._body
        parser = self._parser
        method = parser.get_method()
        self._keep_alive = keep_alive = parser.should_keep_alive()
        self._done.append(
            Request(
                _METHODS.get(method) or method.decode("latin-1"),
                path,
                query,
                self._headers,
                body[0] if len(body) == 1 else b"".join(body),
                keep_alive,
            )
        )

    def _fail(self, error: HttpError) -> None:
        self._error = error
        raise error


def _has_body(headers: dict[str, str]) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")


def _head_too_large() -> HttpError:
    return HttpError(431, "request header block too large")


def _target(url: bytes) -> tuple[str, str]:
    """(path, query) of a request target other than the usual origin form (`/path?query`,
    split by hand in on_message_complete): an absolute URL, one with a fragment."""
    parsed = httptools.parse_url(url)
    return (parsed.path.decode("latin-1") if parsed.path else "/"), (
        parsed.query.decode("latin-1") if parsed.query else ""
    )


MAX_QUERY_FIELDS = 200
"""Bounds the work of parsing one request's query string."""


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The request's query parameters; HttpError(400) for a malformed or flooded one."""
    try:
        return parse_pairs(request.query, MAX_QUERY_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "malformed query string") from None


def query_values(request: Request, name: str) -> list[str]:
    """Every value of the query parameter `name`, found by its decoded name (so
    `tok%65n=` is `token=`). HttpError(400) as query_pairs."""
    query = request.query
    if name not in query and "%" not in query:  # the name cannot be there in any spelling
        return []
    return [value for key, value in query_pairs(request) if key == name]


def parse_pairs(text: str, max_fields: int) -> list[tuple[str, str]]:
    """The name=value pairs of a query string or a form body, as urllib's parse_qsl gives
    them (blank values kept, escapes decoded as strict UTF-8), without its cost in the
    common case of nothing escaped. Raises ValueError past `max_fields` and
    UnicodeDecodeError for an escape that is not UTF-8."""
    if not text:
        return []
    if text.count("&") >= max_fields:
        raise ValueError("Max number of fields exceeded")
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=max_fields)
    if "&" not in text:  # one pair, the usual /events?topic=NAME
        name, _, value = text.partition("=")
        return [(name, value)]
    pairs = []
    for part in text.split("&"):  # a loop: a comprehension would be two calls more
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES = {status: _status_line(status) for status in REASONS}


def response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
    keep_alive: bool = True,
) -> bytes:
    """A complete response with Content-Length; `Connection: close` unless kept alive."""
    head = [_STATUS_LINES.get(status) or _status_line(status)]
    if body or status not in (204, 304):
        head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode())
    for name, value in headers:
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


def error_response(error: RawsseError) -> bytes:
    """The response for an error: its status, headers and message, and `Connection: close`."""
    status = error.status or 500
    return response(status, f"{error.message}\n".encode(), headers=error.headers, keep_alive=False)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
)
"""The head of every stream response, up to the per-stream extra headers (CORS, and
`Connection: close` since a stream has no length and ends with the connection)."""


def stream_head(extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers).encode("latin-1")
    return STREAM_HEAD + extra + b"Connection: close\r\n\r\n"
