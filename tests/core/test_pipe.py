"""The pipe machine (protocols.yaml, machine ``pipe``; scaproust/core/pipe.py), driven with a
fake loop, a scripted stream, and fake socket, owner and transport: no sockets, no threads,
no sleeps. Readiness is fired by hand (``loop.fire_reader``/``fire_writer``), deferred work
runs with ``loop.run_ready()``, time moves with ``loop.advance()``.

Wire facts checked here are in WIRE.md: the 8-byte header ``00 53 50 00 | id u16 BE | 00 00``
may arrive one byte at a time; TCP frames are ``size u64 BE | payload`` and IPC frames
``01 | size u64 BE | payload``; an oversize frame closes that pipe, loudly.
"""

from __future__ import annotations

import errno
import logging
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from protocols.fakes import (
    FakeLoop,
    FakeLowWaterTransport,
    FakeOwner,
    FakeSocket,
    FakeStream,
    FakeTransport,
)

from scaproust import protocols
from scaproust.core.guard import crash
from scaproust.core.options import Options
from scaproust.core.pipe import HIGH_WATER, JOIN_MAX, JOIN_WRITE_AVG, Pipe, Publication

PUSH_HEADER = bytes.fromhex("0053500000500000")
PULL_HEADER = bytes.fromhex("0053500000510000")  # what a PUSH pipe expects from its peer
SUB_HEADER = bytes.fromhex("0053500000210000")  # and a PUB pipe


def tcp_frame(payload: bytes) -> bytes:
    return struct.pack(">Q", len(payload)) + payload


def ipc_frame(payload: bytes) -> bytes:
    return b"\x01" + struct.pack(">Q", len(payload)) + payload


class Harness:
    """A PUSH socket's pipe and every double around it."""

    def __init__(self, *, ipc=False, dialed=False, connect_error=0, connect_errno=0,
                 stream=True, info=protocols.Push, transport=None, **options):
        self.loop = FakeLoop()
        self.stream = FakeStream() if stream else None
        self.transport = transport or FakeTransport(ipc=ipc, connect_errno=connect_errno)
        self.socket = FakeSocket(info, Options(**options))
        self.owner = FakeOwner()
        self.pipe = Pipe(loop=self.loop, stream=self.stream, transport=self.transport,
                         socket=self.socket, owner=self.owner, dialed=dialed,
                         connect_error=connect_error, peer_addr="tcp://127.0.0.1:5555")

    @property
    def proto(self):
        return self.socket.proto

    @property
    def stats(self):
        return self.socket.stats

    def frame(self, payload: bytes) -> bytes:
        return ipc_frame(payload) if self.transport.IPC_FRAMING else tcp_frame(payload)

    def receive(self, *chunks: bytes) -> None:
        """The peer sent ``chunks``: each is read by one readable event."""
        for chunk in chunks:
            self.stream.feed(chunk)
            self.loop.fire_reader(self.stream)

    def open_active(self, peer_header: bytes = PULL_HEADER) -> Harness:
        """Open, exchange headers, run what was deferred, then forget what was written."""
        self.pipe.cmd_open()
        self.loop.run_ready()
        self.receive(peer_header)
        self.loop.run_ready()
        assert self.pipe.state == "active"
        self.stream.written.clear()
        self.stream.sendmsg_calls.clear()
        self.stream.send_calls = 0
        self.proto.calls.clear()
        return self

    def drain_writes(self, limit: int = 1000) -> int:
        """Fire the writer until it unregisters; return how many times it fired."""
        fired = 0
        while self.stream in self.loop.writers:
            assert fired < limit, "the writer never unregistered"
            self.loop.fire_writer(self.stream)
            fired += 1
        return fired


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scaproust.pipe" and r.levelno == logging.WARNING]


def closing(h: Harness) -> Harness:
    """An active pipe closed with output it cannot write yet: it lingers in ``closing``."""
    h.open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "closing"
    return h


# ---------------------------------------------------------------- identity


def test_every_pipe_gets_its_own_id_of_at_most_31_bits():
    ids = [Harness().pipe.id for _ in range(3)]

    assert len(set(ids)) == 3
    assert all(0 < pipe_id < 2**31 for pipe_id in ids)


# ---------------------------------------------------------------- header exchange


def test_an_accepted_push_pipe_sends_exactly_the_eight_header_bytes():
    h = Harness()

    h.pipe.cmd_open()
    assert h.pipe.state == "handshaking"
    assert h.stream.written == b""  # written once the loop has run this batch

    h.loop.run_ready()

    assert bytes(h.stream.written) == bytes.fromhex("00 53 50 00 00 50 00 00")
    assert len(h.stream.sendmsg_calls) == 1
    assert h.stream in h.loop.readers
    assert h.stream not in h.loop.writers


def test_a_peer_header_arriving_one_byte_at_a_time_completes_the_handshake():
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()

    for i in range(7):
        h.receive(PULL_HEADER[i:i + 1])
        assert h.pipe.state == "handshaking"
    h.receive(PULL_HEADER[7:])

    assert h.pipe.state == "active"
    assert h.socket.opened == [h.pipe]
    assert h.proto.calls == [("evt_pipe_added", h.pipe)]
    assert h.owner.opened == []  # the owner hears of it from the loop
    h.loop.run_ready()
    assert h.owner.opened == [h.pipe]


def test_a_completed_handshake_cancels_its_timer():
    h = Harness(handshake_timeout=2.0).open_active()

    assert h.loop.pending_timers() == []
    h.loop.advance(60)
    assert h.pipe.state == "active"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (bytes.fromhex("0053500000500000"), "0x0050"),  # PUSH to PUSH: wrong peer protocol
        (bytes.fromhex("0053510000510000"), "magic"),  # bad magic
        (bytes.fromhex("0053500000510001"), "reserved"),  # non-zero reserved bytes
    ],
    ids=["wrong-peer-protocol", "bad-magic", "non-zero-reserved"],
)
def test_a_bad_peer_header_kills_the_pipe_loudly_before_the_protocol_sees_it(
    caplog, header, reason
):
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.receive(header)

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stream not in h.loop.readers
    assert h.loop.pending_timers() == []
    assert h.proto.calls == []
    assert h.socket.opened == []
    assert h.stats["dropped_malformed"] == 1
    (message,) = warnings_of(caplog)
    assert reason in message
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]
    assert h.socket.closed == []  # never attached, so nothing to detach


def test_frames_right_behind_a_bad_peer_header_in_the_same_chunk_die_with_the_pipe(caplog):
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()

    with caplog.at_level(logging.WARNING):
        h.receive(SUB_HEADER + tcp_frame(b"hi") + tcp_frame(b"there"))

    assert h.pipe.state == "dead"
    assert h.proto.calls == []
    assert h.stats.snapshot() == {"dropped_malformed": 1}
    # One warning for the header, and no internal error: the frames are never decoded.
    assert [(r.name, r.levelno) for r in caplog.records] == [("scaproust.pipe", logging.WARNING)]
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


def test_a_peer_that_sends_no_header_in_time_kills_the_pipe(caplog):
    h = Harness(handshake_timeout=2.0)
    h.pipe.cmd_open()
    h.loop.run_ready()
    h.receive(PULL_HEADER[:5])

    h.loop.advance(1.999)
    assert h.pipe.state == "handshaking"

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.loop.advance(0.001)

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.proto.calls == []
    (message,) = warnings_of(caplog)
    assert "handshake_timeout=2.0" in message
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


def test_the_peer_closing_during_the_handshake_kills_the_pipe():
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()

    h.stream.feed_eof()
    h.loop.fire_reader(h.stream)

    assert h.pipe.state == "dead"
    assert h.loop.pending_timers() == []
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


# ---------------------------------------------------------------- receiving


def test_frames_right_behind_the_header_in_the_same_chunk_are_delivered():
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()

    h.receive(PULL_HEADER + tcp_frame(b"hi") + tcp_frame(b"there"))

    assert h.pipe.state == "active"
    assert h.proto.calls == [
        ("evt_pipe_added", h.pipe),
        ("evt_pipe_recv", h.pipe, [b"hi", b"there"]),
    ]


def test_many_frames_in_one_chunk_make_one_recv_event_with_all_of_them_in_order():
    h = Harness().open_active()
    payloads = [b"m%d" % n for n in range(100)] + [b""]

    h.receive(b"".join(tcp_frame(p) for p in payloads))

    assert h.proto.calls == [("evt_pipe_recv", h.pipe, payloads)]


def test_reads_ask_for_64_kib_and_double_while_they_come_back_full_then_shrink_again():
    # recv(n) allocates n bytes first: small requests while the peer sends little (no mmap
    # per read), large ones while it streams (one readiness event parses many frames).
    h = Harness().open_active()
    # 3,584 frames of 128 bytes: exactly 64 + 128 + 256 KiB, so three reads come back full.
    frames = [tcp_frame(b"%05d" % i + b"x" * 115) for i in range(3584)]
    h.stream.feed(b"".join(frames))
    h.stream.recv_sizes.clear()
    for _ in range(4):  # three full reads, then one that finds nothing
        h.loop.fire_reader(h.stream)
    h.receive(tcp_frame(b"alone"))  # short: the next read is small again
    h.receive(tcp_frame(b"next"))

    assert [n // 1024 for n in h.stream.recv_sizes] == [64, 128, 256, 256, 256, 64]
    assert h.stream.recv_into_sizes == []  # split small bodies come with the next chunk
    got = [m for call in h.proto.calls for m in call[2]]
    assert got == [f[8:] for f in frames] + [b"alone", b"next"]


def test_the_rest_of_a_large_body_is_received_straight_into_its_buffer():
    h = Harness().open_active()
    body = b"x" * (700 * 1024)
    h.stream.feed(tcp_frame(body) + tcp_frame(b"small"))
    h.stream.recv_sizes.clear()
    for _ in range(3):
        h.loop.fire_reader(h.stream)

    # One 64 KiB read brings the prefix and the body's start; the rest goes straight into
    # the body's buffer, exactly up to its end; the frame behind it comes with a chunk, of
    # 64 KiB again: another large body would start there, and little of it is copied.
    assert [n // 1024 for n in h.stream.recv_sizes] == [64, 64]
    assert h.stream.recv_into_sizes == [len(body) - (64 * 1024 - 8)]
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [body]),
                             ("evt_pipe_recv", h.pipe, [b"small"])]


