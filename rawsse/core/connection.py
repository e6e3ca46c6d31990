"""One HTTP/1.1 server connection as a state machine, without I/O.

The driver (rawsse.reactor.protocol) feeds it what happens — bytes received, the end of
input, the transport's flow control, the clock passing a deadline, the application's
answers — and reads back what to do: requests to answer (`next_request`), bytes to send
(`take_output`), whether to read (`wants_read`), the `phase` (which says when to
half-close, close, abort or hand the connection to the stream reactor) and the next
`deadline`.

Every change of phase happens in `_enter` and every deadline comes from `_deadline`
(h11's "Rule 1": everything that affects the state machine lives here). That rule is why
this module is one piece, though long.

    IDLE ─first byte─> HEAD ─head done─> BODY ─body done─> IDLE   (keep-alive)
      │                  └──────────── no body ──────────────┘
      ├─ an answer with close, an error, a timeout ─> LINGERING ─> CLOSED (or ABORTED)
      ├─ the client's end of input, nothing asked ──> CLOSED
      ├─ over the limit: the answer, or a timeout ──> CLOSED / ABORTED
      └─ an answer that opens a stream ─────────────> STREAMING (─> LINGERING, if it
                                                      cannot open after all)

Answers leave in request order whatever order they come in. A POST (a publish) is handed
out as soon as it is parsed, even while earlier answers wait, so that dense publishers
behind a Redis round trip are not held to one round trip per request; any other request
is handed out only once every answer before it is out (a stream request's replay must be
read at the moment the stream joins), and nothing after it until it is answered (it may
become a stream).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rawsse.core.effects import OpenStream
from rawsse.core.http import HttpLimits, Request, RequestReader, error_response
from rawsse.errors import RETRY_AFTER, HttpError, RawsseError

LINGER_TIME = 5.0
"""After the last answer the connection is half-closed and read (and dropped) for this
long, so unread input cannot make the kernel reset the connection before the client has
read the answer (nginx's lingering_timeout). A last answer still draining extends it."""

ANSWER_TIMEOUT = 10.0
"""A request whose answer waits on the broker (a Redis round trip, a resume waiting for its
id) gets 503 after this long, whatever the broker does."""

SHED_TIMEOUT = 1.0
"""Time a connection over the connection limit has for its whole request head."""

FEED_SLICE = 16 * 1024
"""Input is parsed this much at a time, and not at all while answers wait unread, so a
paused connection holds at most a slice's worth of parsed requests."""

PIPELINE_DEPTH = 16
"""Parsing stops while this many requests wait for their answers. One slice is parsed
whole, so a slice of small requests (a few hundred in 16 KiB) may hold more: FEED_SLICE
is what bounds a connection's parsed requests."""

BUSY = HttpError(503, "too many connections; retry shortly", RETRY_AFTER)

NOTHING = memoryview(b"")


class Phase(enum.Enum):
    IDLE = "idle"
    """Between requests: the keep-alive timeout runs (the header timeout before the first)."""
    HEAD = "head"
    """A request head is arriving: the header timeout runs."""
    BODY = "body"
    """A request body is arriving: the body timeout runs."""
    LINGERING = "lingering"
    """The last answer is out: half-close, read and drop input until the deadline."""
    STREAMING = "streaming"
    """An answer opened a stream: the stream reactor owns the connection now."""
    CLOSED = "closed"
    """Close once the output is written."""
    ABORTED = "aborted"
    """Close now, dropping unsent output."""


ANSWERING = (Phase.IDLE, Phase.HEAD, Phase.BODY)
"""The phases in which requests are read and answered."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    header: float
    body: float
    keepalive: float
    send: float
    """A connection whose client reads none of our output for this long is aborted."""


class _Pending:
    """A parsed request not yet answered in its turn."""

    __slots__ = ("answer", "arrived", "close", "request", "status", "stream")

    def __init__(self, request: Request, arrived: float) -> None:
        self.request = request
        self.arrived = arrived
        self.answer: bytes | None = None
        self.close = False
        self.status: int | None = None
        """The status of an error answer, counted when it goes out."""
        self.stream: OpenStream | None = None

    @property
    def answered(self) -> bool:
        return self.answer is not None or self.stream is not None


class HttpConnection:
    def __init__(
        self,
        limits: HttpLimits,
        timeouts: Timeouts,
        now: float,
        shedding: bool = False,
        reader: RequestReader | None = None,
    ) -> None:
        """`reader`: the one that read the connection's first bytes (see receive_parsed);
        the connection owns it from now on."""
        # per connection
        self._reader = RequestReader(limits) if reader is None else reader
        self._timeouts = timeouts
        self._shedding = shedding
        self._started = now
        self._first = True  # no request yet: the header timeout runs from the connection's start
        self.phase = Phase.IDLE
        self._since = now  # when the current phase began
        self._unparsed = NOTHING
        self._output: list[bytes] = []
        self.output_size = 0
        """Bytes in the output not taken yet."""
        self._refusals: list[int] | None = None
        self._output_paused_since: float | None = None
        self._input_ended = False
        self._unsent_at_deadline = 0
        self._interim = b""  # a 100 Continue waiting for the answers before its request
        # per request
        # Lists, not deques: they hold a handful, and a deque's first block alone is half
        # a kilobyte per connection.
        self._pending: list[_Pending] = []
        """Every parsed request not yet answered in its turn, in order."""
        self._parsed: list[_Pending] = []
        """Those of them not handed out yet."""
        self._holding: _Pending | None = None
        """The last request handed out that is not a POST: nothing more is handed out
        until it is answered (it may become a stream)."""
        self.stream: OpenStream | None = None
        """The stream the connection became, once it is STREAMING."""

    # Input

    def receive_data(self, data: bytes, now: float) -> None:
        if self.phase not in ANSWERING:
            return  # lingering or done: input is read and dropped
        self._unparsed = memoryview(bytes(self._unparsed) + data) if self._unparsed else memoryview(data)
        self._parse(now)

    def receive_parsed(
        self, requests: list[Request], error: HttpError | None, rest: bytes, now: float
    ) -> None:
        """What the connection's reader read before the connection took it over — its
        requests, or the fault it met — and `rest`, the input it did not read yet. (The
        raw accept path reads a first slice with a reader of its own; see
        rawsse.reactor.acceptor.)"""
        if error is not None:
            self._refuse(error, now)
        elif self._take(requests, now):
            self._unparsed = memoryview(rest)
            self._parse(now)

    def send_first(self, data: bytes, last: bool, now: float) -> None:
        """Answers given before this core took the connection over (on the raw path,
        rawsse.reactor.raw_requests) that the socket did not take whole: they go out
        before anything else; `last` when the last of them ends the connection."""
        self._first = False  # requests were answered: the keep-alive timeout runs from here
        self._emit(data)
        if last:
            self._end(now)

    def receive_eof(self, now: float) -> None:
        """The client will send nothing more. What it asked is still answered, then the
        connection closes: at once when nothing is asked, or when it was lingering."""
        self._input_ended = True
        if self.phase is Phase.LINGERING or (self.phase in ANSWERING and not self._pending):
            self._enter(Phase.CLOSED, now)

    def pause_output(self, now: float) -> None:
        """The transport's buffer is full: the client is not reading our answers. Stop
        reading its requests until it does, so unsent answers stay bounded."""
        if self._output_paused_since is None:
            self._output_paused_since = now

    def resume_output(self, now: float) -> None:
        if self._output_paused_since is not None:
            self._output_paused_since = None
            self._since = now  # the phase's timeout starts over
            self._parse(now)

    def timeout(self, now: float, unsent: int) -> None:
        """The deadline passed; `unsent` is what the transport still holds."""
        if now < self.deadline:
            return
        phase = self.phase
        if self._shedding and phase in ANSWERING:
            self._enter(Phase.ABORTED, now)  # dropped unanswered: EventSource retries that
        elif phase is Phase.LINGERING:
            if not unsent:
                self._enter(Phase.CLOSED, now)
            elif unsent < self._unsent_at_deadline:  # a last answer still draining: more time
                self._unsent_at_deadline = unsent
                self._since = now
            else:
                self._enter(Phase.ABORTED, now)  # no progress: its bytes will never go
        elif self._output_paused_since is not None:
            self._enter(Phase.ABORTED, now)  # the client stopped reading our answers
        elif self._pending and now >= self._pending[0].arrived + ANSWER_TIMEOUT:
            self._refuse(HttpError(503, "the broker did not answer in time", RETRY_AFTER), now)
        elif phase in (Phase.HEAD, Phase.BODY):
            self._refuse(HttpError(408, "request not received in time"), now)
        elif phase is Phase.IDLE:
            self._enter(Phase.CLOSED, now)

    # The application's side

    def next_request(self) -> Request | None:
        """The next parsed request to answer, or None: none is parsed, the connection no
        longer answers, the client reads none of our answers, or it must wait for the
        answers before it (see the module's docstring)."""
        if not self._parsed or self.phase not in ANSWERING or self._output_paused_since is not None:
            return None
        if self._holding is not None and not self._holding.answered:
            return None
        pending = self._parsed[0]
        if pending.request.method != "POST" and self._pending[0] is not pending:
            return None
        del self._parsed[0]
        self._holding = pending if pending.request.method != "POST" else None
        return pending.request

    def respond(self, request: Request, data: bytes, close: bool, now: float) -> None:
        """`data` is the whole answer to `request`; `close` makes it the last."""
        pending = self._find(request)
        if pending is not None:
            pending.answer = data
            pending.close = close or self._shedding
            self._send_answered(now)

    def open_stream(self, request: Request, stream: OpenStream, now: float) -> None:
        """Answer `request` by making the connection a stream; when its turn comes the
        phase becomes STREAMING and `stream` says which."""
        pending = self._find(request)
        if pending is not None:
            pending.stream = stream
            self._send_answered(now)

    def fail(self, request: Request, error: RawsseError, now: float) -> None:
        """Answer `request` with `error`, then close."""
        pending = self._find(request)
        if pending is not None:
            pending.answer = error_response(error)
            pending.close = True
            pending.status = error.status or 500
            self._send_answered(now)

    def refuse_stream(self, answer: bytes, now: float) -> None:
        """The stream could not be opened after all: answer with `answer` and close."""
        if self.phase is Phase.STREAMING:
            self._emit(answer)
            self._end(now)

    # What the driver reads back

    def take_output(self) -> bytes:
        output, self._output = self._output, []
        self.output_size = 0
        return b"".join(output) if len(output) != 1 else output[0]

    def take_refusals(self) -> list[int]:
        """The statuses of the error answers sent since the last call (for the metrics)."""
        refusals, self._refusals = self._refusals, None
        return refusals or []

    @property
    def wants_read(self) -> bool:
        """Whether the driver should read the socket: to parse, or, lingering, to drop."""
        return self.phase is Phase.LINGERING or self._can_parse

    @property
    def deadline(self) -> float:
        return self._deadline()

    @property
    def after_upgrade(self) -> bytes:
        """What the client sent after a protocol upgrade request's head (a WebSocket's
        frames sent before the 101): the new protocol's input."""
        return self._reader.after_upgrade

    def release(self) -> None:
        """Free the parser (it and the reader refer to each other); the connection is done."""
        self._reader.close()

    # Parsing

    @property
    def _can_parse(self) -> bool:
        return (
            self.phase in ANSWERING
            and self._output_paused_since is None
            and len(self._pending) < PIPELINE_DEPTH
        )

    def _parse(self, now: float) -> None:
        reader = self._reader
        while self._unparsed and self._can_parse:
            if reader.deferred is not None:
                # A fault after whole requests: nothing after it is HTTP, and it is refused
                # once they are answered (feeding the rest would refuse it before them).
                self._unparsed = NOTHING
                break
            chunk = self._unparsed
            if len(chunk) > FEED_SLICE:
                chunk, self._unparsed = chunk[:FEED_SLICE], chunk[FEED_SLICE:]
            else:
                self._unparsed = NOTHING
            try:
                requests = reader.feed(chunk)  # type: ignore[arg-type]
            except HttpError as error:
                self._unparsed = NOTHING
                self._refuse(error, now)
                return
            if not self._take(requests, now):
                return
        self._refuse_deferred(now)

    def _take(self, requests: list[Request], now: float) -> bool:
        """What the reader made of one slice; False when reading stops here."""
        reader = self._reader
        for request in requests:
            pending = _Pending(request, now)
            self._pending.append(pending)
            self._parsed.append(pending)
            self._first = False
        if reader.interim:
            # The 100 Continue of the request now arriving: after the answers before it.
            self._interim += reader.interim
            reader.interim = b""
            self._send_interim()
        if self._shedding and reader.in_body:
            # A request with a body is no stream request: it is turned away from its
            # head, without its body being read (after what was asked before it).
            self._unparsed = NOTHING
            if not self._pending:
                self._refuse(BUSY, now)
            return False
        self._enter(Phase.HEAD if reader.in_head else Phase.BODY if reader.in_body else Phase.IDLE, now)
        return True

    def _send_interim(self) -> None:
        if self._interim and not self._pending:
            self._emit(self._interim)
            self._interim = b""

    def _refuse_deferred(self, now: float) -> None:
        """A fault the reader met after whole requests: refused once they are answered."""
        error = self._reader.deferred
        if error is not None and not self._pending and self.phase in ANSWERING:
            self._refuse(error, now)

    # Answers, in order

    def _find(self, request: Request) -> _Pending | None:
        for pending in self._pending:
            if pending.request is request:
                return pending
        return None  # answered after the connection gave up on it (a timeout, an error)

    def _send_answered(self, now: float) -> None:
        """Send the answers whose turn has come, and act on the last or the stream."""
        pending = self._pending
        while pending and pending[0].answered:
            done = pending.pop(0)
            if done.stream is not None:
                self.stream = done.stream
                self._drop_the_rest()
                self._enter(Phase.STREAMING, now)
                return
            assert done.answer is not None
            self._emit(done.answer)
            if done.status is not None:
                self._count(done.status)
            if done.close:
                self._drop_the_rest()
                self._end(now)
                return
        self._send_interim()
        if self.phase is Phase.IDLE:
            self._since = now  # each answer starts the keep-alive timeout anew
        self._parse(now)
        if self._input_ended and self.phase is Phase.IDLE and not pending and not self._unparsed:
            self._end(now)  # the client sent its last request long ago

    def _drop_the_rest(self) -> None:
        """Nothing after the last answer (or a stream) is answered."""
        self._pending.clear()
        self._parsed.clear()
        self._unparsed = NOTHING
        self._interim = b""

    def _refuse(self, error: RawsseError, now: float) -> None:
        """A connection-level error: answered at once, after what is already out."""
        self._count(error.status or 500)
        self._emit(error_response(error))
        self._drop_the_rest()
        self._end(now)

    def _end(self, now: float) -> None:
        # Over the limit, the descriptor is given back at once, and so it is when the
        # client has said its last word; otherwise it gets time to read the last answer
        # before any unread input could reset the connection.
        self._enter(Phase.CLOSED if self._shedding or self._input_ended else Phase.LINGERING, now)

    def _emit(self, data: bytes) -> None:
        self._output.append(data)
        self.output_size += len(data)

    def _count(self, status: int) -> None:
        if self._refusals is None:
            self._refusals = []
        self._refusals.append(status)

    # The one place the phase changes, and the one place deadlines come from

    def _enter(self, phase: Phase, now: float) -> None:
        if phase is self.phase:
            return
        self.phase = phase
        self._since = now
        if phase is Phase.LINGERING:
            self._unsent_at_deadline = 1 << 62  # any unsent count is progress at first

    def _deadline(self) -> float:
        timeouts = self._timeouts
        phase = self.phase
        if self._shedding and phase in ANSWERING:
            return self._started + SHED_TIMEOUT
        if phase is Phase.LINGERING:
            return self._since + LINGER_TIME
        if phase not in ANSWERING:
            return float("inf")
        if self._output_paused_since is not None:
            return self._output_paused_since + timeouts.send
        if phase is Phase.HEAD:
            deadline = self._since + timeouts.header
        elif phase is Phase.BODY:
            deadline = self._since + timeouts.body
        elif self._pending:
            deadline = float("inf")  # the answer timeout below
        else:
            deadline = self._since + (timeouts.header if self._first else timeouts.keepalive)
        if self._pending:
            return min(deadline, self._pending[0].arrived + ANSWER_TIMEOUT)
        return deadline
