"""The HTTP connection's state machine, without sockets: byte literals in, answers and
phases out, time from a fake clock."""

from __future__ import annotations

import pytest

from rawsse.core.connection import (
    ANSWER_TIMEOUT,
    FEED_SLICE,
    LINGER_TIME,
    PIPELINE_DEPTH,
    SHED_TIMEOUT,
    HttpConnection,
    Phase,
    Timeouts,
)
from rawsse.core.effects import OpenStream
from rawsse.core.http import HttpLimits, Request, RequestReader
from rawsse.errors import HttpError

KIND = "unit"

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
STREAM = b"GET /events?topic=t HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CLOSING = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
TIMEOUTS = Timeouts(header=10, body=30, keepalive=60, send=60)


def make(now: float = 0.0, shedding: bool = False) -> HttpConnection:
    return HttpConnection(HttpLimits(), TIMEOUTS, now, shedding)


def requests(connection: HttpConnection) -> list[Request]:
    out = []
    while (request := connection.next_request()) is not None:
        out.append(request)
    return out


def answer_all(connection: HttpConnection, now: float = 0.0) -> bytes:
    """Answer each request as it is handed out (a GET's answer lets the next one out)."""
    while (request := connection.next_request()) is not None:
        connection.respond(request, f"<{request.path}{request.body.decode()}>".encode(), False, now)
    return connection.take_output()


def test_pipelined_requests_are_answered_in_order_whatever_order_the_answers_come_in() -> None:
    connection = make()
    connection.receive_data(POST + POST.replace(b"hello", b"world") + GET, 0)
    first, second = requests(connection)  # publishes are handed out at once; the GET waits
    connection.respond(second, b"2", False, 0)
    assert connection.take_output() == b""  # the first answer is not there yet
    connection.respond(first, b"1", False, 0)
    assert connection.take_output() == b"12"
    [third] = requests(connection)  # every answer before it is out: its turn
    connection.respond(third, b"3", False, 0)
    assert connection.take_output() == b"3"
    assert connection.phase is Phase.IDLE


@pytest.mark.parametrize("cut", range(1, len(POST)))
def test_a_request_split_at_any_byte_gives_the_same_request(cut: int) -> None:
    connection = make()
    connection.receive_data(POST[:cut], 0)
    assert connection.next_request() is None
    connection.receive_data(POST[cut:], 0)
    [request] = requests(connection)
    assert (request.method, request.path, request.body) == ("POST", "/publish", b"hello")


def test_every_byte_on_its_own_gives_the_same_requests() -> None:
    connection = make()
    for byte in GET + POST:
        connection.receive_data(bytes([byte]), 0)
    assert answer_all(connection) == b"</healthz></publishhello>"


def test_the_header_timeout_runs_from_the_first_byte_of_a_head() -> None:
    connection = make(now=0)
    assert connection.deadline == 10  # before the first request, the header timeout
    connection.receive_data(GET[:10], now=4)
    assert (connection.phase, connection.deadline) == (Phase.HEAD, 14)
    connection.receive_data(GET[10:12], now=9)  # more bytes do not buy more time
    assert connection.deadline == 14
    connection.timeout(13.9, 0)
    assert connection.phase is Phase.HEAD
    connection.timeout(14, 0)
    assert connection.take_output().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert connection.take_refusals() == [408]
    assert connection.phase is Phase.LINGERING


def test_the_body_timeout_runs_once_the_head_is_in() -> None:
    connection = make()
    connection.receive_data(POST[:-3], now=2)
    assert (connection.phase, connection.deadline) == (Phase.BODY, 32)
    connection.timeout(32, 0)
    assert connection.take_output().startswith(b"HTTP/1.1 408 ")


def test_an_idle_kept_alive_connection_closes_after_the_keepalive_timeout() -> None:
    connection = make()
    connection.receive_data(GET, 1)
    assert answer_all(connection, now=2) == b"</healthz>"
    assert (connection.phase, connection.deadline) == (Phase.IDLE, 62)
    connection.timeout(62, 0)
    assert connection.phase is Phase.CLOSED
    assert connection.take_output() == b""  # closed quietly: nothing was asked