def test_a_read_of_exactly_64_kib_keeps_a_larger_request_and_a_shorter_one_shrinks_it():
    h = Harness().open_active()
    data = tcp_frame(b"y" * (128 * 1024 - 3))  # 128 KiB + 5 bytes on the wire
    h.stream.recv_sizes.clear()

    kib64 = 64 * 1024
    h.receive(data[:kib64], data[kib64:2 * kib64], data[2 * kib64:], tcp_frame(b"next"))

    # 64 KiB came back full, but the body's rest went straight into its buffer: the next
    # chunk read asks 64 KiB, where another large body would start; the 5-byte read was
    # short, so 64 KiB again.
    assert [n // 1024 for n in h.stream.recv_sizes] == [64, 64, 64]
    assert h.stream.recv_into_sizes == [len(data) - kib64]
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [data[8:]]), ("evt_pipe_recv", h.pipe, [b"next"])]


# ---------------------------------------------------------------- large bodies read whole

KIB = 1024


def read_all(h: Harness, limit: int = 50) -> None:
    """Fire the reader until the scripted stream is empty (it returns one fed chunk per
    recv, where a kernel would join them)."""
    for _ in range(limit):
        if not h.stream._chunks or h.pipe.state == "dead":
            return
        h.loop.fire_reader(h.stream)
    raise AssertionError("the stream was never emptied")


def whole_reads(**transport_options) -> Harness:
    """A pipe over a transport that can hold readiness until a whole body is queued, after
    a first large body (read in chunks: its start came with its prefix)."""
    h = Harness(transport=FakeLowWaterTransport(**transport_options),
                recv_max_size=0).open_active()
    first = tcp_frame(b"F" * (700 * KIB))
    h.receive(first[:64 * KIB], first[64 * KIB:])
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [first[8:]])]
    h.proto.calls.clear()
    h.stream.recv_sizes.clear()
    h.stream.recv_into_sizes.clear()
    return h


def test_after_a_large_body_a_read_stops_at_the_next_prefix_and_the_body_is_awaited_whole():
    h = whole_reads()
    body = bytes(range(256)) * (512 * KIB // 256)
    h.stream.feed(tcp_frame(body)[:8])
    h.loop.fire_reader(h.stream)

    assert h.stream.recv_sizes == [8]  # the prefix alone
    assert h.transport.marks == [len(body)]  # readable once all of it is queued
    assert h.proto.calls == []
    h.stream.feed(tcp_frame(body)[8:])  # what the kernel holds when it reports it
    h.loop.fire_reader(h.stream)

    # One recv() of the whole body, handed over as it came (no copy, no recv_into); then
    # the next prefix is looked for at once: none yet, so the mark goes back to one byte.
    assert h.stream.recv_sizes == [8, len(body), 8]
    assert h.stream.recv_into_sizes == []
    [(event, pipe, [got])] = h.proto.calls
    assert got == body and h.transport.marks == [len(body), 1]


def test_a_stream_of_equal_large_bodies_sets_the_mark_once():
    h = whole_reads()
    bodies = [bytes([i]) * (256 * KIB) for i in range(4)]
    h.stream.feed(tcp_frame(bodies[0])[:8])
    h.loop.fire_reader(h.stream)  # the first prefix: the mark is set
    for i, body in enumerate(bodies):
        rest = tcp_frame(body)[8:] + (tcp_frame(bodies[i + 1])[:8] if i < 3 else b"")
        h.stream.feed(rest)
        h.loop.fire_reader(h.stream)

    assert [call[2] for call in h.proto.calls] == [[b] for b in bodies]
    # Each body in one recv, each next prefix read right behind it; the mark stays.
    assert h.stream.recv_sizes == [8] + [256 * KIB, 8] * 4
    assert h.transport.marks == [256 * KIB, 1]


def test_a_next_body_of_another_size_moves_the_mark_and_a_small_one_drops_it():
    h = whole_reads()
    big, other = b"b" * (256 * KIB), b"o" * (300 * KIB)
    h.receive(tcp_frame(big)[:8], tcp_frame(big)[8:] + tcp_frame(other)[:8])
    assert h.transport.marks == [len(big), len(other)]
    h.stream.feed(tcp_frame(other)[8:] + tcp_frame(b"small"), tcp_frame(b"more"))
    read_all(h)

    assert [call[2] for call in h.proto.calls] == [[big], [other], [b"small"], [b"more"]]
    assert h.transport.marks == [len(big), len(other), 1]
    assert h.stream.recv_sizes[-1] == 64 * KIB  # chunks again after the small body
    assert not h.pipe._read_whole


@pytest.mark.parametrize(("size", "whole"), [(256 * KIB - 1, False), (256 * KIB, True),
                                             (1024 * KIB, True), (1024 * KIB + 1, False)])
def test_only_bodies_from_256_kib_to_1_mib_are_awaited_whole(size, whole):
    h = whole_reads()
    body = b"s" * size
    h.receive(tcp_frame(body)[:8], tcp_frame(body)[8:])

    assert h.transport.marks == ([size, 1] if whole else [])
    assert [call[2] for call in h.proto.calls] == [[body]]
    assert (h.stream.recv_into_sizes == []) is whole  # else straight into its buffer


def test_a_large_prefix_that_ends_an_ordinary_chunk_is_awaited_whole_too():
    h = whole_reads()
    h.stream.feed(tcp_frame(b"small"))
    read_all(h)  # ordinary reads again
    body = b"e" * (300 * KIB)
    h.stream.feed(tcp_frame(b"tiny") + tcp_frame(body)[:8])  # a chunk ending at the prefix
    read_all(h)
    assert h.transport.marks == []  # not looked at before the next readable event
    h.receive(tcp_frame(body)[8:])  # that event sets the mark, and reads nothing
    assert h.transport.marks == [len(body)] and h.pipe._decoder.body_untouched
    h.loop.fire_reader(h.stream)  # the kernel holds it all: one recv

    assert [call[2] for call in h.proto.calls] == [[b"small"], [b"tiny"], [body]]
    assert h.stream.recv_into_sizes == [] and h.transport.marks == [len(body), 1]


def test_a_pipe_paused_by_the_body_it_delivered_reads_nothing_more_until_resumed():
    h = whole_reads()
    body = b"p" * (256 * KIB)
    deliver = h.pipe.evt_msgs

    def deliver_then_pause(msgs):
        deliver(msgs)
        h.pipe.stop_reading()  # that body filled the user's receive queue

    h.pipe.evt_msgs = deliver_then_pause
    h.receive(tcp_frame(body)[:8])
    h.stream.feed(tcp_frame(body)[8:], tcp_frame(b"next"))
    h.loop.fire_reader(h.stream)

    assert [call[2] for call in h.proto.calls] == [[body]]
    assert h.stream.recv_sizes == [8, len(body)]  # nothing read behind it while paused
    assert h.transport.marks == [len(body), 1]
    h.pipe.evt_msgs = deliver
    h.pipe.start_reading()
    read_all(h)
    assert [call[2] for call in h.proto.calls] == [[body], [b"next"]]


def test_a_body_cut_short_is_kept_and_the_rest_read_in_chunks():
    # The kernel reports the stream readable before the mark at the peer's EOF, or when it
    # runs short of buffer: the part read is kept, the mark dropped, the rest read.
    h = whole_reads()
    body = bytes(range(256)) * (512 * KIB // 256)
    h.receive(tcp_frame(body)[:8], tcp_frame(body)[8:5000])
    assert h.transport.marks == [len(body), 1]
    assert h.proto.calls == []
    h.stream.feed(tcp_frame(body)[5000:] + tcp_frame(b"next"))
    read_all(h)

    assert [call[2] for call in h.proto.calls] == [[body], [b"next"]]
    assert h.stream.recv_into_sizes == [len(body) - 4992]


@pytest.mark.parametrize("end", ["eof", "reset"])
def test_a_peer_gone_while_a_body_is_awaited_whole_closes_the_pipe(end, caplog):
    h = whole_reads()
    h.receive(tcp_frame(b"x" * (256 * KIB))[:8])
    if end == "eof":
        h.stream.feed_eof()
    else:
        h.stream.fail_recv(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
    h.loop.fire_reader(h.stream)
    h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert not [call for call in h.proto.calls if call[0] == "evt_pipe_recv"]
    assert no_errors_logged(caplog)  # nothing more read from the dead pipe


def no_errors_logged(caplog) -> bool:
    """No ERROR record: a read tried on a pipe that died meanwhile would log one (its
    crash, refused by the dead pipe's table)."""
    return not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_readable_event_before_the_awaited_body_is_there_reads_nothing_more():
    h = whole_reads()
    body = b"w" * (256 * KIB)
    h.receive(tcp_frame(body)[:8])  # the prefix; the mark set
    h.loop.fire_reader(h.stream)  # reported early, nothing queued: its recv() would block

    assert h.stream.recv_sizes == [8, len(body)] and h.stream.recv_into_sizes == []
    h.receive(tcp_frame(body)[8:])
    assert [call[2] for call in h.proto.calls] == [[body]]
    assert h.stream.recv_into_sizes == []


def test_a_pipe_that_dies_delivering_a_whole_body_reads_no_more(caplog):
    h = whole_reads()
    body = b"d" * (256 * KIB)
    deliver = h.pipe.evt_msgs

    def deliver_then_fail(msgs):
        deliver(msgs)
        h.pipe.evt_io_error(OSError(errno.EPIPE, "Broken pipe"))

    h.pipe.evt_msgs = deliver_then_fail
    h.receive(tcp_frame(body)[:8])
    h.stream.feed(tcp_frame(body)[8:], tcp_frame(b"next"))
    h.loop.fire_reader(h.stream)
    h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert [call[2] for call in h.proto.calls if call[0] == "evt_pipe_recv"] == [[body]]
    assert no_errors_logged(caplog)


def test_a_mark_declined_for_now_reads_that_body_in_chunks_and_the_next_asks_again():
    # The transport declines a large mark while the receive buffer is too small for it
    # (transports/tcp.py, LOW_WATER_ROOM): that body is read as it comes, into its buffer.
    h = whole_reads(declines=2)
    body = bytes(range(256)) * (512 * KIB // 256)
    h.stream.feed(tcp_frame(body)[:8])
    h.loop.fire_reader(h.stream)  # the prefix alone; the mark is declined
    assert h.transport.declined == [len(body)] and h.transport.marks == []
    h.stream.feed(tcp_frame(body)[8:100 * KIB])
    h.loop.fire_reader(h.stream)  # the next event asks again, declined, and reads
    assert h.transport.declined == [len(body)] * 2
    assert h.stream.recv_into_sizes == [len(body)]  # straight into the body's buffer
    h.stream.feed(tcp_frame(body)[100 * KIB:] + tcp_frame(body)[:8])
    read_all(h)
    assert [call[2] for call in h.proto.calls] == [[body]]

    # The next body asks again: granted now, it is awaited whole.
    assert h.transport.marks == [len(body)] and h.pipe._decoder.body_untouched
    h.receive(tcp_frame(body)[8:])
    assert [call[2] for call in h.proto.calls] == [[body], [body]]
    assert h.stream.recv_sizes[-2:] == [len(body), 8]  # one recv, then the next prefix
    assert h.transport.marks == [len(body), 1]


def test_a_mark_declined_after_a_smaller_one_puts_the_mark_back_at_one_byte():
    # Left at the smaller body's size, the mark would hold back the end of the larger
    # body, read in chunks: its last bytes would never be reported.
    h = whole_reads()
    small, large = b"s" * (256 * KIB), b"L" * (1024 * KIB)
    h.receive(tcp_frame(small)[:8])
    assert h.transport.marks == [len(small)]  # set for the small body, then...
    h.transport.declines = 5
    h.receive(tcp_frame(small)[8:] + tcp_frame(large)[:8])  # ... declined for the large one

    assert h.transport.declined == [len(large)]
    assert h.transport.marks == [len(small), 1]
    h.stream.feed(tcp_frame(large)[8:])
    read_all(h)
    assert [call[2] for call in h.proto.calls] == [[small], [large]]


def test_a_platform_that_cannot_hold_readiness_reads_chunks_from_then_on():
    h = whole_reads(supported=False)
    body = b"c" * (512 * KIB)
    h.receive(tcp_frame(body)[:8], tcp_frame(body)[8:])
    h.stream.feed(tcp_frame(body) + tcp_frame(b"next"))
    read_all(h)

    assert [call[2] for call in h.proto.calls] == [[body], [body], [b"next"]]
    assert h.transport.marks == [] and h.pipe._set_low_water is None
    assert len(h.stream.recv_into_sizes) == 2  # both bodies straight into their buffer


def test_a_failure_to_set_the_mark_closes_the_pipe():
    h = whole_reads()
    h.transport.error = OSError(errno.EBADF, "Bad file descriptor")
    h.receive(tcp_frame(b"x" * (256 * KIB))[:8])
    h.loop.run_ready()

    assert h.pipe.state == "dead"


def test_a_failure_to_set_the_mark_at_a_readable_event_closes_the_pipe(caplog):
    h = whole_reads()
    h.stream.feed(tcp_frame(b"small"))
    read_all(h)  # ordinary reads again
    body = b"e" * (300 * KIB)
    h.stream.feed(tcp_frame(b"tiny") + tcp_frame(body)[:8])  # a chunk ending at the prefix
    read_all(h)  # the mark is left for the next readable event
    h.transport.error = OSError(errno.EBADF, "Bad file descriptor")
    h.receive(tcp_frame(body)[8:])
    h.loop.run_ready()

    assert h.pipe.state == "dead" and h.stream.recv_into_sizes == []
    assert no_errors_logged(caplog)


def test_a_frame_split_across_reads_is_delivered_once_complete():
    h = Harness().open_active()
    data = tcp_frame(b"hello")

    h.receive(data[:3], data[3:9])
    assert h.proto.calls == []
    h.receive(data[9:])

    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [b"hello"])]


def test_an_ipc_pipe_reads_ipc_frames():
    h = Harness(ipc=True).open_active()

    h.receive(ipc_frame(b"abc") + ipc_frame(b""))

    assert h.proto.received == [b"abc", b""]


def test_a_frame_of_exactly_recv_max_size_is_accepted():
    h = Harness(recv_max_size=10).open_active()

    h.receive(tcp_frame(b"x" * 10))

    assert h.pipe.state == "active"
    assert h.proto.received == [b"x" * 10]


def test_an_oversize_frame_kills_the_pipe_loudly_after_delivering_the_frames_before_it(caplog):
    h = Harness(recv_max_size=10).open_active()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        # The length alone condemns the frame: its body need not have arrived.
        h.receive(tcp_frame(b"abc") + tcp_frame(b"0123456789") + struct.pack(">Q", 11))

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.proto.calls == [
        ("evt_pipe_recv", h.pipe, [b"abc", b"0123456789"]),
        ("evt_pipe_removed", h.pipe),
    ]
    assert h.stats["dropped_oversize"] == 1
    assert h.stats["dropped_malformed"] == 0
    (message,) = warnings_of(caplog)
    assert "11-byte" in message
    assert "recv_max_size=10" in message
    h.loop.run_ready()
    assert h.socket.closed == [h.pipe]
    assert h.owner.closed == [h.pipe]


def test_a_bad_ipc_type_byte_kills_the_pipe(caplog):
    h = Harness(ipc=True).open_active()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.receive(ipc_frame(b"ok") + b"\x02" + struct.pack(">Q", 3) + b"abc")

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [b"ok"]), ("evt_pipe_removed", h.pipe)]
    assert h.stats["dropped_malformed"] == 1
    (message,) = warnings_of(caplog)
    assert "0x02" in message


