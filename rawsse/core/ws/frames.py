"""WebSocket frames (RFC 6455, section 5), without I/O: the server's frames encoded once,
and a parser of the client's frames that turns bytes into messages, control frames and,
for anything the RFC forbids, the close code to fail the connection with.

A parser exists only while a frame or a fragmented message is incomplete: a connection
whose client says nothing, or whose every read holds whole frames, keeps none (the
reactor makes one for the read, and drops it when it is `idle` again).
"""

from __future__ import annotations

import codecs
import enum
import struct
from typing import NamedTuple


class Opcode(enum.IntEnum):
    """RFC 6455 5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})

MAX_CONTROL_PAYLOAD = 125


class CloseCode(enum.IntEnum):
    """The close codes the server sends (RFC 6455 7.4.1; 1012, 1013, 3000 and 3003 from
    the IANA registry)."""

    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_LARGE = 1009
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 3000
    """The stream's token expired: reconnect with a fresh one."""
    FORBIDDEN = 3003
    """The stream's user was disconnected (/disconnect?user=): its session is over."""


_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
"""Codes a peer may put in a close frame below 3000; 1004-1006 and 1015 never travel."""


def close_code_allowed(code: int) -> bool:
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A whole server frame (FIN set, never masked)."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def text_frame(text: str) -> bytes:
    return encode_frame(Opcode.TEXT, text.encode())


def close_frame(code: int | None = None, reason: str = "") -> bytes:
    """A close frame; its reason is cut to fit a control frame's 125 bytes."""
    if code is None:
        return encode_frame(Opcode.CLOSE, b"")
    payload = struct.pack("!H", code) + reason.encode()[: MAX_CONTROL_PAYLOAD - 2]
    return encode_frame(Opcode.CLOSE, payload)


PING_FRAME = encode_frame(Opcode.PING, b"")
"""The sweep's keep-alive ping: one shared object for every WebSocket stream."""


class Text(NamedTuple):
    """A whole text message (valid UTF-8)."""

    text: str


class Binary(NamedTuple):
    data: bytes


class Ping(NamedTuple):
    payload: bytes


class Pong(NamedTuple):
    payload: bytes


class Close(NamedTuple):
    """The peer's close frame: its code (None when it gave none) and reason."""

    code: int | None
    reason: str


class Fault(NamedTuple):
    """The client broke the protocol: fail the connection with this close code. Nothing
    after it is parsed."""

    code: int
    reason: str


Incoming = Text | Binary | Ping | Pong | Close | Fault


