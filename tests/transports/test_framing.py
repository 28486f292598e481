"""Connection header and frame decoding, in memory (no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.errors import ProtocolError
from scaproust.transports import framing
from scaproust.transports.framing import (
    HANDSHAKE_SIZE,
    IPC_PREFIX_SIZE,
    TCP_PREFIX_SIZE,
    FrameDecoder,
    OversizeFrame,
    check_handshake,
    encode_handshake,
    frame_prefix,
)

REQ, REP = 0x30, 0x31


def encode(payloads: list[bytes], ipc: bool) -> bytes:
    return b"".join(frame_prefix(len(p), ipc) + p for p in payloads)


def feed_bytewise(decoder: FrameDecoder, data: bytes) -> list[bytes]:
    out: list[bytes] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    return out


# --- connection header -------------------------------------------------------------------


def test_encode_handshake_is_magic_id_and_zero_reserved_bytes():
    assert encode_handshake(REQ) == bytes([0x00, 0x53, 0x50, 0x00, 0x00, 0x30, 0x00, 0x00])
    assert encode_handshake(0x1234)[4:6] == b"\x12\x34"
    assert len(encode_handshake(0)) == HANDSHAKE_SIZE


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_encode_handshake_rejects_ids_beyond_16_bits(bad):
    with pytest.raises(ValueError):
        encode_handshake(bad)


def test_check_handshake_accepts_the_valid_peer():
    check_handshake(encode_handshake(REP), REP)


def test_check_handshake_rejects_bad_magic():
    with pytest.raises(ProtocolError, match="magic"):
        check_handshake(b"HTTP/1.1", REP)


def test_check_handshake_names_both_ids_for_the_wrong_peer():
    with pytest.raises(ProtocolError) as info:
        check_handshake(encode_handshake(0x51), REP)
    message = str(info.value)
    assert "0x0051" in message and "0x0031" in message


def test_check_handshake_rejects_non_zero_reserved_bytes():
    with pytest.raises(ProtocolError, match="reserved"):
        check_handshake(b"\x00SP\x00\x00\x31\x00\x01", REP)


def test_check_handshake_wants_exactly_eight_bytes():
    with pytest.raises(ValueError):
        check_handshake(encode_handshake(REP)[:7], REP)


# --- frame prefix -------------------------------------------------------------------------


def test_frame_prefix_tcp_is_a_u64_size():
    assert frame_prefix(5, ipc=False) == b"\x00\x00\x00\x00\x00\x00\x00\x05"
    assert len(frame_prefix(0, ipc=False)) == TCP_PREFIX_SIZE


def test_frame_prefix_ipc_is_type_one_then_u64_size():
    assert frame_prefix(0x0102, ipc=True) == b"\x01\x00\x00\x00\x00\x00\x00\x01\x02"
    assert len(frame_prefix(0, ipc=True)) == IPC_PREFIX_SIZE


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_frame_prefix_rejects_sizes_outside_u64(bad):
    with pytest.raises(ValueError):
        frame_prefix(bad, ipc=False)


# --- decoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_returns_one_whole_frame(ipc):
    assert FrameDecoder(ipc, 0).feed(encode([b"hello"], ipc)) == [b"hello"]


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_handles_frames_arriving_one_byte_at_a_time(ipc):
    payloads = [b"a", b"", b"hello world", bytes(300)]
    decoder = FrameDecoder(ipc, 1 << 20)
    assert feed_bytewise(decoder, encode(payloads, ipc)) == payloads
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_returns_many_frames_from_one_chunk_in_order(ipc):
    payloads = [i.to_bytes(4, "big") * (i % 7) for i in range(1000)]
    assert FrameDecoder(ipc, 0).feed(encode(payloads, ipc)) == payloads


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_accepts_zero_length_frames(ipc):
    decoder = FrameDecoder(ipc, 10)
    assert decoder.feed(encode([b"", b"", b"x", b""], ipc)) == [b"", b"", b"x", b""]
    assert decoder.feed(frame_prefix(0, ipc)) == [b""]
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_keeps_a_partial_frame_until_it_completes(ipc):
    data = encode([b"first", b"second"], ipc)
    cut = len(data) - 3
    decoder = FrameDecoder(ipc, 0)
    assert decoder.feed(data[:cut]) == [b"first"]
    assert decoder.pending_bytes == len(b"second") - 3
    assert decoder.feed(data[cut:]) == [b"second"]
    assert decoder.pending_bytes == 0


def test_decoder_counts_a_partial_prefix_as_pending():
    decoder = FrameDecoder(False, 0)
    assert decoder.feed(frame_prefix(4, False)[:5]) == []
    assert decoder.pending_bytes == 5


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_reassembles_a_1_mib_frame_from_4_kib_chunks(ipc):
    body = bytes(range(256)) * 4096  # 1 MiB
    data = encode([body, b"tail"], ipc)
    decoder = FrameDecoder(ipc, 1 << 20)
    out: list[bytes] = []
    for i in range(0, len(data), 4096):
        out += decoder.feed(data[i : i + 4096])
        if not out:
            assert decoder.pending_bytes == i + min(4096, len(data) - i) - len(
                frame_prefix(0, ipc)
            )
    assert out == [body, b"tail"]
    assert decoder.pending_bytes == 0


def test_decoder_accepts_bytearray_and_memoryview_chunks_and_copies_them():
    data = bytearray(encode([b"abc", b"defg"], False))
    decoder = FrameDecoder(False, 0)
    first = decoder.feed(memoryview(data)[:13])  # prefix + "abc" + 2 bytes of the next prefix
    data[:] = bytes(len(data))  # the caller reuses its buffer (recv_into)
    assert first == [b"abc"]
    rest = encode([b"abc", b"defg"], False)[13:]
    assert decoder.feed(bytearray(rest)) == [b"defg"]
    assert all(type(p) is bytes for p in first)


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_rejects_an_oversize_frame_from_its_size_field_alone(ipc):
    decoder = FrameDecoder(ipc, 1024)
    with pytest.raises(OversizeFrame) as info:
        decoder.feed(frame_prefix(1025, ipc))  # no body byte sent
    assert (info.value.size, info.value.limit) == (1025, 1024)
    assert isinstance(info.value, ProtocolError)
    assert "1025" in str(info.value) and "1024" in str(info.value)


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_rejects_an_oversize_frame_as_the_last_size_byte_arrives(ipc):
    decoder = FrameDecoder(ipc, 1024)
    prefix = frame_prefix(1 << 40, ipc)
    assert feed_bytewise(decoder, prefix[:-1]) == []
    with pytest.raises(OversizeFrame):
        decoder.feed(prefix[-1:])


def test_decoder_rejects_an_oversize_frame_after_good_ones_in_the_same_chunk():
    decoder = FrameDecoder(False, 4)
    with pytest.raises(OversizeFrame):
        decoder.feed(encode([b"1234"], False) + frame_prefix(5, False))


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_decoder_rejects_a_chunk_of_exactly_one_whole_frame_over_the_limit(ipc):
    # The one-whole-frame shortcut of feed() hands over only what the loop would accept.
    decoder = FrameDecoder(ipc, 4)
    with pytest.raises(OversizeFrame):
        decoder.feed(encode([b"12345"], ipc))


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
@pytest.mark.parametrize("prealloc", [True, False], ids=["prealloc", "parts"])
def test_a_chunk_that_looks_like_one_whole_frame_is_the_rest_of_a_pending_one(
        ipc, prealloc, monkeypatch):
    # The one-whole-frame shortcut of feed() applies at a frame boundary only: here the
    # chunk is the body of the frame whose prefix came before, framed bytes though it is
    # (a body pending in a preallocated buffer, or as parts when it is too large for one).
    if not prealloc:
        monkeypatch.setattr(framing, "PREALLOC_MAX", 0)
    decoder = FrameDecoder(ipc, 0)
    body = encode([b"x"], ipc)
    assert decoder.feed(frame_prefix(len(body), ipc)) == []
    assert decoder.feed(body) == [body]
    assert decoder.feed(body) == [b"x"]  # now at a boundary: a frame of its own
    assert decoder.feed(body[:2]) == []  # a partial prefix pending
    assert decoder.feed(body[2:] + body) == [b"x", b"x"]


def test_a_chunk_that_looks_like_one_whole_frame_completes_a_pending_prefix():
    # The stream: a 256-byte frame whose prefix is cut after 7 bytes. The rest (the
    # prefix's last byte, 0, then the body) reads as a frame of 249 bytes on its own.
    body = bytes(6) + bytes([249]) + b"y" * 249
    frame = frame_prefix(len(body), False) + body
    decoder = FrameDecoder(False, 0)
    assert decoder.feed(frame[:7]) == []
    assert decoder.feed(frame[7:]) == [body]


def test_decoder_accepts_a_frame_exactly_at_the_limit():
    assert FrameDecoder(False, 4).feed(encode([b"1234"], False)) == [b"1234"]


def test_decoder_with_limit_zero_is_unlimited():
    decoder = FrameDecoder(False, 0)
    assert decoder.feed(frame_prefix(1 << 40, False)) == []
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize("chunk", [b"\x02", b"\x00" * 9, b"\xff" + bytes(8) + b"x"])
def test_decoder_rejects_a_bad_ipc_type_byte_at_once(chunk):
    with pytest.raises(ProtocolError, match="type byte"):
        FrameDecoder(True, 0).feed(chunk)


def test_decoder_rejects_a_bad_ipc_type_byte_after_a_good_frame():
    decoder = FrameDecoder(True, 0)
    assert decoder.feed(encode([b"ok"], True)) == [b"ok"]
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00" + struct.pack(">Q", 2) + b"no")


def test_decoder_stays_failed_after_an_error():
    decoder = FrameDecoder(True, 0)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x07")
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(encode([b"ok"], True))


def test_decoder_rejects_a_negative_limit():
    with pytest.raises(ValueError):
        FrameDecoder(False, -1)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    ipc=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_decoder_returns_the_same_payloads_however_the_stream_is_cut(payloads, ipc, cuts):
    data = encode(payloads, ipc)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder = FrameDecoder(ipc, 300)
    out: list[bytes] = []
    for start, stop in zip(points, points[1:], strict=False):
        out += decoder.feed(data[start:stop])
    assert out == payloads
    assert decoder.pending_bytes == 0


# --- runs of frames of one size: checked and cut as a whole ------------------------------


def numbered(count: int, size: int, first: int = 0) -> list[bytes]:
    """``count`` payloads of ``size`` bytes, each different (so is their order)."""
    return [((first + n) % 256).to_bytes(1, "big") * size for n in range(count)]


@pytest.fixture
def small_chunks_run(monkeypatch):
    """Chunks of any size are checked for runs (the tests' chunks are small)."""
    monkeypatch.setattr(framing, "RUN_CHUNK_MIN", 0)


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_a_chunk_of_frames_of_one_size_is_taken_as_a_run_then_the_loop_takes_the_rest(
        ipc, small_chunks_run):
    run = numbered(framing.RUN_MIN + 4, 64)
    rest = [b"longer" * 20, b"", b"x"]
    data = encode(run + rest, ipc)
    out: list[bytes] = []
    assert FrameDecoder(ipc, 1024)._take_run(data, 0, out) == len(encode(run, ipc))
    assert out == run
    decoder = FrameDecoder(ipc, 1024)
    assert decoder.feed(data + frame_prefix(10, ipc) + b"part") == run + rest
    assert decoder.pending_bytes == 4
    assert decoder.feed(b"ial...") == [b"partial..."]


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
@pytest.mark.parametrize(("odd", "other"), [(0, 65), (framing.RUN_MIN - 1, 64 + 256),
                                            (framing.RUN_MIN + 2, 65), (40, 64 + 256)])
def test_a_run_ends_at_the_first_frame_of_another_size(ipc, odd, other, small_chunks_run):
    # ``other`` differs from 64 in the size's low byte, or only in the one above it.
    payloads = numbered(48, 64)
    payloads[odd] = b"z" * other
    data = encode(payloads, ipc)
    out: list[bytes] = []
    taken = FrameDecoder(ipc, 1024)._take_run(data, 0, out)
    expected = odd if odd >= framing.RUN_MIN else 0
    assert (taken, out) == (len(encode(payloads[:expected], ipc)), payloads[:expected])
    assert FrameDecoder(ipc, 1024).feed(data) == payloads


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_fewer_frames_than_run_min_go_through_the_loop(ipc, small_chunks_run):
    payloads = numbered(framing.RUN_MIN - 1, 64)
    data = encode(payloads, ipc)
    assert FrameDecoder(ipc, 1024)._take_run(data, 0, []) == 0
    assert FrameDecoder(ipc, 1024).feed(data) == payloads


def test_a_bad_ipc_type_byte_inside_a_run_fails_after_the_frames_before_it(small_chunks_run):
    payloads = numbered(framing.RUN_MIN * 2, 64)
    data = bytearray(encode(payloads, True))
    data[20 * (IPC_PREFIX_SIZE + 64)] = 0x02
    with pytest.raises(ProtocolError, match="IPC message type") as info:
        FrameDecoder(True, 1024).feed(bytes(data))
    assert info.value.frames == payloads[:20]


@pytest.mark.parametrize("ipc", [False, True], ids=["tcp", "ipc"])
def test_a_run_of_frames_over_the_limit_fails_as_the_loop_does(ipc, small_chunks_run):
    data = encode(numbered(framing.RUN_MIN * 2, 64), ipc)
    with pytest.raises(OversizeFrame) as info:
        FrameDecoder(ipc, 63).feed(data)
    assert (info.value.size, info.value.limit, info.value.frames) == (64, 63, [])


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.sampled_from([0, 1, 8, 64, 255, 256]),
                            st.integers(min_value=1, max_value=3 * framing.RUN_MIN)),
                  max_size=5),
    ipc=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=6),
)
def test_runs_of_frames_of_one_size_come_out_the_same_however_the_stream_is_cut(runs, ipc,
                                                                                cuts):
    payloads = [p for n, (size, count) in enumerate(runs) for p in numbered(count, size, n * 50)]
    data = encode(payloads, ipc)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder = FrameDecoder(ipc, 300)
    out: list[bytes] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(framing, "RUN_CHUNK_MIN", 0)
        for start, stop in zip(points, points[1:], strict=False):
            out += decoder.feed(data[start:stop])
    assert out == payloads
    assert decoder.pending_bytes == 0


