"""Property and fuzz tests of the WebSocket frame parser: random bytes and mutated valid
frames give only documented results — whole messages, control frames, or a Fault with
1002, 1007 or 1009 — never an exception; and how the bytes are split never changes what
they mean."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.core.ws.frames import Binary, Close, Fault, FrameParser, Incoming, Opcode, Ping, Pong, Text
from tests.ws_frames import client_frame

KIND = "unit"

LIMIT = 4096
DOCUMENTED = (Text, Binary, Ping, Pong, Close, Fault)
FAULT_CODES = {1002, 1007, 1009}


def parse(chunks: list[bytes]) -> list[Incoming]:
    parser = FrameParser(LIMIT)
    found: list[Incoming] = []
    for chunk in chunks:
        found.extend(parser.feed(chunk))
    return found


def check(found: list[Incoming]) -> None:
    for index, item in enumerate(found):
        assert isinstance(item, DOCUMENTED)
        if isinstance(item, Fault):
            assert item.code in FAULT_CODES
        if isinstance(item, Fault | Close):
            assert index == len(found) - 1  # nothing after a fault or a close


frames = st.builds(
    client_frame,
    st.sampled_from([Opcode.TEXT, 2, Opcode.CONTINUATION, Opcode.PING, Opcode.PONG, Opcode.CLOSE]),
    st.binary(max_size=300),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 1, 4]),
    masked=st.sampled_from([True, True, True, False]),
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_give_only_documented_results(data: bytes) -> None:
    check(parse([data]))


@settings(max_examples=400, deadline=None)
@given(st.lists(frames, max_size=12), st.data())
def test_mutated_frames_give_only_documented_results(stream: list[bytes], data: st.DataObject) -> None:
    raw = bytearray(b"".join(stream))
    for _ in range(data.draw(st.integers(0, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    check(parse([bytes(raw)]))


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=10), st.lists(st.integers(1, 50), max_size=30))
def test_splitting_the_bytes_never_changes_their_meaning(stream: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(stream)
    pieces, offset = [], 0
    for cut in cuts:
        pieces.append(raw[offset : offset + cut])
        offset += cut
    pieces.append(raw[offset:])
    assert until_the_end(parse(pieces)) == until_the_end(parse([raw]))


def until_the_end(found: list[Incoming]) -> list[Incoming]:
    """What a stream means up to its first close or fault (after it, only a client's
    close frame is looked for)."""
    for index, item in enumerate(found):
        if isinstance(item, Close | Fault):
            return found[: index + 1]
    return found


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500), st.integers(1, 5))
def test_any_text_in_any_fragments_comes_back_whole(text: str, parts: int) -> None:
    payload = text.encode()
    size = max(1, len(payload) // parts)
    fragments = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    raw = b"".join(
        client_frame(Opcode.TEXT if n == 0 else Opcode.CONTINUATION, fragment, fin=n == len(fragments) - 1)
        for n, fragment in enumerate(fragments)
    )
    if len(payload) <= LIMIT:
        assert parse([raw]) == [Text(text)]