def unmask(payload: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR the payload with the repeated 4-byte key, as one big-integer operation."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class FrameParser:
    """The client's frames, read as they come: `feed` returns what the bytes completed.

    Enforced: every client frame masked; no reserved bits (no extension is ever agreed);
    known opcodes only; control frames unfragmented and at most 125 bytes, allowed between
    the fragments of a message; continuations only inside a fragmented message; a message
    at most `max_message` bytes (checked from frame headers, before the payload is held);
    text valid UTF-8, checked as fragments arrive; close codes and reasons valid.
    """

    __slots__ = ("_buffer", "_decoder", "_failed", "_max_message", "_message", "_message_opcode", "_skip")

    def __init__(self, max_message: int) -> None:
        self._max_message = max_message
        self._buffer = bytearray()
        """A frame's bytes while it is incomplete (grown in place: a frame trickled in
        many reads is not copied once per read)."""
        self._failed = False
        """Nothing more is read as frames: after a close, or a fault the stream cannot be
        followed past."""
        self._skip = 0
        """After a message over the limit: how much of its frame is still to come, to be
        dropped unread, so the client's close frame after it can still be found."""
        # the fragmented message in progress
        self._message_opcode: int | None = None
        self._message = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def idle(self) -> bool:
        """Nothing half-read, nothing being skipped: the parser can be dropped without
        losing anything. (A failed one is kept: it stands for the stream's state.)"""
        return not self._buffer and self._message_opcode is None and not self._failed and not self._skip

    def feed(self, data: bytes) -> list[Incoming]:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if self._failed or not data:
            return []
        if self._buffer:
            self._buffer += data
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data
        found: list[Incoming] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            size = second & 0x7F
            head = 2
            if size == 126:
                head = 4
                if end - offset < head:
                    break
                size = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
            elif size == 127:
                head = 10
                if end - offset < head:
                    break
                size = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
            fault = self._check_head(first, second, size)
            if fault is not None:
                if fault.code == CloseCode.TOO_LARGE and second & 0x80:  # its end is known: skip to it
                    self._skip = max(offset + head + 4 + size - end, 0)
                    self._reset_message()
                    self._buffer = bytearray(buffer[offset + head + 4 + size :])
                    found.append(fault)
                    return found
                return self._fail(found, fault)
            if end - offset < head + 4 + size:
                break
            mask = buffer[offset + head : offset + head + 4]
            start = offset + head + 4
            payload = unmask(buffer[start : start + size], mask)
            offset = start + size
            item = self._frame(first & 0x80, first & 0x0F, payload)
            if item is not None:
                found.append(item)
                if isinstance(item, Fault):
                    return self._fail(found, None)
                if isinstance(item, Close):
                    self._failed = True  # nothing is read after a close frame
                    self._buffer = bytearray()
                    return found
        if buffer is self._buffer:
            del self._buffer[:offset]
        elif offset < end:
            self._buffer = bytearray(buffer[offset:])
        return found

    def _fail(self, found: list[Incoming], fault: Fault | None) -> list[Incoming]:
        if fault is not None:
            found.append(fault)
        self._failed = True
        self._buffer = bytearray()
        self._reset_message()
        return found

    def _reset_message(self) -> None:
        self._message_opcode = None
        self._message = bytearray()
        self._decoder = None

    def _check_head(self, first: int, second: int, size: int) -> Fault | None:
        """What is wrong with a frame, known from its header alone."""
        if first & 0x70:
            return Fault(CloseCode.PROTOCOL_ERROR, "reserved bits set; no extension was agreed")
        opcode = first & 0x0F
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            return Fault(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not second & 0x80:
            return Fault(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        if opcode in CONTROL_OPCODES:
            if not first & 0x80:
                return Fault(CloseCode.PROTOCOL_ERROR, "control frames must not be fragmented")
            if size > MAX_CONTROL_PAYLOAD:
                return Fault(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
            return None
        if size >> 63:
            return Fault(CloseCode.PROTOCOL_ERROR, "frame length has its top bit set")
        if opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                return Fault(CloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue")
        elif self._message_opcode is not None:
            return Fault(CloseCode.PROTOCOL_ERROR, "new message before the fragmented one ended")
        if len(self._message) + size > self._max_message:
            return Fault(CloseCode.TOO_LARGE, f"message over {self._max_message} bytes")
        return None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> Incoming | None:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode == Opcode.CLOSE:
            return _close(payload)
        if opcode != Opcode.CONTINUATION:
            self._message_opcode = opcode
            if fin:  # the usual case: a whole message in one frame
                self._message_opcode = None
                if opcode == Opcode.BINARY:
                    return Binary(payload)
                try:
                    return Text(payload.decode())
                except UnicodeDecodeError:
                    return Fault(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
            if opcode == Opcode.TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._message += payload
        decoder = self._decoder
        if decoder is not None:
            try:  # fails as soon as the bytes so far cannot be UTF-8
                decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                return Fault(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
        if not fin:
            return None
        message = bytes(self._message)
        kind = self._message_opcode
        self._reset_message()
        return Text(message.decode()) if kind == Opcode.TEXT else Binary(message)


def _close(payload: bytes) -> Close | Fault:
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        return Fault(CloseCode.PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not close_code_allowed(code):
        return Fault(CloseCode.PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        return Fault(CloseCode.INVALID_DATA, "close reason is not valid UTF-8")
    return Close(code, reason)