def test_the_peer_closing_kills_the_pipe_and_the_owner_and_socket_hear_of_it_from_the_loop():
    h = Harness().open_active()

    h.stream.feed_eof()
    h.loop.fire_reader(h.stream)

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stream not in h.loop.readers
    assert h.proto.calls == [("evt_pipe_removed", h.pipe)]
    assert h.owner.closed == [] and h.socket.closed == []

    h.loop.run_ready()

    assert h.socket.closed == [h.pipe]
    assert h.owner.closed == [h.pipe]


def test_a_read_error_kills_the_pipe():
    h = Harness().open_active()

    h.stream.fail_recv(ConnectionResetError(errno.ECONNRESET, "reset"))
    h.loop.fire_reader(h.stream)

    assert h.pipe.state == "dead"
    assert h.proto.calls == [("evt_pipe_removed", h.pipe)]


def test_a_spurious_readable_event_changes_nothing():
    h = Harness().open_active()

    h.loop.fire_reader(h.stream)  # recv raises BlockingIOError

    assert h.pipe.state == "active"
    assert h.proto.calls == []


def test_pause_and_resume_remove_and_add_the_reader():
    h = Harness().open_active()

    h.pipe.cmd_pause()
    assert h.stream not in h.loop.readers
    h.pipe.cmd_pause()  # twice: nothing more to remove
    assert h.loop.history.count(("remove_reader", h.stream)) == 1

    h.pipe.cmd_resume()
    assert h.stream in h.loop.readers
    h.receive(tcp_frame(b"after"))
    assert h.proto.received == [b"after"]


def test_pause_after_a_resume_stops_reading_again():
    h = Harness().open_active()
    h.pipe.cmd_pause()
    h.pipe.cmd_resume()
    assert h.stream in h.loop.readers

    h.pipe.cmd_pause()

    assert h.stream not in h.loop.readers


def test_a_pipe_that_becomes_active_while_the_receive_queue_is_full_does_not_read_until_resumed():
    h = Harness()
    opened = h.socket.evt_pipe_opened

    def pause_at_once(pipe):
        # SocketCore.track_pipe: a pipe attaching while recv() is behind starts paused.
        opened(pipe)
        pipe.cmd_pause()

    h.socket.evt_pipe_opened = pause_at_once
    h.pipe.cmd_open()
    h.loop.run_ready()
    h.receive(PULL_HEADER)

    assert h.pipe.state == "active"
    assert h.stream not in h.loop.readers

    h.pipe.cmd_resume()
    h.receive(tcp_frame(b"hello"))

    assert h.proto.received == [b"hello"]


def test_pause_during_the_handshake_is_ignored():
    h = Harness()
    h.pipe.cmd_open()

    h.pipe.cmd_pause()
    h.pipe.cmd_resume()

    assert h.pipe.state == "handshaking"
    assert h.stream in h.loop.readers


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("ipc", "expected"),
    [
        (False, "0000000000000003 616263  0000000000000000"),
        (True, "01 0000000000000003 616263  01 0000000000000000"),
    ],
    ids=["tcp", "ipc"],
)
def test_queued_small_messages_leave_framed_and_joined_in_one_write(ipc, expected):
    h = Harness(ipc=ipc).open_active()

    h.pipe.cmd_send(b"abc")
    h.pipe.cmd_send(b"")
    assert h.stream.sendmsg_calls == []

    h.loop.run_ready()

    # One buffer (the frames joined: cheaper for the kernel than an iovec each), so send().
    assert h.stream.send_calls == 1
    assert [[bytes(b) for b in call] for call in h.stream.sendmsg_calls] == [
        [bytes.fromhex(expected)]]
    assert bytes(h.stream.written) == bytes.fromhex(expected)
    assert h.stream not in h.loop.writers
    assert h.proto.calls == [("evt_pipe_ready", h.pipe)]  # the flush reports capacity