def test_after_an_error_the_connection_lingers_while_its_answer_drains() -> None:
    connection = make()
    connection.receive_data(b"NOT HTTP\r\n\r\n", now=0)
    assert connection.take_output().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert connection.phase is Phase.LINGERING and connection.wants_read
    connection.receive_data(b"more input", now=1)  # read and dropped
    assert connection.take_output() == b""
    connection.timeout(LINGER_TIME, unsent=5000)  # still draining: more time
    assert connection.phase is Phase.LINGERING
    connection.timeout(2 * LINGER_TIME, unsent=1000)  # progress: more time again
    assert connection.phase is Phase.LINGERING
    connection.timeout(3 * LINGER_TIME, unsent=1000)  # no progress: its bytes will never go
    assert connection.phase is Phase.ABORTED


def test_a_lingering_connection_closes_once_its_answer_is_out_or_the_client_is_done() -> None:
    drained = make()
    drained.receive_data(b"NOT HTTP\r\n\r\n", now=0)
    drained.timeout(LINGER_TIME, unsent=0)
    assert drained.phase is Phase.CLOSED
    hung_up = make()
    hung_up.receive_data(b"NOT HTTP\r\n\r\n", now=0)
    hung_up.receive_eof(now=1)  # no unread input can reset the connection now
    assert hung_up.phase is Phase.CLOSED


def test_an_answer_with_close_is_the_last() -> None:
    connection = make()
    connection.receive_data(CLOSING + GET, 0)
    [first] = requests(connection)  # the second is never answered
    connection.respond(first, b"bye", first.keep_alive is False, 0)
    assert connection.take_output() == b"bye"
    assert connection.phase is Phase.LINGERING
    assert connection.next_request() is None


def test_a_stream_request_upgrades_after_the_answers_before_it() -> None:
    connection = make()
    connection.receive_data(POST + STREAM + GET, 0)
    publish = connection.next_request()
    # The stream's replay is read when it joins, so after the publish is in the order.
    assert publish is not None and connection.next_request() is None
    connection.respond(publish, b"id", False, 0)
    events = connection.next_request()
    assert events is not None and events.path == "/events"
    stream = OpenStream(("t",), b"preamble", b"head")
    connection.open_stream(events, stream, 0)
    assert (connection.phase, connection.stream, connection.take_output()) == (Phase.STREAMING, stream, b"id")
    assert connection.next_request() is None  # what came after the stream request is dropped
    assert not connection.wants_read


def test_a_stream_that_cannot_open_after_all_is_told_to_come_back_later() -> None:
    connection = make()
    connection.receive_data(STREAM, 0)
    [events] = requests(connection)
    connection.open_stream(events, OpenStream(("t",), b"preamble", b"head"), 0)
    connection.refuse_stream(b"come back later", 1)
    assert (connection.take_output(), connection.phase) == (b"come back later", Phase.LINGERING)


def test_a_client_that_reads_no_answers_is_not_read_from_then_aborted() -> None:
    connection = make()
    connection.pause_output(now=5)
    assert not connection.wants_read
    connection.receive_data(GET, 6)  # what had already arrived waits, unparsed
    assert connection.next_request() is None
    assert connection.deadline == 5 + TIMEOUTS.send
    connection.resume_output(now=7)
    assert connection.wants_read
    assert answer_all(connection) == b"</healthz>"
    connection.pause_output(now=8)
    connection.timeout(8 + TIMEOUTS.send, 0)
    assert connection.phase is Phase.ABORTED


def test_requests_are_parsed_ahead_only_so_far() -> None:
    body = b"x" * 2000
    big = b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + body
    per_slice = FEED_SLICE // len(big) + 1
    connection = make()
    connection.receive_data(big * (PIPELINE_DEPTH * 3), 0)
    handed = requests(connection)
    assert PIPELINE_DEPTH <= len(handed) <= PIPELINE_DEPTH + per_slice and not connection.wants_read
    for request in handed:
        connection.respond(request, b".", False, 0)  # room again: parsing goes on
    assert len(requests(connection)) >= PIPELINE_DEPTH


