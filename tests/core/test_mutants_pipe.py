"""More of the pipe machine (protocols.yaml, machine ``pipe``; core/pipe.py), with the
harness of test_pipe.py: rows and orderings that the other tests left unpinned (written to
kill the mutants of ``make mutate`` that survived them).
"""

from __future__ import annotations

import logging
import struct

import pytest

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