@pytest.mark.parametrize("body", [b"abc", b"k" * 4096], ids=["small", "over the join limit"])
def test_a_lone_queued_frame_is_written_with_one_send(body):
    # A request or a reply: one buffer, so send() rather than sendmsg() and its list,
    # whatever its size (the join of many small ones is another matter).
    h = Harness().open_active()

    h.pipe.cmd_send(body)
    h.loop.run_ready()

    assert h.stream.send_calls == 1 and len(h.stream.sendmsg_calls) == 1
    assert bytes(h.stream.written) == tcp_frame(body)


def test_a_header_is_written_between_the_size_and_the_body():
    h = Harness().open_active()

    h.pipe.cmd_send(b"body", b"\x80\x00\x00\x01")
    h.loop.run_ready()

    assert bytes(h.stream.written) == tcp_frame(b"\x80\x00\x00\x01body")


def test_a_large_body_is_written_after_its_prefix_without_being_copied():
    h = Harness().open_active()
    body = bytes(range(256)) * 400  # 100 KiB

    h.pipe.cmd_send(body)
    h.loop.run_ready()

    (buffers,) = h.stream.sendmsg_calls
    assert len(buffers) == 2
    assert bytes(buffers[0]) == struct.pack(">Q", len(body))
    assert buffers[1] is body
    assert bytes(h.stream.written) == tcp_frame(body)


def test_partial_writes_eventually_write_everything_in_order_under_write_interest():
    h = Harness().open_active()
    h.stream.accept_per_call = 5
    messages = [b"hello world", b"", b"x" * 37]
    for m in messages:
        h.pipe.cmd_send(m)

    h.loop.run_ready()
    assert len(h.stream.written) == 5
    assert h.stream in h.loop.writers  # output pending: write interest registered
    queued_while_blocked = h.pipe.free

    fired = h.drain_writes()

    expected = b"".join(tcp_frame(m) for m in messages)
    assert bytes(h.stream.written) == expected
    assert fired == (len(expected) + 4) // 5 - 1
    assert h.loop.history.count(("add_writer", h.stream)) == 1
    assert h.loop.history.count(("remove_writer", h.stream)) == 1
    assert h.stream not in h.loop.writers
    assert h.pipe.free > queued_while_blocked


def test_messages_sent_while_a_write_is_pending_wait_for_the_writer():
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"one")
    h.loop.run_ready()
    assert h.stream in h.loop.writers

    h.pipe.cmd_send(b"two")
    assert not h.loop.ready and not h.loop.after_batch  # no extra flush: the writer will do

    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)

    assert bytes(h.stream.written) == tcp_frame(b"one") + tcp_frame(b"two")
    assert h.stream not in h.loop.writers


def test_a_handshake_written_a_few_bytes_at_a_time_completes():
    h = Harness()
    h.stream.accept_per_call = 3
    h.pipe.cmd_open()
    h.loop.run_ready()

    h.drain_writes()

    assert bytes(h.stream.written) == PUSH_HEADER
    h.receive(PULL_HEADER)
    assert h.pipe.state == "active"


def test_a_peer_header_arriving_before_ours_is_fully_written_still_completes_the_handshake():
    h = Harness()
    h.stream.accept_per_call = 3
    h.pipe.cmd_open()
    h.loop.run_ready()
    assert h.stream in h.loop.writers

    h.receive(PULL_HEADER)
    assert h.pipe.state == "active"
    h.drain_writes()

    assert bytes(h.stream.written) == PUSH_HEADER
    # The rest of our header leaves while active (3 + 2 bytes): each flush reports capacity.
    assert h.proto.calls == [("evt_pipe_added", h.pipe)] + [("evt_pipe_ready", h.pipe)] * 2


def test_a_write_error_kills_the_pipe():
    h = Harness().open_active()
    h.stream.send_error = BrokenPipeError(errno.EPIPE, "broken pipe")

    h.pipe.cmd_send(b"x")
    h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.socket.closed == [h.pipe]


def test_free_slots_shrink_as_messages_queue_and_come_back_after_the_flush():
    h = Harness().open_active()
    free = h.pipe.free

    h.pipe.cmd_send(b"a")
    h.pipe.cmd_send(b"b")
    assert h.pipe.free == free - 2

    h.loop.run_ready()
    assert h.pipe.free == free


def test_a_pipe_holding_high_water_bytes_or_more_takes_no_message_and_no_byte():
    h = Harness().open_active()
    h.stream.block_writes = True

    h.pipe.cmd_send(b"x" * (HIGH_WATER - 8))  # with its 8-byte prefix: exactly high water

    assert (h.pipe.free, h.pipe.free_bytes) == (0, 0)
    h.pipe.cmd_send(b"over")
    assert (h.pipe.free, h.pipe.free_bytes) == (0, 0)


def test_a_pipe_whose_queue_holds_send_buffer_messages_takes_no_more():
    h = Harness(send_buffer=2).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"one")
    assert h.pipe.free == 1

    h.pipe.cmd_send(b"two")

    assert h.pipe.free == 0