def test_after_a_get_whose_answer_waits_nothing_more_is_handed_out() -> None:
    """A resume waiting for its id may become a stream: what follows must wait."""
    connection = make()
    connection.receive_data(STREAM + POST, 0)
    waiting = connection.next_request()
    assert waiting is not None and connection.next_request() is None
    connection.respond(waiting, b"page", False, 0)
    assert connection.next_request() is not None


def test_an_answer_that_never_comes_is_a_503_after_a_while() -> None:
    connection = make()
    connection.receive_data(POST, now=1)
    [request] = requests(connection)
    assert connection.deadline == 1 + ANSWER_TIMEOUT
    connection.timeout(1 + ANSWER_TIMEOUT, 0)
    assert connection.take_output().startswith(b"HTTP/1.1 503 ")
    connection.respond(request, b"too late", False, 20)  # ignored
    assert connection.take_output() == b""


def test_end_of_input_closes_once_what_was_asked_is_answered() -> None:
    connection = make()
    connection.receive_data(POST, 0)
    connection.receive_eof(0)
    [request] = requests(connection)
    assert connection.phase is Phase.IDLE
    connection.respond(request, b"id", False, 0)
    assert (connection.take_output(), connection.phase) == (b"id", Phase.CLOSED)  # no lingering
    quiet = make()
    quiet.receive_eof(0)
    assert quiet.phase is Phase.CLOSED


def test_expect_continue_is_answered_before_the_body() -> None:
    connection = make()
    head = b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    connection.receive_data(head, 0)
    assert connection.take_output() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_over_the_limit_a_connection_has_one_short_deadline_and_no_body() -> None:
    slow = make(now=0, shedding=True)
    slow.receive_data(GET[:5], now=0.5)
    assert slow.deadline == SHED_TIMEOUT  # the head's bytes buy no time
    slow.timeout(SHED_TIMEOUT, 0)
    assert (slow.phase, slow.take_output()) == (Phase.ABORTED, b"")  # dropped unanswered
    publisher = make(shedding=True)
    publisher.receive_data(POST[:-5], 0)  # the head of a request with a body
    assert publisher.take_output().startswith(b"HTTP/1.1 503 ")
    assert publisher.phase is Phase.CLOSED  # no lingering over the limit
    streamer = make(shedding=True)
    streamer.receive_data(STREAM, 0)
    [request] = requests(streamer)
    streamer.respond(request, b"come back later", False, 0)
    assert (streamer.take_output(), streamer.phase) == (b"come back later", Phase.CLOSED)


def test_a_failed_request_answers_in_its_turn_and_ends_the_connection() -> None:
    connection = make()
    connection.receive_data(POST + POST, 0)
    first, second = requests(connection)
    connection.fail(second, HttpError(413, "too big"), 0)
    connection.respond(first, b"ok", False, 0)
    output = connection.take_output()
    assert output.startswith(b"okHTTP/1.1 413 ")
    assert (connection.phase, connection.take_refusals()) == (Phase.LINGERING, [413])


def test_a_fault_after_whole_requests_is_answered_after_them() -> None:
    connection = make()
    connection.receive_data(GET + b"NOT HTTP\r\n\r\n", 0)
    [request] = requests(connection)
    assert connection.take_output() == b""  # the GET's answer comes first
    connection.respond(request, b"ok", False, 0)
    output = connection.take_output()
    assert output.startswith(b"okHTTP/1.1 400 Bad Request\r\n")
    assert (connection.phase, connection.take_refusals()) == (Phase.LINGERING, [400])


def test_over_the_limit_a_body_after_a_stream_request_waits_for_its_answer() -> None:
    connection = make(shedding=True)
    connection.receive_data(STREAM + POST[:-5], 0)
    assert connection.take_output() == b""  # no 503 ahead of the stream request's answer
    [request] = requests(connection)
    connection.respond(request, b"come back later", False, 0)
    assert (connection.take_output(), connection.phase) == (b"come back later", Phase.CLOSED)


