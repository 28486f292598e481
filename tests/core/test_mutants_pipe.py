"""More of the pipe machine (protocols.yaml, machine ``pipe``; core/pipe.py), with the
harness of test_pipe.py: rows and orderings that the other tests left unpinned (written to
kill the mutants of ``make mutate`` that survived them).
"""

from __future__ import annotations

import logging
import struct

import pytest

from scaproust.core.guard import crash
from scaproust.core.pipe import HIGH_WATER, JOIN_MAX

from .test_pipe import PULL_HEADER, Harness, tcp_frame


def closing(h: Harness) -> Harness:
    """An active pipe closed with output it cannot write yet: it lingers in ``closing``."""
    h.open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "closing"
    return h


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


def test_every_pipe_gets_its_own_id_of_at_most_31_bits():
    ids = [Harness().pipe.id for _ in range(3)]

    assert len(set(ids)) == 3
    assert all(0 < pipe_id < 2**31 for pipe_id in ids)


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


def test_pause_after_a_resume_stops_reading_again():
    h = Harness().open_active()
    h.pipe.cmd_pause()
    h.pipe.cmd_resume()
    assert h.stream in h.loop.readers

    h.pipe.cmd_pause()

    assert h.stream not in h.loop.readers


def test_a_body_of_exactly_join_max_bytes_is_joined_with_its_prefix_into_one_buffer():
    h = Harness().open_active()
    body = b"j" * JOIN_MAX

    h.pipe.cmd_send(body)
    h.loop.run_ready()

    assert [bytes(b) for b in h.stream.sendmsg_calls[-1]] == [tcp_frame(body)]


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