# --- preallocated bodies: received straight into their buffer ----------------------------


def test_an_incomplete_body_offers_its_missing_part_and_completes_with_body_filled():
    body = bytes(range(256)) * 400  # 102,400 bytes
    wire = struct.pack(">Q", len(body)) + body + struct.pack(">Q", 2) + b"ok"
    d = FrameDecoder(ipc=False, max_size=0)
    assert d.feed(wire[:1000]) == []
    view = d.pending_body()
    assert len(view) == len(body) - (1000 - 8) and d.pending_bytes == 1000 - 8
    assert d.body_size == len(body)  # the whole body's, not what is missing of it
    view[:] = wire[1000:8 + len(body)]  # what recv_into would do
    assert d.body_filled(len(view)) == [body]
    assert d.pending_body() is None and d.pending_bytes == 0 and d.body_size == 0
    assert d.feed(wire[8 + len(body):]) == [b"ok"]


def test_a_preallocated_body_can_also_be_fed_in_chunks_with_the_frames_behind_it():
    body = b"z" * 5000
    wire = struct.pack(">Q", len(body)) + body + struct.pack(">Q", 1) + b"!"
    d = FrameDecoder(ipc=False, max_size=0)
    got = []
    for i in range(0, len(wire), 777):
        got += d.feed(wire[i:i + 777])
    assert got == [body, b"!"]


