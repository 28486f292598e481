"""Hostile bytes against the frame decoder and the header check (issue 10, "Fuzzing").

Whatever a peer sends, cut wherever the network cuts it (down to one byte per read), the
decoder hands over exactly the frames a plain reference parser finds, then either waits for
more or fails with the error docs/WIRE.md names for that input ("Framing", "Receive size
limit"): ``OversizeFrame`` for a size over the limit, ``ProtocolError`` for an IPC type byte
other than 1. No other exception, ever: the pipe's reader turns those two into a closed
pipe, anything else would be a crash.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.errors import ProtocolError
from scaproust.transports.framing import (
    FrameDecoder,
    OversizeFrame,
    check_handshake,
    encode_handshake,
    frame_prefix,
)

LIMIT = 64


def reference(data: bytes, ipc: bool, limit: int):
    """The frames in ``data`` and how it ends: None (needs more), 'oversize' or 'type'."""
    frames, pos, prefix = [], 0, 9 if ipc else 8
    while True:
        if ipc and pos < len(data) and data[pos] != 1:
            return frames, "type"
        if len(data) - pos < prefix:
            return frames, None
        size = struct.unpack_from(">Q", data, pos + prefix - 8)[0]
        if limit and size > limit:
            return frames, "oversize"
        if len(data) - pos - prefix < size:
            return frames, None
        frames.append(data[pos + prefix:pos + prefix + size])
        pos += prefix + size


def hostile_streams(ipc: bool):
    """Good frames, frames over the limit, bad type bytes and plain noise, mixed."""
    good = st.binary(max_size=LIMIT).map(lambda p: frame_prefix(len(p), ipc) + p)
    oversize = st.integers(LIMIT + 1, 2**64 - 1).map(
        lambda n: (b"\x01" if ipc else b"") + struct.pack(">Q", n))
    noise = st.binary(min_size=1, max_size=24)
    return st.lists(st.one_of(good, good, oversize, noise), max_size=12).map(b"".join)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=400, deadline=None)
@given(data=st.data(), ipc=st.booleans(),
       cuts=st.lists(st.integers(0, 10_000), max_size=40), bytewise=st.booleans())
def test_any_stream_cut_anywhere_yields_the_reference_frames_then_the_named_error(
        data, ipc, cuts, bytewise):
    stream = data.draw(hostile_streams(ipc))
    chunks = [stream[i:i + 1] for i in range(len(stream))] if bytewise else cut(stream, cuts)
    expected, ending = reference(stream, ipc, LIMIT)
    decoder = FrameDecoder(ipc, LIMIT)
    got, error = [], None
    for chunk in chunks:
        try:
            got += decoder.feed(chunk)
        except OversizeFrame as err:
            got += err.frames
            error = "oversize"
            break
        except ProtocolError as err:
            got += err.frames
            error = "type"
            break
    assert got == expected
    assert error == ending


@settings(max_examples=300, deadline=None)
@given(header=st.binary(min_size=8, max_size=8), peer=st.sampled_from([0x10, 0x31, 0x51]))
def test_any_eight_bytes_are_a_valid_header_or_a_protocol_error(header, peer):
    try:
        check_handshake(header, peer)
    except ProtocolError:
        assert header != encode_handshake(peer)
    else:
        assert header == encode_handshake(peer)
