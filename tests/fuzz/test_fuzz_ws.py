"""Hostile bytes against the WebSocket decoder (transports/wscodec.py).

Whatever a peer sends, cut wherever the network cuts it, the decoder either hands over
messages, waits for more, or fails with a ``ProtocolError`` carrying a close code the RFC
defines (1002, 1003 or 1009): never any other exception, which would crash the pipe's
reader instead of closing it. And what our encoder writes, cut anywhere, always decodes to
exactly the messages sent.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.errors import ProtocolError
from scaproust.transports import wscodec as ws


def _cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8),
       masked=st.booleans(), limit=st.sampled_from([0, 16, 200]))
def test_any_bytes_give_messages_or_a_close_code(data, cuts, masked, limit):
    decoder = ws.WsDecoder(masked=masked, max_size=limit)
    try:
        for chunk in _cuts(data, cuts):
            for message in decoder.feed(chunk):
                assert not limit or len(message) <= limit
    except ProtocolError as err:
        assert getattr(err, "code", None) in (1002, 1003, 1009), err


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=3000)),
                         max_size=5),
       masked=st.booleans(), fragment=st.sampled_from([1, 7, 125, 126, 1000, 65536]),
       cuts=st.lists(st.integers(0, 20_000), max_size=10),
       ping=st.binary(max_size=125))
def test_what_we_encode_decodes_to_the_messages_sent(messages, masked, fragment, cuts, ping):
    wire = b"".join(bytes(b) for header, body in messages
                    for b in ws.encode_message([header, body], masked=masked, fragment=fragment)
                    + [ws.encode_control(ws.OP_PING, ping, masked=masked)])
    decoder = ws.WsDecoder(masked=masked, max_size=0)
    got: list[bytes] = []
    for chunk in _cuts(wire, cuts):
        got += decoder.feed(chunk)
    assert got == [header + body for header, body in messages]
    assert all(type(message) is bytes for message in got)  # what a user receives
    assert decoder.pings == [ping] * len(messages)
    assert decoder.pending_bytes == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3 * ws.STRIDED_MIN), key=st.binary(min_size=4, max_size=4),
       kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_masking_is_the_xor_of_the_key_repeated_whichever_way_it_is_done(data, key, kind):
    # Both ways (one big integer below STRIDED_MIN bytes, four byte lanes from it on).
    masked = ws.mask(kind(data), key)
    assert bytes(masked) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
