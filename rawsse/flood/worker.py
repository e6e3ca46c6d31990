"""A flooder worker process: opens its share of streams from one source address, parses
what arrives and tallies it. It talks to the main process over a pipe:

    worker -> main   ("ready", summary-so-far)      once every stream is open (or failed)
    main -> worker   ("progress",)                   answered with ("progress", streams, received)
    main -> worker   ("finish", expected, refused, settle, limit)
                                                     read until all expected events came,
                                                     nothing came for `settle` s, or `limit`
                                                     s passed; answered with ("done", summary)

The flooder must not be what limits a server's figures, so it keeps its own cost per
connection and per event small: one epoll for every stream, the request sent straight
after the connect (a loopback handshake is done by then), the response head split by
hand (httptools only for a chunked body), a read's events counted as a whole when they
are an in-order run (see StreamTally.add_read), and running totals instead of sums over
every stream. One piece, though long: that hot path, from connecting to tallying, is kept
where its cost per event can be read in one place.
"""

from __future__ import annotations

import errno
import multiprocessing.connection
import random
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httptools

from rawsse.flood.tally import StreamTally, Summary
from rawsse.poller import HANGUP, READABLE, WRITABLE, Poller, available_poller, make_poller
from rawsse.process.parent import stop_with

CONNECT_WINDOW = 512
"""Connections in flight at once per worker while opening, unless told otherwise."""

READ_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024
"""A response head longer than this is a broken server, not a stream."""


def _source_ports() -> tuple[int, int]:
    """The ports below the kernel's ephemeral range (Linux: ip_local_port_range; 1024 to
    32767 by default, elsewhere the same)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            low = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return 1024, max(low - 1, 1024 + 4095)


SOURCE_PORTS = _source_ports()
"""The source ports a flood process binds its streams to, in order, on its own source
address (split between processes that share one). Chosen here, not by the kernel: when
the kernel picks (a bind to port 0, or IP_BIND_ADDRESS_NO_PORT and connect), it searches
the ephemeral range for a free port, and that search grows with the ports already taken:
opening slowed from 5,700 to under 2,000 streams a second as a run grew towards a
million, and stalled near 15,000 streams per address, the flood's processes spending
their time in connect(). They are taken below the ephemeral range: a port bound
explicitly, on any address, is one the kernel no longer gives to anyone's connect(), and
the flood's own publisher (and every other client on the machine) connects from that
range. A port in use (a server's, a closing connection's) is skipped."""

PORT_TRIES = 64
"""Ports tried for one stream before it counts as failed."""

COMPLETE_CHECK_INTERVAL = 0.1
"""Seconds between checks that every stream has all its events (a pass over them all)."""

# The flooder does not run the full WHATWG parser per event: it cuts the body after the
# last complete event (a blank line, LF or CRLF) and finds our payloads' data lines with
# one regular expression, in C. Our payloads are one line; anything else in the stream
# (comments, retry, other data) is skipped. The pattern starts with a literal newline
# rather than `^` with MULTILINE: the regex engine then finds candidates by a fast
# literal search (twice as fast per event), and the stream's buffer always keeps the
# newline before its next line (see on_body).
PAYLOAD = re.compile(rb"\ndata: ?([A-Za-z0-9_-]+):([0-9]+):([0-9]+):")

# Over WebSocket the same payloads sit in the events' JSON (rawsse.core.ws.messages); a
# read is cut after the last whole event object (our payloads never hold a quote), and
# the frame headers between them need no parsing to be skipped.
WS_PAYLOAD = re.compile(rb'"data":"([A-Za-z0-9_-]+):([0-9]+):([0-9]+):')
WS_EVENT_END = b'"}'
WS_PING = b"\x89\x00"
"""rawsse's keep-alive ping (empty). A read that holds one is answered with one pong; one
that only seems to (two bytes of a frame length) gets an unasked pong, which is allowed."""
WS_PONG = b"\x8a\x80\x00\x00\x00\x00"
"""A masked, empty pong (a zero mask key is a valid key)."""
WS_KEY = "Zmxvb2Rlci1rZXktMDAwMA=="
"""Sec-WebSocket-Key: any 16 bytes in base64 will do; every stream sends the same."""


class BrokenResponse(Exception):
    """The server's answer is not an HTTP response."""


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
    tokens: list[str] = field(default_factory=list)
    """Each stream's bearer token, by its place in `paths` (none: no Authorization)."""
    open_timeout: float = 60.0
    connect_window: int = CONNECT_WINDOW
    ports: tuple[int, int] = SOURCE_PORTS
    """The source ports this process binds its streams to, first and last (see SOURCE_PORTS)."""
    websocket: bool = False
    """Streams are WebSockets (an upgrade, 101, text frames) instead of SSE."""


