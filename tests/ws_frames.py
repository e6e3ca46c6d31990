"""Client-side WebSocket frames for tests: masked, as a client must send them, with every
field settable so tests can also build the frames a client must not send."""

from __future__ import annotations

import struct

from rawsse.core.ws.frames import unmask

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, masked: bool = True, mask: bytes = MASK
) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    return head + mask + unmask(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked frame in `data`."""
    frames = []
    offset = 0
    while offset + 2 <= len(data):
        opcode = data[offset] & 0x0F
        size = data[offset + 1] & 0x7F
        head = 2
        if size == 126:
            size, head = struct.unpack("!H", data[offset + 2 : offset + 4])[0], 4
        elif size == 127:
            size, head = struct.unpack("!Q", data[offset + 2 : offset + 10])[0], 10
        frames.append((opcode, data[offset + head : offset + head + size]))
        offset += head + size
    return frames


def close_code(frame_payload: bytes) -> int | None:
    return struct.unpack("!H", frame_payload[:2])[0] if len(frame_payload) >= 2 else None