_SIZES = st.sampled_from([0, 1, 64, JOIN_MAX, JOIN_MAX + 1, HIGH_WATER // 3, HIGH_WATER - 40])


@settings(max_examples=150, deadline=None)
# The byte limit reached by a small frame: past it, and exactly at it; then left exactly
# at it by two partial writes of 72 bytes.
@example(steps=[("send", HIGH_WATER - 40), ("send", 64)])
@example(steps=[("send", HIGH_WATER - 80), ("send", 64)])
@example(steps=[("send", HIGH_WATER - 8), ("send", 64), ("send", 64), ("flush", 72)])
@given(steps=st.lists(st.one_of(st.tuples(st.just("send"), _SIZES),
                                st.tuples(st.just("flush"),
                                          st.sampled_from([None, 1, 7, 72, 100_000]))),
                      max_size=40))
def test_free_always_equals_what_the_queue_leaves_room_for(steps):
    # ``free`` is a field kept up to date by whatever changes the queue (enqueue inline,
    # the rest through _recount), not computed per read: after any sequence of small and
    # large sends and full, partial or blocked writes it must equal what the queue implies.
    h = Harness(send_buffer=5).open_active()
    pipe = h.pipe

    def room() -> int:
        queued = len(pipe._out)
        return 5 - queued if queued < 5 and pipe._out_bytes < HIGH_WATER else 0

    for op, arg in steps:
        if op == "send":
            pipe.cmd_send(b"s" * arg)
        else:
            h.stream.block_writes = arg is None
            h.stream.accept_per_call = arg
            h.loop.run_ready()
            if h.stream in h.loop.writers:
                h.loop.fire_writer(h.stream)
        assert pipe.free == room()


def test_a_pipe_that_dies_with_a_full_queue_has_its_whole_window_free_again():
    h = Harness(send_buffer=2).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"one")
    h.pipe.cmd_send(b"two")
    h.loop.run_ready()  # the write would block: the pipe waits for the writer
    assert h.pipe.free == 0

    h.stream.block_writes = False
    h.stream.send_error = BrokenPipeError(errno.EPIPE, "broken pipe")
    h.loop.fire_writer(h.stream)

    assert h.pipe.state == "dead" and not h.pipe._out
    assert h.pipe.free == 2  # what its empty queue leaves room for


def test_a_large_message_queued_as_two_buffers_schedules_one_flush():
    h = Harness().open_active()

    h.pipe.cmd_send(b"L" * (JOIN_MAX + 1))  # its prefix, then the body itself

    assert len(h.pipe._out) == 2
    assert h.loop.after_batch == [(h.pipe._flush, ())]


# ---------------------------------------------------------------- a batch (PUSH)

_BATCH_SIZES = st.sampled_from([0, 1, 64, 65, JOIN_MAX, JOIN_MAX + 1, HIGH_WATER // 3])


@settings(max_examples=100, deadline=None)
@example(ipc=False, before=[], sizes=[64] * 7)  # more than the window: two left over
@example(ipc=False, before=[HIGH_WATER // 3] * 2, sizes=[HIGH_WATER // 3, 64, 64])
@example(ipc=True, before=[], sizes=[1, 64, JOIN_MAX + 1, 64])  # stops at the large body
@given(ipc=st.booleans(), before=st.lists(_BATCH_SIZES, max_size=3),
       sizes=st.lists(_BATCH_SIZES, max_size=8))
def test_a_batch_is_queued_as_its_messages_one_by_one_while_there_is_room(ipc, before, sizes):
    # cmd_send_many against its definition: cmd_send of each body from the front, while
    # the pipe has room and the body is small enough to join; the rest is left in the
    # list, in order, for the protocol to place one by one.
    batched, single = (Harness(send_buffer=5, ipc=ipc).open_active() for _ in range(2))
    for h in (batched, single):
        h.stream.block_writes = True
        for size in before:
            h.pipe.cmd_send(b"b" * size)
    bodies = [bytes([65 + n]) * size for n, size in enumerate(sizes)]

    left = list(bodies)
    batched.pipe.cmd_send_many(left)
    taken = 0
    for body in bodies:
        if not single.pipe.free or len(body) > JOIN_MAX:
            break
        single.pipe.cmd_send(body)
        taken += 1

    assert left == bodies[taken:]
    a, b = batched.pipe, single.pipe
    assert [bytes(buf) for buf in a._out] == [bytes(buf) for buf in b._out]
    assert (a.free, a._out_bytes, a._out_msgs) == (b.free, b._out_bytes, b._out_msgs)
    assert len(batched.loop.after_batch) == len(single.loop.after_batch) <= 1


def test_a_batch_goes_out_framed_in_one_write_after_one_flush():
    h = Harness().open_active()
    bodies = [b"a" * 3, b"b" * 3, b"c" * 5]

    h.pipe.cmd_send_many(bodies)
    h.pipe.cmd_send(b"d")  # queued behind it: the same flush

    assert bodies == []
    assert h.loop.after_batch == [(h.pipe._flush, ())]
    h.loop.run_ready()
    assert bytes(h.stream.written) == b"".join(
        tcp_frame(b) for b in (b"aaa", b"bbb", b"c" * 5, b"d"))
    assert len(h.stream.sendmsg_calls) == 1
    assert (h.pipe.free, h.pipe._out_msgs) == (h.pipe._window, 0)


# ---------------------------------------------------------------- a lone send's write at once


def writing_at_once(h: Harness) -> Harness:
    """As SocketCore's lone send runs its protocol's event: a pipe's first frame goes at
    once (Loop.writing_at_once)."""
    h.loop.writing_at_once = True
    return h


def test_a_lone_sends_frame_reaches_the_stream_at_once_and_leaves_the_queue_in_the_flush():
    h = writing_at_once(Harness().open_active())
    free = h.pipe.free

    h.pipe.cmd_send(b"request")

    # Written already, but the queue's bookkeeping and evt_flushed wait for the flush: no
    # machine hears of the write in the middle of the event that queued the frame.
    assert bytes(h.stream.written) == tcp_frame(b"request")
    assert (h.pipe.free, h.pipe._out_msgs, h.proto.calls) == (free - 1, 1, [])
    assert h.loop.after_batch == [(h.pipe._flush, ())]
    h.loop.run_ready()
    assert bytes(h.stream.written) == tcp_frame(b"request")  # not written twice
    assert h.stream.send_calls == 1 and len(h.stream.sendmsg_calls) == 1
    assert (h.pipe.free, h.pipe._out_msgs, h.pipe._out_bytes) == (free, 0, 0)
    assert h.proto.calls == [("evt_pipe_ready", h.pipe)]


def test_without_a_lone_send_a_frame_waits_for_the_flush_after_the_batch():
    h = Harness().open_active()

    h.pipe.cmd_send(b"batched")

    assert h.stream.written == b"" and h.stream.send_calls == 0
    h.loop.run_ready()
    assert bytes(h.stream.written) == tcp_frame(b"batched")


def test_only_the_first_frame_of_a_batch_is_written_at_once_the_rest_follow_in_the_flush():
    h = writing_at_once(Harness().open_active())

    h.pipe.cmd_send(b"one")
    h.pipe.cmd_send(b"two", b"\x80\x00\x00\x01")

    assert bytes(h.stream.written) == tcp_frame(b"one")
    h.loop.run_ready()
    assert bytes(h.stream.written) == tcp_frame(b"one") + tcp_frame(b"\x80\x00\x00\x01two")
    assert h.stream.send_calls == 2 and h.pipe._out_msgs == 0 and not h.pipe._out


def test_frames_queued_behind_one_written_at_once_and_written_in_part_are_counted_as_left():
    h = writing_at_once(Harness().open_active())
    h.pipe.cmd_send(b"one")  # written whole, at once
    h.pipe.cmd_send(b"two")
    h.pipe.cmd_send(b"three")
    h.stream.accept_per_call = len(tcp_frame(b"two")) + 2  # "three" only begins

    h.loop.run_ready()

    assert bytes(h.stream.written) == tcp_frame(b"one") + tcp_frame(b"two") + tcp_frame(b"three")[:2]
    assert (h.pipe._out_msgs, h.pipe.free) == (1, h.pipe._window - 1)  # "three" is left
    h.stream.accept_per_call = None
    h.drain_writes()
    assert bytes(h.stream.written) == b"".join(tcp_frame(b) for b in (b"one", b"two", b"three"))
    assert (h.pipe._out_msgs, h.pipe.free) == (0, h.pipe._window)


def test_a_large_messages_prefix_written_in_part_is_still_not_a_message_end():
    # Large bodies are queued as their own buffer behind a prefix buffer (_Head): what was
    # left of a prefix cut short became a plain buffer, counted as a message when it left,
    # so the unsent count (linger's warning, dropped_linger) fell one too low.
    h = Harness().open_active()
    big = b"x" * 20_000  # over JOIN_MAX: prefix and body queued apart
    for _ in range(3):
        h.pipe.cmd_send(big)
    frame = len(tcp_frame(big))
    h.stream.accept_per_call = frame + 4  # the first whole, then half the second's prefix
    h.loop.run_ready()
    assert h.pipe._out_msgs == 2
    h.stream.accept_per_call = 4 + 100  # the rest of that prefix and some of its body
    h.loop.fire_writer(h.stream)
    assert h.pipe._out_msgs == 2  # the second's body is still queued
    h.stream.accept_per_call = None
    h.drain_writes()
    assert bytes(h.stream.written) == tcp_frame(big) * 3
    assert (h.pipe._out_msgs, h.pipe._out_bytes, h.pipe.free) == (0, 0, h.pipe._window)


def test_a_frame_written_in_part_at_once_is_finished_by_the_writer_before_what_follows():
    h = writing_at_once(Harness().open_active())
    h.stream.accept_per_call = 5

    h.pipe.cmd_send(b"first")
    h.pipe.cmd_send(b"second")
    h.loop.run_ready()  # the flush takes the 5 bytes written into account: the kernel is full

    assert bytes(h.stream.written) == tcp_frame(b"first")[:5]
    assert h.stream in h.loop.writers
    h.stream.accept_per_call = None
    h.drain_writes()
    assert bytes(h.stream.written) == tcp_frame(b"first") + tcp_frame(b"second")
    assert (h.pipe._out_msgs, h.pipe._out_bytes, h.pipe.free) == (0, 0, h.pipe._window)


def test_a_frame_the_kernel_cannot_take_at_once_waits_for_the_writer():
    h = writing_at_once(Harness().open_active())
    h.stream.block_writes = True

    h.pipe.cmd_send(b"later")
    h.loop.run_ready()

    assert h.stream.written == b"" and h.stream in h.loop.writers
    h.stream.block_writes = False
    h.drain_writes()
    assert bytes(h.stream.written) == tcp_frame(b"later")


def test_a_large_message_is_not_written_at_once_but_in_one_write_of_its_two_buffers():
    h = writing_at_once(Harness().open_active())
    body = b"L" * (JOIN_MAX + 1)

    h.pipe.cmd_send(body)

    assert h.stream.written == b""
    h.loop.run_ready()
    assert bytes(h.stream.written) == tcp_frame(body) and len(h.stream.sendmsg_calls) == 1


def test_a_write_at_once_that_fails_fails_the_pipe_in_the_flush_as_any_write():
    h = writing_at_once(Harness().open_active())
    h.stream.send_error = OSError(errno.EPIPE, "Broken pipe")

    h.pipe.cmd_send(b"lost")
    assert h.pipe.state == "active"  # the event that queued it is not cut short
    h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert len(h.stream.sendmsg_calls) == 2  # at once, then the flush, which met the error


def test_an_interrupt_as_a_write_at_once_returns_closes_the_pipe(caplog):
    # How much of the frame reached the kernel is unknown: the stream's framing is lost.
    h = writing_at_once(Harness().open_active())
    h.stream.send_error = KeyboardInterrupt()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"), \
            pytest.raises(KeyboardInterrupt):
        h.pipe.cmd_send(b"cut")

    assert h.pipe.state == "dead" and h.stream.closed
    assert h.stats.counts["pipes_interrupted"] == 1
    assert any("KeyboardInterrupt in the middle of its work" in w for w in warnings_of(caplog))
    h.loop.run_ready()  # the flush after the batch finds the pipe dead: nothing more
    assert len(h.stream.sendmsg_calls) == 1


def test_a_batch_that_brings_the_queue_to_exactly_high_water_bytes_stops_there():
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"x" * (HIGH_WATER - 8 - 2 * 72))  # its prefix, then the body itself
    bodies = [b"1" * 64, b"2" * 64, b"3" * 64]  # 72 bytes each with their prefixes

    h.pipe.cmd_send_many(bodies)

    assert bodies == [b"3" * 64]
    assert h.pipe._out_bytes == HIGH_WATER and h.pipe.free == 0


def test_a_pipe_without_room_takes_nothing_of_a_batch_and_schedules_nothing():
    h = Harness(send_buffer=1).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"full")
    h.loop.run_ready()  # blocked: the pipe waits for the writer, its one slot taken
    bodies = [b"x", b"y"]

    h.pipe.cmd_send_many(bodies)

    assert bodies == [b"x", b"y"]
    assert h.loop.after_batch == [] and h.pipe._out_msgs == 1


def test_a_batch_queued_while_the_writer_waits_schedules_no_flush():
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"first")
    h.loop.run_ready()  # blocked: the writer is registered, it flushes when writable

    h.pipe.cmd_send_many([b"more", b"again"])

    assert h.loop.after_batch == []
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)
    assert bytes(h.stream.written) == b"".join(
        tcp_frame(b) for b in (b"first", b"more", b"again"))


# ---------------------------------------------------------------- publishing (PUB)


def _publishers(*ipc_framings: bool) -> list[Harness]:
    """Active pipes of one PUB socket, with the framings given (True: IPC)."""
    first = Harness(ipc=ipc_framings[0], info=protocols.Pub).open_active(SUB_HEADER)
    pipes = [first]
    for ipc in ipc_framings[1:]:
        h = Harness(ipc=ipc, info=protocols.Pub)
        h.socket = first.socket  # one socket: the pipes share what it last framed
        h.pipe = Pipe(loop=h.loop, stream=h.stream, transport=h.transport, socket=h.socket,
                      owner=h.owner, dialed=False, peer_addr="tcp://127.0.0.1:5556")
        pipes.append(h.open_active(SUB_HEADER))
    return pipes


def test_a_published_body_is_framed_once_for_every_pipe_of_a_framing():
    tcp_a, tcp_b, ipc = _publishers(False, False, True)
    body = b"news" * 4

    for h in (tcp_a, tcp_b, ipc):
        h.pipe.cmd_publish(body)
        h.loop.run_ready()

    assert bytes(tcp_a.stream.written) == bytes(tcp_b.stream.written) == tcp_frame(body)
    assert bytes(ipc.stream.written) == ipc_frame(body)
    # One bytes object for both TCP pipes, written as it is; the IPC pipe built its own.
    (frame_a,), (frame_b,), (frame_ipc,) = (h.stream.sendmsg_calls[0] for h in (tcp_a, tcp_b, ipc))
    assert frame_a is frame_b and frame_ipc is not frame_a
    assert (tcp_a.pipe.free, tcp_a.pipe._out_msgs) == (tcp_a.pipe._window, 0)


def test_a_new_published_body_is_framed_anew_and_an_alternating_framing_never_mixes():
    tcp, ipc = _publishers(False, True)
    for body in (b"one", b"two"):
        tcp.pipe.cmd_publish(body)
        ipc.pipe.cmd_publish(body)
        tcp.pipe.cmd_publish(body + b"!")  # a third body between two pipes of one framing
    tcp.loop.run_ready()
    ipc.loop.run_ready()

    assert bytes(tcp.stream.written) == b"".join(
        tcp_frame(b) for b in (b"one", b"one!", b"two", b"two!"))
    assert bytes(ipc.stream.written) == ipc_frame(b"one") + ipc_frame(b"two")


def test_a_published_body_larger_than_join_max_goes_as_prefix_then_body_not_shared():
    tcp_a, tcp_b = _publishers(False, False)
    body = b"L" * (JOIN_MAX + 1)

    for h in (tcp_a, tcp_b):
        h.pipe.cmd_publish(body)
        h.loop.run_ready()
        assert h.stream.sendmsg_calls[0][1] is body  # the body itself, never copied
        assert bytes(h.stream.written) == tcp_frame(body)
    assert tcp_a.socket.published[0] is not body


def test_a_published_body_of_exactly_join_max_bytes_is_joined_and_shared():
    tcp_a, tcp_b = _publishers(False, False)
    body = b"J" * JOIN_MAX

    for h in (tcp_a, tcp_b):
        h.pipe.cmd_publish(body)
        h.loop.run_ready()

    (frame_a,), (frame_b,) = (h.stream.sendmsg_calls[0] for h in (tcp_a, tcp_b))
    assert frame_a is frame_b and frame_a == tcp_frame(body)


_PUBLISHED = st.sampled_from([0, 1, 64, 65, JOIN_MAX])


@settings(max_examples=100, deadline=None)
@example(window=512, before=[HIGH_WATER // 2, HIGH_WATER // 2 - 16 - 2 * (JOIN_MAX + 8)],
         sizes=[JOIN_MAX, JOIN_MAX, JOIN_MAX])  # exactly at high water after the second
@example(window=5, before=[64], sizes=[1] * 7)  # out of slots: three missed
@given(window=st.sampled_from([5, 512]),
       before=st.lists(st.sampled_from([0, 64, JOIN_MAX, HIGH_WATER // 3, HIGH_WATER // 2]),
                       max_size=3),
       sizes=st.lists(_PUBLISHED, min_size=1, max_size=8))
def test_a_published_batch_is_queued_as_its_messages_one_by_one_while_there_is_room(
        window, before, sizes):
    # cmd_publish_many against its definition: cmd_publish of each body while the pipe
    # has room, the rest missed (as a PUB's per-message loop leaves out a full pipe).
    batched, single = (Harness(send_buffer=window, info=protocols.Pub).open_active(SUB_HEADER)
                       for _ in range(2))
    for h in (batched, single):
        h.stream.block_writes = True
        for size in before:
            h.pipe.cmd_send(b"b" * size)
    bodies = [bytes([65 + n]) * size for n, size in enumerate(sizes)]

    batch = Publication(list(bodies))
    batched.pipe.cmd_publish_many(batch)
    missed = 0
    for body in bodies:
        if single.pipe.free:
            single.pipe.cmd_publish(body)
        else:
            missed += 1

    a, b = batched.pipe, single.pipe
    assert batch.missed == missed
    assert [bytes(buf) for buf in a._out] == [bytes(buf) for buf in b._out]
    assert (a.free, a._out_bytes, a._out_msgs) == (b.free, b._out_bytes, b._out_msgs)
    assert len(batched.loop.after_batch) == len(single.loop.after_batch)


def test_a_published_batch_is_framed_once_per_framing_and_written_after_one_flush():
    tcp_a, tcp_b, ipc = _publishers(False, False, True)
    batch = Publication([b"one", b"two", b"three"])
    queued = []

    for h in (tcp_a, tcp_b, ipc):
        h.pipe.cmd_publish_many(batch)
        h.pipe.cmd_publish(b"four")  # queued behind it: the same flush
        assert h.loop.after_batch == [(h.pipe._flush, ())]
        queued.append(list(h.pipe._out))
        h.loop.run_ready()

    expected = [b"one", b"two", b"three", b"four"]
    assert bytes(tcp_a.stream.written) == bytes(tcp_b.stream.written) == b"".join(
        tcp_frame(b) for b in expected)
    assert bytes(ipc.stream.written) == b"".join(ipc_frame(b) for b in expected)
    assert [len(h.stream.sendmsg_calls) for h in (tcp_a, tcp_b, ipc)] == [1, 1, 1]
    frames_a, frames_b, frames_ipc = queued
    assert all(x is y for x, y in zip(frames_a[:3], frames_b[:3], strict=True))  # shared
    assert not any(x is y for x, y in zip(frames_a, frames_ipc, strict=True))
    assert batch.missed == 0


@pytest.mark.parametrize("over", [0, 1], ids=["at the limit", "a byte over"])
def test_queued_frames_that_average_over_the_join_limit_leave_as_buffers_of_their_own(over):
    h = Harness().open_active()
    bodies = [b"a" * (JOIN_WRITE_AVG - 8), b"b" * (JOIN_WRITE_AVG - 8 + over)]
    for body in bodies:
        h.pipe.cmd_send(body)

    h.loop.run_ready()

    frames = [tcp_frame(body) for body in bodies]
    if over:  # sendmsg: the frames as they were queued, not copied
        assert h.stream.send_calls == 0
        assert [[bytes(b) for b in call] for call in h.stream.sendmsg_calls] == [frames]
    else:
        assert h.stream.send_calls == 1
        assert [[bytes(b) for b in call] for call in h.stream.sendmsg_calls] == [
            [b"".join(frames)]]


def test_a_partial_write_of_joined_frames_leaves_the_rest_queued_by_message():
    h = Harness().open_active()
    h.stream.accept_per_call = 8 + 3 + 5  # the first frame and part of the second
    for body in (b"one", b"second", b"third"):
        h.pipe.cmd_send(body)

    h.loop.run_ready()

    assert h.stream.send_calls == 1
    assert [bytes(b) for b in h.pipe._out] == [tcp_frame(b"second")[5:], tcp_frame(b"third")]
    assert h.pipe._out_msgs == 2 and h.pipe._out_bytes == 8 + 6 - 5 + 8 + 5
    h.stream.accept_per_call = None
    h.loop.writers[h.stream]()  # writable again
    assert bytes(h.stream.written) == b"".join(tcp_frame(b) for b in (b"one", b"second",
                                                                      b"third"))
    assert not h.pipe._out and h.pipe._out_msgs == 0


def test_a_published_batch_that_brings_the_queue_to_exactly_high_water_stops_there():
    h = Harness(info=protocols.Pub).open_active(SUB_HEADER)
    h.stream.block_writes = True
    h.pipe.cmd_send(b"x" * (HIGH_WATER - 8 - 2 * 72))  # its prefix, then the body itself
    batch = Publication([b"1" * 64, b"2" * 64, b"3" * 64])  # 72 bytes each, framed

    h.pipe.cmd_publish_many(batch)

    assert batch.missed == 1
    assert h.pipe._out_bytes == HIGH_WATER and h.pipe.free == 0 and h.pipe._out_msgs == 3


def test_a_published_batch_whose_first_frame_reaches_high_water_gives_the_pipe_that_one():
    h = Harness(info=protocols.Pub).open_active(SUB_HEADER)
    h.stream.block_writes = True
    h.pipe.cmd_send(b"x" * (HIGH_WATER - 8 - 72))  # its prefix, then the body itself
    batch = Publication([b"1" * 64, b"2" * 64, b"3" * 64])  # 72 bytes each, framed

    h.pipe.cmd_publish_many(batch)

    assert batch.missed == 2 and h.pipe._out_msgs == 2 and h.pipe.free == 0


def test_a_pipe_without_room_misses_a_whole_published_batch_and_schedules_nothing():
    h = Harness(send_buffer=1, info=protocols.Pub).open_active(SUB_HEADER)
    h.stream.block_writes = True
    h.pipe.cmd_send(b"full")
    h.loop.run_ready()  # blocked: the writer waits, the one slot taken
    batch = Publication([b"x", b"y"])

    h.pipe.cmd_publish_many(batch)

    assert batch.missed == 2 and h.pipe._out_msgs == 1 and h.loop.after_batch == []


def test_a_published_batch_queued_while_the_writer_waits_schedules_no_flush():
    h = Harness(info=protocols.Pub).open_active(SUB_HEADER)
    h.stream.block_writes = True
    h.pipe.cmd_send(b"first")
    h.loop.run_ready()  # blocked: the writer is registered

    h.pipe.cmd_publish_many(Publication([b"more"]))

    assert h.loop.after_batch == []
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)
    assert bytes(h.stream.written) == tcp_frame(b"first") + tcp_frame(b"more")


def test_publishing_counts_each_message_queued_and_takes_a_slot():
    h = Harness(send_buffer=3, info=protocols.Pub).open_active(SUB_HEADER)
    h.stream.block_writes = True

    h.pipe.cmd_publish(b"a")
    h.pipe.cmd_publish(b"a")  # the same body again: the shared frame, queued twice

    assert (h.pipe._out_msgs, h.pipe.free, len(h.pipe._out)) == (2, 1, 2)


def test_a_body_of_exactly_join_max_bytes_is_joined_with_its_prefix_into_one_buffer():
    h = Harness().open_active()
    body = b"j" * JOIN_MAX

    h.pipe.cmd_send(body)
    h.loop.run_ready()

    assert [bytes(b) for b in h.stream.sendmsg_calls[-1]] == [tcp_frame(body)]


def test_write_interest_comes_back_for_a_second_blocked_write_after_the_first_drained():
    # The pipe must forget that its writer was registered once it removed it: otherwise the
    # next partial write never registers again and the rest of the output waits forever.
    h = Harness().open_active()
    h.stream.accept_per_call = 5
    expected = b""
    for round_ in (b"first round", b"second round"):
        h.pipe.cmd_send(round_)
        expected += tcp_frame(round_)
        h.loop.run_ready()
        assert h.stream in h.loop.writers, f"no write interest for the {round_!r} leftovers"
        h.drain_writes()
        assert h.stream not in h.loop.writers

    assert bytes(h.stream.written) == expected
    assert h.loop.history.count(("add_writer", h.stream)) == 2
    assert h.loop.history.count(("remove_writer", h.stream)) == 2


# ---------------------------------------------------------------- closing


def test_close_without_pending_output_kills_the_pipe_at_once():
    h = Harness().open_active()

    h.pipe.cmd_close()

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.proto.calls == [("evt_pipe_removed", h.pipe)]
    h.loop.run_ready()
    assert h.socket.closed == [h.pipe]
    assert h.owner.closed == [h.pipe]


def test_close_with_pending_output_flushes_it_then_dies():
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")

    h.pipe.cmd_close()
    h.loop.run_ready()

    assert h.pipe.state == "closing"
    assert not h.stream.closed
    assert h.proto.calls == [("evt_pipe_removed", h.pipe)]  # the protocol lets go at once
    h.pipe.cmd_close()  # closing again changes nothing
    assert h.pipe.state == "closing"

    h.stream.block_writes = False
    h.drain_writes()

    assert bytes(h.stream.written) == tcp_frame(b"bye")
    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.loop.pending_timers() == []
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


def test_data_arriving_while_closing_is_discarded_and_counted():
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.proto.calls.clear()

    h.receive(tcp_frame(b"late1") + tcp_frame(b"late2"))

    assert h.proto.calls == []
    assert h.stats["dropped_closing"] == 2
    assert h.pipe.state == "closing"


def test_a_linger_that_expires_kills_the_pipe_with_a_warning(caplog):
    h = Harness(linger=0.5).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()

    h.loop.advance(0.499)
    assert h.pipe.state == "closing"
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.loop.advance(0.001)

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stream not in h.loop.writers
    (message,) = warnings_of(caplog)
    assert "linger=0.5" in message
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


def test_a_linger_that_expires_counts_and_reports_what_it_drops(caplog):
    h = Harness(linger=0.5).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.loop.advance(0.5)

    assert h.stats["dropped_linger"] == 1
    (message,) = warnings_of(caplog)
    assert f"1 unsent messages ({len(tcp_frame(b'bye'))} bytes)" in message


def test_a_linger_that_expires_counts_messages_not_buffers():
    h = Harness(linger=0.5).open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"x" * 100_000)  # a prefix buffer and the body: one message
    h.pipe.cmd_send(b"small")
    h.pipe.cmd_close()
    h.loop.run_ready()
    h.loop.advance(0.5)
    assert h.stats["dropped_linger"] == 2


def test_a_linger_that_expires_counts_only_the_messages_not_written_yet():
    h = Harness(linger=0.5).open_active()
    h.stream.accept_per_call = len(tcp_frame(b"m1"))  # the first message, whole
    for body in (b"m1", b"m2", b"m3"):
        h.pipe.cmd_send(body)
    h.loop.run_ready()
    assert bytes(h.stream.written) == tcp_frame(b"m1")

    h.pipe.cmd_close()
    h.loop.advance(0.5)

    assert h.pipe.state == "dead"
    assert h.stats["dropped_linger"] == 2


def test_close_during_the_handshake_kills_the_pipe_and_its_timer():
    h = Harness()
    h.pipe.cmd_open()

    h.pipe.cmd_close()

    assert h.pipe.state == "dead"
    assert h.loop.pending_timers() == []
    assert h.stream not in h.loop.readers
    h.loop.run_ready()  # the deferred header write finds a dead pipe and does nothing
    assert h.stream.sendmsg_calls == []
    assert h.owner.closed == [h.pipe]


def test_a_dead_pipe_ignores_further_closes():
    h = Harness().open_active()
    h.pipe.cmd_close()

    h.pipe.cmd_close()

    assert h.pipe.state == "dead"
    assert h.stream.close_calls == 1


def test_a_malformed_frame_while_closing_kills_the_pipe_as_a_protocol_error_not_a_crash(caplog):
    h = closing(Harness(recv_max_size=10))

    with caplog.at_level(logging.ERROR, logger="scaproust.pipe"):
        h.receive(struct.pack(">Q", 11))  # an oversize frame's length

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stats["dropped_oversize"] == 1
    assert h.stats["pipe_errors"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


# ---------------------------------------------------------------- crashes


@pytest.mark.parametrize("state", ["handshaking", "active", "closing"])
def test_a_crash_kills_the_pipe_and_releases_its_connection(state, caplog):
    h = Harness()
    if state == "handshaking":
        h.pipe.cmd_open()
    elif state == "active":
        h.open_active()
    else:
        closing(h)
    assert h.pipe.state == state

    with caplog.at_level(logging.CRITICAL, logger="scaproust.pipe"):
        h.pipe.evt_crashed(RuntimeError("a bug in an action"))

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.loop.pending_timers() == []
    assert h.stats["pipe_errors"] == 1
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]


def test_a_crash_is_logged_as_an_error_with_its_traceback(caplog):
    h = Harness().open_active()

    with caplog.at_level(logging.ERROR, logger="scaproust.pipe"):
        h.pipe.evt_crashed(RuntimeError("a bug in an action"))

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert "a bug in an action" in str(record.exc_info[1])


def test_if_even_the_crash_fails_the_pipe_drops_its_connection_by_hand(caplog):
    h = Harness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"queued")
    h.loop.run_ready()
    assert h.stream in h.loop.readers and h.stream in h.loop.writers

    def broken(pipe):
        raise RuntimeError("the protocol fails too")

    h.proto.evt_pipe_removed = broken  # the crash's way out (detach) fails
    with caplog.at_level(logging.CRITICAL, logger="scaproust"):
        crash(h.pipe, RuntimeError("a bug in an action"))

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stream not in h.loop.readers
    assert h.stream not in h.loop.writers


# ---------------------------------------------------------------- dialed pipes


def test_a_dialed_pipe_waits_for_its_connect_then_exchanges_headers():
    h = Harness(dialed=True)

    h.pipe.cmd_open()
    assert h.pipe.state == "connecting"
    assert h.stream in h.loop.writers
    assert h.stream not in h.loop.readers
    h.loop.run_ready()
    assert h.stream.sendmsg_calls == []

    h.loop.fire_writer(h.stream)  # connect completed: finish_connect() == 0

    assert h.transport.finished == [h.stream]
    assert h.transport.configured == [h.stream]
    assert h.pipe.state == "handshaking"
    assert h.stream not in h.loop.writers
    assert h.stream in h.loop.readers
    h.loop.run_ready()
    assert bytes(h.stream.written) == PUSH_HEADER
    h.receive(PULL_HEADER)
    assert h.pipe.state == "active"


def test_a_dialed_pipe_whose_connect_fails_dies_and_tells_its_owner():
    h = Harness(dialed=True, connect_errno=errno.ECONNREFUSED)
    h.pipe.cmd_open()

    h.loop.fire_writer(h.stream)

    assert h.pipe.state == "dead"
    assert h.stream.closed
    assert h.stream not in h.loop.writers
    assert h.transport.configured == []
    assert h.owner.closed == []
    h.loop.run_ready()
    assert h.owner.closed == [h.pipe]
    assert h.socket.closed == []
    assert h.proto.calls == []


def test_a_connect_that_failed_at_once_is_reported_from_the_loop():
    h = Harness(dialed=True, connect_error=errno.ENOENT, stream=False)

    h.pipe.cmd_open()
    assert h.pipe.state == "connecting"

    h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert h.owner.closed == [h.pipe]
    assert h.loop.writers == {} and h.loop.readers == {}


def test_a_connect_failure_reported_after_a_close_is_ignored(caplog):
    # The report is posted to the loop; a close that runs before it (a session closing
    # while a dialer redials) leaves a dead pipe, which has no connect to fail any more.
    h = Harness(dialed=True, connect_error=errno.ENOENT, stream=False)
    h.pipe.cmd_open()
    h.pipe.cmd_close()
    assert h.pipe.state == "dead"

    with caplog.at_level(logging.DEBUG, logger="scaproust"):
        h.loop.run_ready()

    assert h.pipe.state == "dead"
    assert h.owner.closed == [h.pipe]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- lending the reading to a caller's thread (core/caller_reader.py) ---------------------


def test_a_pipe_whose_loop_cannot_lend_its_reader_is_not_marked_lent(monkeypatch):
    # A selector other than epoll cannot stop watching one reader cheaply: the loop
    # refuses the loan, and the pipe stays the loop's to read (and to fire).
    h = Harness().open_active()
    monkeypatch.setattr(h.loop, "lend_reader", lambda fileobj, alarm=None: False)

    assert not h.pipe.lender.lend()

    assert not h.pipe._lent
    h.receive(tcp_frame(b"read by the loop"))
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [b"read by the loop"])]


