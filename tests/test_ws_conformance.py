"""The frame rules a WebSocket server must keep, table-driven after the Autobahn
testsuite's server categories (framing, pings and pongs, reserved bits, opcodes,
fragmentation, UTF-8, close handling, limits): each case is client frames in, and the
exact outcome out — the frames answered, and the close code the connection is failed or
closed with. Run on the sans-I/O session (rawsse.core.ws.session), without sockets; the
tests in test_websocket.py check the same code on real connections."""

from __future__ import annotations

import pytest

from rawsse.core.state import ServerState
from rawsse.core.ws.frames import Opcode, close_frame, encode_frame
from rawsse.core.ws.session import BeginClose, Fail, Finish, Send, SessionLimits, Sessions
from tests.ws_frames import client_frame, close_code, close_payload, server_frames

KIND = "unit"

MAX_MESSAGE = 64 * 1024
LIMITS = SessionLimits(max_topics=4, max_topic_length=32, max_message=MAX_MESSAGE)


def outcome(data: bytes, chunk: int | None = None) -> tuple[list[tuple[int, bytes]], int | None, bool]:
    """(frames sent back, the close code we sent or None, whether the TCP connection
    ends) for the client bytes `data`, fed whole or in `chunk`-byte pieces."""
    sessions = Sessions(8, LIMITS, lambda: 0.0, ServerState())
    sessions.open(3, may_publish=False)
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    sent = b""
    code = None
    finished = False
    closing = False
    for piece in pieces:
        if finished:
            break  # the connection is gone: nothing more is read
        for action in sessions.receive(3, piece, ("t",), closing):
            if isinstance(action, Send):
                sent += action.data
            elif isinstance(action, BeginClose):
                sent += action.frame
                closing = True
            elif isinstance(action, Fail | Finish):
                sent += action.frame if isinstance(action, Fail) else b""
                finished = True
    frames = server_frames(sent)
    for opcode, payload in frames:
        if opcode == Opcode.CLOSE:
            code = close_code(payload) if payload else 1005
    return frames, code, finished


def text(payload: str | bytes, **kw: object) -> bytes:
    return client_frame(Opcode.TEXT, payload.encode() if isinstance(payload, str) else payload, **kw)  # type: ignore[arg-type]


PING_JSON = b'{"type": "ping"}'