def test_no_100_continue_for_a_body_that_came_with_its_head() -> None:
    """The body is here already: a 100 Continue would only arrive after the answer."""
    connection = make()
    connection.receive_data(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", 0
    )
    [request] = requests(connection)
    connection.respond(request, b"id", False, 0)
    assert connection.take_output() == b"id"


def test_a_100_continue_comes_after_the_answers_before_its_request() -> None:
    connection = make()
    expecting = b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    connection.receive_data(POST + expecting, 0)
    [first] = requests(connection)
    assert connection.take_output() == b""
    connection.respond(first, b"id", False, 0)
    assert connection.take_output() == b"idHTTP/1.1 100 Continue\r\n\r\n"


def test_the_answer_timeout_holds_while_another_head_arrives() -> None:
    connection = make()
    connection.receive_data(POST, now=0)
    requests(connection)  # its answer never comes
    connection.receive_data(GET[:10], now=5)  # the header timeout alone would give until 15
    assert connection.deadline == ANSWER_TIMEOUT
    connection.timeout(ANSWER_TIMEOUT, 0)
    assert connection.take_output().startswith(b"HTTP/1.1 503 ")


def test_an_answer_to_a_request_the_connection_gave_up_on_sends_nothing() -> None:
    connection = make()
    connection.receive_data(POST, now=0)
    [request] = requests(connection)
    connection.timeout(ANSWER_TIMEOUT, 0)
    assert connection.take_refusals() == [503]
    connection.take_output()
    connection.fail(request, HttpError(500, "late"), 11)
    connection.open_stream(request, OpenStream(("t",), b"p", b"h"), 11)
    assert (connection.take_output(), connection.take_refusals()) == (b"", [])


def test_a_connection_takes_over_a_reader_that_read_its_first_slice() -> None:
    """The raw accept path reads a first slice with a shared reader; when the connection
    is no stream, its core takes the reader, what it read and the unread rest, and goes
    on as if it had read everything itself: in order, nothing read twice."""
    data = GET * (FEED_SLICE // len(GET) + 10)
    reader = RequestReader(HttpLimits())
    first = reader.feed(data[:FEED_SLICE])
    connection = HttpConnection(HttpLimits(), TIMEOUTS, 0.0, reader=reader)
    connection.receive_parsed(first, None, data[FEED_SLICE:], 0.0)
    assert answer_all(connection) == b"</healthz>" * (FEED_SLICE // len(GET) + 10)


def test_a_fault_the_first_reader_met_is_answered_by_the_connection() -> None:
    reader = RequestReader(HttpLimits(max_url_bytes=64))
    with pytest.raises(HttpError) as raised:
        reader.feed(b"GET /" + b"x" * 100 + b" HTTP/1.1\r\n")
    connection = HttpConnection(HttpLimits(), TIMEOUTS, 0.0, reader=reader)
    connection.receive_parsed([], raised.value, b"", 0.0)
    assert connection.take_output().startswith(b"HTTP/1.1 414 ")
    assert connection.take_refusals() == [414]
    assert connection.phase is Phase.LINGERING


def test_whole_requests_before_a_fault_are_answered_first_whatever_follows_the_fault() -> None:
    """A fault after whole requests in one read of more than a slice: the requests are
    answered, then the fault; what follows the fault is not fed again (that would refuse
    the connection before its requests were answered)."""
    connection = make()
    connection.receive_data(GET + b"NOT HTTP " * 3000, 0)  # well over FEED_SLICE
    [request] = requests(connection)
    connection.respond(request, b"<answer>", False, 0)
    output = connection.take_output()
    assert output.startswith(b"<answer>HTTP/1.1 400 ")
    assert connection.phase is Phase.LINGERING


def test_answers_given_before_a_core_took_over_go_first_and_a_last_one_ends_it() -> None:
    connection = make()
    connection.send_first(b"<earlier answers>", True, 0)
    connection.receive_data(GET, 0)  # after a last answer: input is read and dropped
    assert connection.next_request() is None
    assert connection.take_output() == b"<earlier answers>"
    assert connection.phase is Phase.LINGERING