def test_a_pipe_half_way_through_a_large_body_is_not_lent_the_loop_finishes_it():
    h = Harness().open_active()
    data = tcp_frame(b"L" * (700 * 1024))
    h.receive(data[:64 * 1024])  # the loop read the start of a large body

    assert not h.pipe.lender.lend()
    h.receive(data[64 * 1024:])
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [data[8:]])]


def test_a_pipe_with_exactly_64_kib_of_a_body_missing_is_not_lent_and_one_byte_less_is():
    for missing, lent in ((64 * 1024, False), (64 * 1024 - 1, True)):
        h = Harness().open_active()
        data = tcp_frame(b"B" * (64 * 1024 - 8 + missing))
        h.receive(data[:64 * 1024])  # one 64 KiB chunk: the prefix and the body's start

        assert h.pipe._decoder.body_missing == missing
        assert h.pipe.lender.lend() is lent


def test_a_lent_pipe_with_exactly_64_kib_of_a_body_missing_is_not_kept_and_one_byte_less_is():
    # keeps() asks what lend() asks (above), for a pipe a caller has read while it held it.
    for missing, kept in ((64 * 1024, False), (64 * 1024 - 1, True)):
        h = Harness().open_active()
        lender = h.pipe.lender
        assert lender.lend()
        h.stream.feed(tcp_frame(b"B" * (64 * 1024 - 8 + missing))[:64 * 1024])
        lender.read()  # the borrower's read: the prefix and the body's start

        assert h.pipe._decoder.body_missing == missing
        assert lender.keeps() is kept