class _Stream:
    """One subscriber: its socket, the response's framing, the event parser and tally."""

    __slots__ = (
        "first_byte", "head", "http", "key", "open", "opening", "partial", "sock", "started",
        "status", "summary", "tally", "websocket", "worker",
    )  # fmt: skip

    def __init__(
        self, sock: socket.socket, key: str, started: float, summary: Summary, websocket: bool = False
    ) -> None:
        self.sock, self.websocket, self.key = sock, websocket, key
        self.started, self.summary = started, summary
        self.first_byte = 0.0
        self.worker = ""
        """The server process serving this stream, where it says (X-Rawsse-Worker)."""
        self.status = 0
        self.open = True
        self.opening = True
        """Counted in the connect window: neither open (a 200 head) nor dropped yet."""
        self.head = b""  # the response head, while it arrives
        self.http: httptools.HttpResponseParser | None = None  # a chunked body's framing
        self.partial = b"\n"  # what the body starts with is a line start
        self.tally = StreamTally()

    def feed(self, data: bytes) -> None:
        """Raises BrokenResponse, or httptools.HttpParserError for broken chunks."""
        if self.http is not None:
            self.http.feed_data(data)
        elif self.first_byte:
            if self.websocket:
                self.on_frames(data)
            else:
                self.on_body(data)
        else:
            self._head(data)

    @property
    def expected_status(self) -> int:
        return 101 if self.websocket else 200

    def _head(self, data: bytes) -> None:
        head = self.head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                raise BrokenResponse("response head too long")
            self.head = head
            return
        self.head = b""
        lines = head[:end].split(b"\r\n")
        try:
            self.status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise BrokenResponse(f"not an HTTP status line: {lines[0][:80]!r}") from None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                chunked = value.lower().find(b"chunked") >= 0  # not `in`: see core/http.py
            elif name == b"x-rawsse-worker":
                self.worker = value.strip().decode("latin-1")
        self.first_byte = time.monotonic()
        if self.status != self.expected_status:
            return
        if self.websocket:
            self.partial = b""
            if end + 4 < len(head):
                self.on_frames(head[end + 4 :])
        elif chunked:
            # httptools frames the chunks from the start of the response; its on_body
            # is ours.
            self.http = httptools.HttpResponseParser(self)
            self.http.feed_data(head)
        elif end + 4 < len(head):
            self.on_body(head[end + 4 :])

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
        self._count(PAYLOAD.findall(buffer, 0, cut))

    def _count(self, found: list[tuple[bytes, bytes, bytes]]) -> None:
        """Tally one read's payloads, and the latencies of those that are new."""
        if not found:
            return
        stamps = self.tally.add_read(found)
        if stamps:
            now_ns = time.time_ns()
            summary = self.summary
            summary.received += len(stamps)
            summary.latency_of(self.worker).add_since(now_ns, stamps)
            summary.last_event_at = now_ns / 1e9

    def on_frames(self, data: bytes) -> None:
        buffer = self.partial + data if self.partial else data
        if buffer.find(WS_PING) >= 0:
            try:
                self.sock.send(WS_PONG)
            except OSError:
                pass  # the read that finds the end drops the stream
        cut = buffer.rfind(WS_EVENT_END) + 2
        if cut < 2:
            self.partial = buffer[-MAX_HEAD:]
            return
        self.partial = buffer[cut:]
        self._count(WS_PAYLOAD.findall(buffer, 0, cut))


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.summary = Summary()
        kind = available_poller()
        if kind is None:
            raise RuntimeError("the flooder needs epoll or kqueue")
        self.poller: Poller = make_poller(kind)
        self.streams: list[_Stream] = []
        self.by_fd: dict[int, _Stream] = {}
        self.connecting: dict[int, bytes] = {}  # fd -> its request, until it can be sent
        self.opening = 0
        self._ports_taken = 0
        # From a place of its own in the range each run, so that a run soon after another
        # does not start on ports whose connections still wait out their TIME_WAIT.
        self._port_offset = random.randrange(spec.ports[1] - spec.ports[0] + 1)
        headers = dict(spec.headers)
        if spec.websocket:
            headers.update(
                {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": WS_KEY,
                 "Sec-WebSocket-Version": "13"}
            )  # fmt: skip
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._request = f"GET {{path}} HTTP/1.1\r\nHost: {spec.host}\r\n{extra}\r\n"

    # Opening

    def open_all(self) -> None:
        spec, summary = self.spec, self.summary
        index = 0
        deadline = time.monotonic() + spec.open_timeout
        summary.opening_started = time.time()
        while (index < len(spec.paths) or self.opening) and time.monotonic() < deadline:
            while index < len(spec.paths) and self.opening < spec.connect_window:
                self._connect(index)
                index += 1
            self.poll(0.2)
        # The time limit came first: what is still on its way failed, what was never
        # tried is said so (a stream asked for is counted somewhere, always).
        for stream in self.streams:
            if stream.opening:
                self._drop(stream, connect_error=True)
        summary.not_tried = len(spec.paths) - index
        summary.streams = sum(1 for s in self.streams if s.open and s.first_byte)
        summary.first_byte_seconds = sorted(s.first_byte - s.started for s in self.streams if s.first_byte)
        summary.opening_ended = time.time()

    def _connect(self, index: int) -> None:
        spec = self.spec
        sock = self._bound_and_connecting()
        if sock is None:
            self.summary.connect_errors += 1
            return
        stream = _Stream(sock, spec.keys[index], time.monotonic(), self.summary, spec.websocket)
        self.streams.append(stream)
        self.by_fd[sock.fileno()] = stream
        self.opening += 1
        request = self._request.format(path=spec.paths[index]).encode()
        if spec.tokens:  # its own Authorization, before the blank line that ends the head
            request = request[:-2] + b"Authorization: Bearer %s\r\n\r\n" % spec.tokens[index].encode()
        try:
            sock.send(request)  # on loopback the handshake is done by now
        except BlockingIOError:
            self.connecting[sock.fileno()] = request
            self.poller.want_write(sock.fileno(), True)
        except OSError:
            self._drop(stream, connect_error=True)

    def _bound_and_connecting(self) -> socket.socket | None:
        """A socket bound to the next free port of this process's range, its connect
        begun; None when no port of the next PORT_TRIES would do, or the range is used up."""
        spec = self.spec
        first, last = spec.ports
        for _ in range(PORT_TRIES):
            if self._ports_taken > last - first:
                return None
            port = first + (self._port_offset + self._ports_taken) % (last - first + 1)
            self._ports_taken += 1
            sock = socket.socket()
            sock.setblocking(False)
            # A port whose earlier connection waits out its TIME_WAIT may be bound again: the
            # kernel still refuses the same four-tuple at connect (the next port, below).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((spec.source, port))
            except OSError as error:
                sock.close()
                if error.errno == errno.EADDRINUSE:
                    continue  # another's port: the next
                return None  # no other port would do better
            result = sock.connect_ex((spec.host, spec.port))
            if result not in (0, errno.EINPROGRESS):
                sock.close()
                if result == errno.EADDRNOTAVAIL:
                    continue  # the four-tuple is taken (TIME_WAIT): the next port
                return None
            try:
                self.poller.register(sock.fileno())
            except OSError:
                sock.close()
                return None
            return sock
        return None

    # Reading

    def poll(self, timeout: float) -> None:
        by_fd = self.by_fd
        for fd, flags in self.poller.poll(timeout):
            stream = by_fd.get(fd)
            if stream is None:
                continue
            if flags & WRITABLE and fd in self.connecting:
                self._send_request(fd, stream)
            if flags & (READABLE | HANGUP):
                self._read(stream)

    def _send_request(self, fd: int, stream: _Stream) -> None:
        request = self.connecting.pop(fd)
        try:
            stream.sock.send(request)
        except OSError:
            self._drop(stream, connect_error=True)
            return
        self.poller.want_write(fd, False)

    def _read(self, stream: _Stream) -> None:
        try:
            data = stream.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(stream)
        else:
            self.summary.bytes += len(data)
            try:
                stream.feed(data)
            except (BrokenResponse, httptools.HttpParserError):
                self._drop(stream, connect_error=True)
            else:
                if stream.status and stream.status != stream.expected_status:
                    self._drop(stream, refused=True)
                elif stream.opening and stream.first_byte:
                    stream.opening = False
                    self.opening -= 1

    def _drop(self, stream: _Stream, connect_error: bool = False, refused: bool = False) -> None:
        if not stream.open:
            return
        stream.open = False
        if stream.opening:
            stream.opening = False
            self.opening -= 1
        fd = stream.sock.fileno()
        self.poller.unregister(fd)
        self.by_fd.pop(fd, None)
        self.connecting.pop(fd, None)
        stream.sock.close()  # or the server would hold a stream no one reads, to the end
        if refused:  # answered, but not with a stream
            self.summary.refused += 1
            stream.first_byte = 0.0
        elif connect_error or not stream.first_byte:
            self.summary.connect_errors += 1
            stream.first_byte = 0.0
        else:
            self.summary.disconnects += 1

    # Finishing

    def complete(self, expected: dict[str, int], refused: dict[str, int]) -> bool:
        return all(
            s.tally.received >= expected.get(s.key, 0) - refused.get(s.key, 0) for s in self.streams if s.open
        )

    def finish(self, expected: dict[str, int], refused: dict[str, int]) -> None:
        """Loss per stream: what was sent and accepted for its key but never arrived
        (events the server refused at publish are not expected)."""
        summary = self.summary
        for stream in self.streams:
            if not stream.first_byte:
                continue
            summary.duplicates += stream.tally.duplicates
            summary.out_of_order += stream.tally.out_of_order
            missing = stream.tally.missing({stream.key.encode(): expected.get(stream.key, 0)})
            summary.lost += max(missing - refused.get(stream.key, 0), 0)

    def close(self) -> None:
        for stream in self.streams:
            stream.sock.close()
        self.poller.close()