def test_an_untouched_body_received_whole_is_handed_over_as_the_very_bytes_received():
    body = bytes(range(256)) * 1024  # 256 KiB
    d = FrameDecoder(ipc=False, max_size=0)
    assert not d.body_untouched and d.body_size == 0
    assert d.feed(struct.pack(">Q", len(body))) == []  # the prefix alone
    assert d.body_untouched and d.body_missing == len(body) == len(d.pending_body())
    received = bytes(body)  # what one recv(len(body)) returns
    [whole] = d.body_received(received)
    assert whole is received  # no copy
    assert not d.body_untouched and d.body_missing == 0 and d.pending_body() is None
    assert d.pending_bytes == 0
    assert d.feed(struct.pack(">Q", 2) + b"ok") == [b"ok"]


@pytest.mark.parametrize("ipc", [False, True])
def test_to_next_body_counts_the_rest_of_the_body_and_of_the_next_prefix(ipc):
    psize = 9 if ipc else 8
    d = FrameDecoder(ipc=ipc, max_size=0)
    assert d.to_next_body == psize  # between frames: a whole prefix
    wire = frame_prefix(300_000, ipc) + b"a" * 1000
    d.feed(wire[:3])
    assert d.to_next_body == psize - 3  # the rest of the prefix
    d.feed(wire[3:])
    assert d.to_next_body == 299_000 + psize  # the rest of the body, then a prefix
    view = d.pending_body()
    view[:] = b"b" * len(view)
    d.body_filled(len(view))
    assert d.to_next_body == psize