def test_a_pipe_that_carries_large_bodies_is_read_by_the_loop_until_a_chunk_comes():
    # Lending it would make the loop and the callers take turns at one stream of large
    # messages; once a read is an ordinary chunk again, callers may borrow it.
    h = Harness().open_active()
    h.stream.feed(tcp_frame(b"L" * (700 * 1024)))
    h.loop.fire_reader(h.stream)  # a chunk: the prefix and the body's start
    h.loop.fire_reader(h.stream)  # the rest, received straight into the body's buffer
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [b"L" * (700 * 1024)])]

    assert not h.pipe.lender.lend()
    h.receive(tcp_frame(b"small"))
    assert h.pipe.lender.lend()


def test_an_active_reading_pipe_lends_its_reader_once_and_the_loop_stops_firing_it():
    h = Harness().open_active()
    assert h.pipe.lender.lend()
    assert h.stream in h.loop.lent and h.pipe.lender.stream is h.stream
    assert not h.pipe.lender.lend()  # lent already
    h.stream.feed(tcp_frame(b"one"))
    h.pipe.lender.read()  # the caller reads it, the loop does not
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [b"one"])]
    h.pipe.lender.give_back()
    assert h.stream not in h.loop.lent and ("return_reader", h.stream) in h.loop.history
    h.receive(tcp_frame(b"two"))  # the loop fires it again
    assert h.proto.calls[-1] == ("evt_pipe_recv", h.pipe, [b"two"])
    assert h.pipe.lender.lend()  # and the next wait may borrow it again