def run_worker(spec: WorkerSpec, control: multiprocessing.connection.Connection) -> None:
    cpu_start = time.process_time()  # the interpreter's start-up is not the flood's
    worker = _Worker(spec)
    summary = worker.summary
    worker.open_all()
    summary.cpu_opening = time.process_time() - cpu_start
    control.send(("ready", summary.to_json()))
    expected: dict[str, int] | None = None
    refused: dict[str, int] = {}
    settle = limit = 0.0
    last_progress = finish_asked = last_check = time.monotonic()
    while True:
        if control.poll():
            message = control.recv()
            if message[0] == "progress":
                control.send(("progress", summary.streams, summary.received))
            elif message[0] == "finish":
                expected, refused, settle, limit = message[1:5]
                last_progress = finish_asked = time.monotonic()
        received_before = summary.received
        worker.poll(0.05)
        now = time.monotonic()
        if summary.received != received_before:
            last_progress = now
        if expected is not None:
            if now - last_progress > settle or now - finish_asked > limit:
                break
            if now - last_check >= COMPLETE_CHECK_INTERVAL:
                last_check = now
                if worker.complete(expected, refused):
                    break
    worker.finish(expected or {}, refused)
    summary.cpu = time.process_time() - cpu_start
    control.send(("done", summary.to_json()))
    worker.close()


def worker_entry(spec: WorkerSpec, control: Any, parent: int) -> None:
    """multiprocessing target: never raise into the parent's face; report instead.
    `parent`: the flood's pid, taken before the start (read here, it could already be
    the pid that adopted an orphan)."""
    stop_with(parent)  # a flood killed midway takes its readers and their streams along
    try:
        run_worker(spec, control)
    except Exception as exc:  # pragma: no cover - reported to the parent
        control.send(("error", f"{type(exc).__name__}: {exc}"))