def test_a_part_of_a_body_received_is_copied_into_its_buffer_and_the_rest_filled():
    body = bytes(range(256)) * 1024
    d = FrameDecoder(ipc=False, max_size=0)
    d.feed(struct.pack(">Q", len(body)))
    assert d.body_received(body[:1000]) == []  # the peer's EOF cut it short, say
    assert not d.body_untouched and d.body_missing == len(body) - 1000
    assert d.body_received(body[1000:5000]) == []  # a part after a part: copied too
    view = d.pending_body()
    view[:] = body[5000:]
    assert d.body_filled(len(view)) == [body]
    # A body of which a part came with its prefix is not untouched: it is read in chunks.
    d.feed(struct.pack(">Q", len(body)) + body[:10])
    assert not d.body_untouched and d.body_missing == len(body) - 10


def test_a_body_over_prealloc_max_is_kept_as_the_chunks_that_arrived(monkeypatch):
    monkeypatch.setattr(framing, "PREALLOC_MAX", 1000)
    body = b"q" * 3000
    wire = struct.pack(">Q", len(body)) + body
    d = FrameDecoder(ipc=False, max_size=0)
    assert d.feed(wire[:100]) == []
    assert d.pending_body() is None and d.pending_bytes == 92  # only what was sent is held
    assert d.feed(wire[100:]) == [body]


@pytest.mark.parametrize("ipc", [False, True])
@pytest.mark.parametrize("size", [0, 1, 255, 256, 65536, 2**32, 2**63])
def test_a_pipes_prefixer_writes_the_prefix_frame_prefix_does(ipc, size):
    assert framing.prefixer(ipc)(size) == frame_prefix(size, ipc)