# (case, client bytes, close code we must send or None, frames we must answer with before it)
CASES = [
    # 1. Framing: text messages of every length encoding are read (a command answers)
    ("1.1.1 text, 7-bit length", text(PING_JSON), None, 1),
    ("1.1.2 text, 16-bit length", text(b'{"type": "ping", "x": "' + b"a" * 200 + b'"}'), None, 1),
    ("1.1.3 text, 64-bit length", text(b'{"type": "ping", "x": "' + b"a" * 65500 + b'"}'), None, 1),
    ("1.2 binary message: not understood", client_frame(Opcode.BINARY, b"\x00\x01"), 1003, 0),
    ("1.3 unmasked client frame", text(PING_JSON, masked=False), 1002, 0),
    # 2. Pings and pongs
    ("2.1 ping without payload", client_frame(Opcode.PING), None, 1),
    ("2.2 ping with 125 bytes", client_frame(Opcode.PING, b"x" * 125), None, 1),
    ("2.3 ping with 126 bytes", client_frame(Opcode.PING, b"x" * 126), 1002, 0),
    ("2.4 fragmented ping", client_frame(Opcode.PING, b"x", fin=False), 1002, 0),
    ("2.5 unsolicited pong", client_frame(Opcode.PONG, b"hi"), None, 0),
    ("2.6 ten pings", client_frame(Opcode.PING, b"p") * 10, None, 10),
    # 3. Reserved bits
    ("3.1 RSV1 on text", text(PING_JSON, rsv=4), 1002, 0),
    ("3.2 RSV2 on text", text(PING_JSON, rsv=2), 1002, 0),
    ("3.3 RSV3 on ping", client_frame(Opcode.PING, rsv=1), 1002, 0),
    ("3.4 good ping, then RSV bits", client_frame(Opcode.PING) + text(PING_JSON, rsv=7), 1002, 1),
    # 4. Opcodes
    *[(f"4.1 reserved data opcode {op}", client_frame(op, b"x"), 1002, 0) for op in (3, 4, 5, 6, 7)],
    *[(f"4.2 reserved control opcode {op}", client_frame(op, b"x"), 1002, 0) for op in (11, 12, 13, 14, 15)],
    # 5. Fragmentation
    (
        "5.1 text in two fragments",
        text(PING_JSON[:5], fin=False) + client_frame(Opcode.CONTINUATION, PING_JSON[5:]),
        None,
        1,
    ),
    (
        "5.2 ping between fragments",
        text(PING_JSON[:5], fin=False)
        + client_frame(Opcode.PING, b"p")
        + client_frame(Opcode.CONTINUATION, PING_JSON[5:]),
        None,
        2,
    ),
    ("5.3 continuation without a message", client_frame(Opcode.CONTINUATION, b"x"), 1002, 0),
    ("5.4 unfinished fragment, then new text", text(b"{", fin=False) + text(PING_JSON), 1002, 0),
    (
        "5.5 many small fragments",
        b"".join(text(PING_JSON[:1], fin=False) for _ in range(1))
        + b"".join(client_frame(Opcode.CONTINUATION, bytes([c]), fin=False) for c in PING_JSON[1:-1])
        + client_frame(Opcode.CONTINUATION, PING_JSON[-1:]),
        None,
        1,
    ),
    (
        "5.6 empty fragments",
        text(b"", fin=False)
        + client_frame(Opcode.CONTINUATION, b"", fin=False)
        + client_frame(Opcode.CONTINUATION, PING_JSON),
        None,
        1,
    ),
    # 6. UTF-8
    ("6.1 valid multi-byte text", text('{"type": "ping", "ref": "κόσμε"}'), None, 1),
    ("6.2 invalid UTF-8", text(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007, 0),
    ("6.3 overlong encoding", text(b"\xc0\xaf"), 1007, 0),
    ("6.4 code point above U+10FFFF", text(b"\xf4\x90\x80\x80"), 1007, 0),
    (
        "6.5 a character split over fragments",
        text('{"type": "ping", "ref": "é'.encode()[:-1], fin=False)
        + client_frame(Opcode.CONTINUATION, 'é"}'.encode()[1:]),
        None,
        1,
    ),
    (
        "6.6 invalid bytes in a first fragment fail at once",
        text(b"\xff", fin=False),
        1007,
        0,
    ),
    ("6.7 truncated sequence at the message's end", text(b"ab\xe2\x82"), 1007, 0),
    # 7. Close handling
    ("7.1 close without payload", client_frame(Opcode.CLOSE), 1005, 0),
    ("7.2 close 1000", client_frame(Opcode.CLOSE, close_payload(1000)), 1000, 0),
    ("7.3 close 1000 with a reason", client_frame(Opcode.CLOSE, close_payload(1000, b"bye")), 1000, 0),
    (
        "7.4 close with 123 bytes of reason",
        client_frame(Opcode.CLOSE, close_payload(1000, b"r" * 123)),
        1000,
        0,
    ),
    ("7.5 close with a one-byte payload", client_frame(Opcode.CLOSE, b"\x03"), 1002, 0),
    ("7.6 close reason not UTF-8", client_frame(Opcode.CLOSE, close_payload(1000, b"\xff")), 1007, 0),
    *[
        (f"7.7 close with code {c} (allowed)", client_frame(Opcode.CLOSE, close_payload(c)), c, 0)
        for c in (1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
    ],
    *[
        (f"7.8 close with code {c} (never sent)", client_frame(Opcode.CLOSE, close_payload(c)), 1002, 0)
        for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
    ],
    ("7.9 nothing is read after a close", client_frame(Opcode.CLOSE) + client_frame(Opcode.PING), 1005, 0),
    (
        "7.10 close between fragments",
        text(b"{", fin=False) + client_frame(Opcode.CLOSE, close_payload(1000)),
        1000,
        0,
    ),
    # 9. Limits
    ("9.1 a message over the limit", text(b"a" * (MAX_MESSAGE + 1)), 1009, 0),
    (
        "9.2 fragments adding up over the limit",
        text(b"a" * MAX_MESSAGE, fin=False) + client_frame(Opcode.CONTINUATION, b"a"),
        1009,
        0,
    ),
    ("9.3 a frame header announcing 2^63 bytes", b"\x81\xff\x80" + b"\x00" * 7 + b"\x00" * 4, 1002, 0),
    ("9.4 a frame header announcing 1 GiB", b"\x81\xff" + (1 << 30).to_bytes(8, "big"), 1009, 0),
]


@pytest.mark.parametrize(("data", "code", "answers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytewise", "in-7-byte-pieces"])
def test_frames_in_exact_outcome_out(data: bytes, code: int | None, answers: int, chunk: int | None) -> None:
    if chunk == 1 and len(data) > 5000:
        chunk = 997  # byte by byte, a 64 KiB case would take seconds
    frames, sent_code, finished = outcome(data, chunk)
    non_close = [f for f in frames if f[0] != Opcode.CLOSE]
    assert len(non_close) == answers
    assert sent_code == code
    # A protocol fault fails the connection: the server ends it with its close frame
    # (RFC 6455 7.1.7), without waiting for the client's; a close the client began ends
    # the connection once it is echoed.
    client_closed = code is not None and data.find(b"\x88") >= 0 and code not in (1002, 1003, 1007, 1009)
    if code is None:
        assert not finished
    elif code in (1002, 1007) or client_closed:
        assert finished


def test_pong_echoes_the_ping_payload() -> None:
    frames, _, _ = outcome(client_frame(Opcode.PING, b"payload-123"))
    assert frames == [(Opcode.PONG, b"payload-123")]


def test_the_close_echo_carries_the_peer_code_and_reason() -> None:
    frames, _code, finished = outcome(client_frame(Opcode.CLOSE, close_payload(4321, b"done")))
    assert frames == [(Opcode.CLOSE, close_payload(4321, b"done"))]
    assert finished


def test_close_frame_reasons_are_cut_to_fit_a_control_frame() -> None:
    frame = close_frame(1001, "é" * 200)
    assert len(frame) <= 127
    assert frame[1] <= 125
    assert encode_frame(Opcode.PING, b"")[:2] == b"\x89\x00"


def test_nothing_after_a_protocol_fault_is_processed() -> None:
    """A failed connection's later input, even well-formed commands, is dropped."""
    sessions = Sessions(8, LIMITS, lambda: 0.0, ServerState())
    sessions.open(3, may_publish=False)
    actions = sessions.receive(3, text(PING_JSON, masked=False) + text(PING_JSON), ("t",), False)
    assert [type(action) for action in actions] == [Fail]
    assert sessions.receive(3, text(PING_JSON) + client_frame(Opcode.PING), ("t",), True) == []
