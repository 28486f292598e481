"""A large body over TCP is read in one piece once the kernel holds all of it
(core/pipe.py, ``_read_whole_body``): the pipe reads the next prefix alone, asks the kernel
(SO_RCVLOWAT) to report the stream readable only once the whole body is queued, takes it
with one recv() and sets the mark back to one byte. The peer is a plain socket, so the test
decides exactly what is queued when."""

from __future__ import annotations

import socket
import struct
import sys

import pytest

import scaproust as sp
from scaproust.core.pipe import WHOLE_MIN
from scaproust.transports import tcp
from scaproust.transports.framing import SCRATCH_KEEP
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_RCVLOWAT holds poll()'s readiness on Linux only")

T = 5.0
PUSH_HEADER = b"\x00SP\x00" + struct.pack(">H", 0x50) + b"\x00\x00"


def body_of(size: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(256)) * (size // 256)


def framed(payload: bytes) -> bytes:
    return struct.pack(">Q", len(payload)) + payload


@pytest.fixture
def wired(session, monkeypatch):
    """A PULL listening on TCP, a plain socket that has exchanged headers with it, and
    the PULL's pipe. Every mark is granted at once: the tests decide what the kernel holds,
    not how large a receive buffer the system lets it grow (transports/tcp.py,
    LOW_WATER_ROOM)."""
    monkeypatch.setattr(tcp, "LOW_WATER_ROOM", 0)
    yield from _wired(session)


@pytest.fixture
def wired_as_shipped(session):
    """``wired``, the transport's rule for large marks as it ships."""
    yield from _wired(session)


def _wired(session):
    pull = session.socket(sp.Pull, recv_timeout=T, recv_max_size=0)
    host, port = pull.bind("tcp://127.0.0.1:0").url[len("tcp://"):].rsplit(":", 1)
    peer = socket.create_connection((host, int(port)), timeout=T)
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer.sendall(PUSH_HEADER)
    assert peer.recv(8, socket.MSG_WAITALL)[:4] == b"\x00SP\x00"
    wait_until(lambda: len(pull._core.pipes) == 1, what="the pipe")
    yield pull, peer, next(iter(pull._core.pipes))
    peer.close()


def low_water(pipe) -> int:
    return pipe.stream.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


def test_after_a_large_body_the_next_ones_are_waited_for_whole_then_reading_is_as_usual(wired):
    pull, peer, pipe = wired
    first = body_of(SCRATCH_KEEP, 1)
    # The first body comes with its prefix in one read: it is read in chunks as they
    # come, never held back (a few bytes at a time here: with many queued, the kernel
    # reports the stream readable before the mark anyway, to relieve its buffer).
    wire = framed(first)
    for start, end in ((0, 5000), (5000, 6000)):
        peer.sendall(wire[start:end])
        wait_until(lambda end=end: pipe._decoder.body_missing == len(wire) - end,
                   what=f"the first {end} bytes read")
        assert low_water(pipe) == 1
    peer.sendall(wire[6000:])
    assert pull.recv() == first

    # The next prefix is read alone, and the body behind it waited for, unread.
    for seed, size in ((2, WHOLE_MIN), (3, SCRATCH_KEEP)):
        body = body_of(size, seed)
        peer.sendall(framed(body)[:1000])
        wait_until(lambda size=size: low_water(pipe) == size, what="the mark at the whole body")
        assert pipe._decoder.body_untouched  # nothing of it taken from the kernel yet
        assert pull.try_recv() is None
        peer.sendall(framed(body)[1000:])
        assert pull.recv() == body
        # No next prefix yet: the mark goes back to one byte (the loop's thread may still
        # be at it when recv() returns).
        wait_until(lambda: low_water(pipe) == 1, what="the mark back at one byte")

    # Small messages behind them are read at once; so is a body too large to wait for.
    beyond = body_of(2 * SCRATCH_KEEP, 4)
    peer.sendall(framed(b"small") + framed(beyond) + framed(b"after"))
    assert [pull.recv() for _ in range(3)] == [b"small", beyond, b"after"]
    assert low_water(pipe) == 1
    assert not pipe._read_whole  # reads no longer stop at each body's start
    assert pull.stats["msgs_received"] == 6


def test_after_a_body_of_the_smallest_size_read_in_part_the_next_is_waited_for_whole(wired):
    # A body of WHOLE_MIN whose first bytes came with its prefix leaves less than
    # WHOLE_MIN to read: the body's whole size, not what is left of it, makes the reads
    # stop at the next body's start, so that the next one can be waited for whole.
    pull, peer, pipe = wired
    first, second = body_of(WHOLE_MIN, 10), body_of(WHOLE_MIN, 11)
    peer.sendall(framed(first)[:5000])
    wait_until(lambda: pipe._decoder.body_missing == WHOLE_MIN - 4992,
               what="the prefix and the body's first bytes read")
    peer.sendall(framed(first)[5000:] + framed(second)[:1000])
    assert pull.recv() == first
    wait_until(lambda: low_water(pipe) == WHOLE_MIN, what="the mark at the next whole body")
    assert pipe._decoder.body_untouched
    peer.sendall(framed(second)[1000:])
    assert pull.recv() == second


@pytest.mark.parametrize("size", [WHOLE_MIN, SCRATCH_KEEP])
@pytest.mark.parametrize("sent", [0, 5000], ids=["prefix only", "part of the body"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_peer_that_goes_while_a_whole_body_is_awaited_closes_the_pipe(wired, caplog, size,
                                                                        sent, how):
    pull, peer, pipe = wired
    big = body_of(SCRATCH_KEEP, 5)
    peer.sendall(framed(big))
    assert pull.recv() == big
    # The mark is set as soon as the prefix is read, before any of the body comes.
    peer.sendall(framed(body_of(size, 6))[:8 + sent])
    wait_until(lambda: low_water(pipe) == size, what="the mark at the whole body")

    with caplog.at_level("DEBUG", logger="scaproust.pipe"):
        if how == "reset":  # an RST instead of a FIN: the read fails rather than ends
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        wait_until(lambda: pull.stats.get("pipes_closed", 0) == 1, what="the pipe closed")

    assert pull.try_recv() is None
    assert pull.stats["msgs_received"] == 1
    said = "failed: [Errno 104] Connection reset by peer" if how == "reset" else \
        "closed the connection"
    assert said in caplog.text


@pytest.mark.parametrize("announced", [1 << 62, (1 << 64) - 1])
def test_a_body_too_large_for_any_buffer_after_a_large_one_is_read_in_chunks(wired, announced):
    # After a large body the pipe reads up to the next body's start: for a body this size
    # (recv_max_size=0 lets its prefix through) that asked recv() for all of it, which
    # raised MemoryError or OverflowError, an internal error that closed the pipe.
    pull, peer, pipe = wired
    large = body_of(2 * WHOLE_MIN, 3)
    peer.sendall(framed(large))
    assert pull.recv() == large
    peer.sendall(struct.pack(">Q", announced) + b"y" * 100_000)
    wait_until(lambda: pipe._decoder is not None and pipe._decoder.body_missing == announced - 100_000,
               what="the pipe to read on")
    assert pipe.state == "active" and "pipe_errors" not in pull.stats


def test_a_fresh_stream_grows_its_receive_buffer_to_wait_for_a_whole_body(wired_as_shipped):
    # The stream's buffer is the system's default, smaller than two bodies: the transport
    # has it grow first (transports/tcp.py, LOW_WATER_GROW), and the first body whose
    # prefix comes alone is waited for whole, with a window that holds more than one body.
    pull, peer, pipe = wired_as_shipped
    stream = pipe.stream
    room = tcp.LOW_WATER_ROOM * SCRATCH_KEEP
    assert stream.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < room
    body = body_of(SCRATCH_KEEP, 9)
    wire = framed(body)
    peer.sendall(wire[:8])
    wait_until(lambda: pipe._decoder.body_missing == SCRATCH_KEEP, what="the prefix read")
    peer.sendall(wire[8:1008])
    wait_until(lambda: low_water(pipe) == SCRATCH_KEEP, what="the mark at the whole body")
    assert stream.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= room
    assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP) >= room
    assert pipe._decoder.body_untouched
    peer.sendall(wire[1008:])
    assert pull.recv() == body


def test_a_body_larger_than_half_the_receive_buffer_is_read_as_it_comes(wired, monkeypatch):
    # The user fixed the buffer's size, so it cannot grow: the mark would make the kernel
    # clamp the receive window to one body; the pipe reads it in chunks (transports/tcp.py).
    monkeypatch.setattr(tcp, "LOW_WATER_ROOM", 2)
    pull, peer, pipe = wired
    pipe.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # fixed: 128 KiB
    bodies = [body_of(SCRATCH_KEEP, 7), body_of(WHOLE_MIN, 8)]
    peer.sendall(framed(bodies[0]))
    assert pull.recv() == bodies[0]

    peer.sendall(framed(bodies[1])[:8])
    wait_until(lambda: pipe._decoder.body_missing == WHOLE_MIN, what="the prefix read")
    assert low_water(pipe) == 1  # declined: the body's bytes are read as they come
    peer.sendall(framed(bodies[1])[8:] + framed(b"after"))
    assert [pull.recv(), pull.recv()] == [bodies[1], b"after"]
    assert low_water(pipe) == 1