def test_a_pipe_lends_nothing_before_it_is_active_or_while_paused():
    h = Harness()
    h.pipe.cmd_open()
    h.loop.run_ready()
    assert h.pipe.state == "handshaking" and not h.pipe.lender.lend()
    h.receive(PULL_HEADER)
    h.loop.run_ready()
    h.pipe.cmd_pause()
    assert not h.pipe.lender.lend() and ("lend_reader", h.stream) not in h.loop.history
    h.pipe.cmd_resume()
    assert h.pipe.lender.lend()


def test_giving_back_a_lent_pipe_twice_or_after_its_death_touches_nothing():
    h = Harness().open_active()
    h.pipe.lender.give_back()  # never lent
    assert ("return_reader", h.stream) not in h.loop.history
    assert h.pipe.lender.lend()
    h.stream.feed_eof()
    h.pipe.lender.read()  # the caller finds the peer gone
    h.loop.run_ready()
    assert h.pipe.state == "dead" and h.pipe.lender.stream is None
    h.pipe.lender.read()  # nothing to read from a dead pipe
    h.pipe.lender.give_back()
    assert h.loop.history.count(("return_reader", h.stream)) == 0
    assert h.proto.calls == [("evt_pipe_removed", h.pipe)]


def test_a_lent_pipe_that_dies_wakes_the_caller_sleeping_on_it():
    h = Harness().open_active()
    assert h.pipe.lender.lend()
    h.pipe.cmd_close()  # closed by the loop (the socket closes, say) while a caller polls it
    assert h.pipe.state == "dead" and h.socket.channel.reader_wakes == 1
    other = Harness().open_active()
    other.pipe.cmd_close()  # not lent: nobody to wake
    assert other.socket.channel.reader_wakes == 0


def test_a_read_that_is_not_lent_reads_nothing():
    h = Harness().open_active()
    h.stream.feed(tcp_frame(b"kept"))
    h.stream.recv_sizes.clear()
    h.pipe.lender.read()  # not lent: the loop's job
    assert h.proto.calls == [] and h.stream.recv_sizes == []


def test_the_rest_of_a_body_of_exactly_64_kib_is_received_in_place():
    h = Harness().open_active()
    body = b"b" * (64 * 1024 - 8 + 64 * 1024)  # after the first read, exactly 64 KiB missing
    h.stream.feed(tcp_frame(body))
    h.stream.recv_sizes.clear()
    h.loop.fire_reader(h.stream)
    h.loop.fire_reader(h.stream)
    assert h.stream.recv_into_sizes == [64 * 1024]
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [body])]


def test_a_large_body_waits_for_more_when_nothing_came_and_survives_it_intact():
    h = Harness().open_active()
    body = bytes(range(256)) * 1024  # 256 KiB
    wire = tcp_frame(body)
    h.receive(wire[:64 * 1024])
    h.loop.fire_reader(h.stream)  # readiness with nothing to read: no byte may be counted
    h.receive(wire[64 * 1024:])
    assert h.proto.calls == [("evt_pipe_recv", h.pipe, [body])]


def test_a_peer_that_closes_in_the_middle_of_a_large_body_closes_the_pipe():
    h = Harness().open_active()
    wire = tcp_frame(b"c" * (300 * 1024))
    h.receive(wire[:64 * 1024])
    h.stream.feed_eof()
    h.loop.fire_reader(h.stream)
    h.loop.run_ready()
    assert h.pipe.state == "dead" and h.proto.calls == [("evt_pipe_removed", h.pipe)]


def test_an_error_in_the_middle_of_a_large_body_closes_the_pipe():
    h = Harness().open_active()
    wire = tcp_frame(b"e" * (300 * 1024))
    h.receive(wire[:64 * 1024])
    h.stream.fail_recv(ConnectionResetError(104, "Connection reset by peer"))
    h.loop.fire_reader(h.stream)
    h.loop.run_ready()
    assert h.pipe.state == "dead" and h.proto.calls == [("evt_pipe_removed", h.pipe)]


def test_a_read_of_exactly_64_kib_keeps_a_larger_read_size():
    h = Harness().open_active()
    half = b"".join(tcp_frame(b"%05d" % i + b"y" * 115) for i in range(512))  # 64 KiB
    assert len(half) == 64 * 1024
    h.stream.recv_sizes.clear()
    h.receive(half, half, tcp_frame(b"short"))
    assert [n // 1024 for n in h.stream.recv_sizes] == [64, 128, 128]


def test_a_pipe_whose_header_never_went_out_counts_every_message_lost_to_linger():
    h = Harness(linger=0.5)
    h.stream.block_writes = True  # not even our SP header leaves
    h.pipe.cmd_open()
    h.loop.run_ready()
    h.receive(PULL_HEADER)
    h.loop.run_ready()
    for i in range(3):
        h.pipe.cmd_send(b"%d" % i)
    h.pipe.cmd_close()
    h.loop.advance(0.5)
    h.loop.run_ready()
    assert h.pipe.state == "dead" and h.stats.snapshot().get("dropped_linger") == 3


def test_a_lent_pipe_that_dies_calls_its_on_stop_before_its_stream_closes():
    h = Harness().open_active()
    seen = []
    h.pipe.lender.on_stop = lambda: seen.append(h.stream.closed)
    h.pipe.cmd_close()  # not lent: nobody is told
    assert seen == []
    h = Harness().open_active()
    h.pipe.lender.on_stop = lambda: seen.append(h.stream.closed)
    assert h.pipe.lender.lend()
    h.pipe.cmd_close()
    assert seen == [False] and h.stream.closed


def test_only_a_lent_pipe_that_still_reads_small_frames_may_stay_lent():
    # A wait keeps its loan for the next one only while each pipe is lent and would be
    # lent again now (core/caller_reader.py, "kept").
    h = Harness().open_active()
    lender = h.pipe.lender
    assert not lender.keeps()  # not lent
    assert lender.lend()
    assert lender.keeps()
    h.pipe.cmd_pause()
    assert not lender.keeps()  # paused: the loop reads it once resumed
    h.pipe.cmd_resume()
    assert lender.keeps()
    lender.give_back()
    assert not lender.keeps()
    h.pipe.cmd_close()
    assert lender.lend() is False and not lender.keeps()


def test_a_lent_pipe_that_pauses_calls_its_on_stop_once():
    # An event loop that keeps the pipe lent would go on reading it (caller_reader.py):
    # told, it gives the loan back, and the pause holds.
    h = Harness().open_active()
    seen = []
    h.pipe.lender.on_stop = lambda: seen.append(h.pipe._watching)
    h.pipe.cmd_pause()  # not lent: nobody is told
    assert seen == []
    h.pipe.cmd_resume()
    assert h.pipe.lender.lend()
    h.pipe.cmd_pause()
    h.pipe.cmd_pause()  # paused already
    assert seen == [False]
    assert h.stream not in h.loop.readers


