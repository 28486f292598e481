"""The TLS pipe's closing phase (protocols.yaml, machine ``tls_pipe``; core/tls_pipe.py),
sans-IO: a fake loop, a scripted TCP socket, and a real TLS client in memory at the other
end (tls_harness.py), so that close_notify and the records before it are checked by the
peer that decrypts them. The handshake phase, shared with wss pipes, is
test_tls_pipe_handshake.py's.

What is pinned: queued output leaves before close_notify, however slowly the socket
takes it; close_notify is sent at once and the pipe dies on the next loop turn without
waiting for the peer's; what the peer sends meanwhile (messages, a bad frame, its own
close, a reset) ends the pipe the way the table says, counted and logged exactly.
"""

from __future__ import annotations

import errno
import logging

import pytest

from tests.core.tls_harness import PULL_HEADER, SPHarness, frame, problems


@pytest.fixture
def h() -> SPHarness:
    return SPHarness().open_active()


# ---------------------------------------------------------------- the TLS handshake


def test_an_accepted_pipe_starts_its_tls_handshake_at_once():
    h = SPHarness()

    h.pipe.cmd_open()

    assert h.pipe.state == "tls_handshaking"
    assert h.loop.writers == {}
    assert list(h.loop.readers) == [h.pipe.stream]


def test_a_client_that_does_not_speak_tls_fails_the_handshake_counted_and_logged(caplog):
    h = SPHarness()
    h.pipe.cmd_open()

    h.raw.inbox += b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    h.loop.run_ready()

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {"tls_handshake_failures": 1}
    (warning,) = problems(caplog)
    assert warning.startswith(f"pipe {h.pipe.id} from tls+tcp://127.0.0.1:5555: TLS handshake "
                              f"failed: HTTP_REQUEST ([SSL: HTTP_REQUEST] http request")


# ---------------------------------------------------------------- a clean close


def test_a_close_with_nothing_queued_sends_close_notify_at_once_and_dies_next_turn(h, caplog):
    h.pipe.cmd_close()

    assert h.pipe.state == "tls_closing"
    h.peer.pump()
    assert h.peer.closed  # sent from the transition itself, not from a later flush
    assert h.peer.received == b""

    h.loop.run_ready()

    assert h.is_gone()
    assert h.owner.closed == [h.pipe]
    assert h.socket.stats.snapshot() == {}
    assert problems(caplog) == []


def test_messages_queued_before_the_close_reach_the_peer_before_close_notify(h):
    h.pipe.cmd_send(b"one")
    h.pipe.cmd_send(b"two")
    h.pipe.cmd_close()

    assert h.pipe.state == "closing"  # the output first
    h.peer.pump()
    assert not h.peer.closed

    h.loop.run_ready()

    h.peer.pump()
    assert h.peer.received == frame(b"one") + frame(b"two")
    assert h.peer.closed
    assert h.is_gone()
    assert h.socket.stats.snapshot() == {}


def test_output_the_socket_takes_slowly_is_all_sent_before_close_notify(h):
    h.raw.room = 7  # a kernel buffer that takes a few bytes each time it is writable
    h.pipe.cmd_send(b"x" * 100)
    h.pipe.cmd_close()
    h.loop.run_ready()

    for _ in range(5):  # 35 bytes of a record of more than 100
        assert h.pipe.state == "closing"  # part of the output is still queued
        h.peer.pump()
        assert not h.peer.closed
        h.raw.room = 7
        h.loop.fire_writer(h.pipe.stream)
    assert h.pipe.state == "closing"
    h.raw.room = None
    h.loop.fire_writer(h.pipe.stream)
    assert h.pipe.state == "tls_closing"
    h.loop.run_ready()

    h.peer.pump()
    assert h.peer.received == frame(b"x" * 100)
    assert h.peer.closed
    assert h.is_gone()
    assert h.socket.stats.snapshot() == {}


def test_a_close_within_linger_keeps_the_pipe_closing_until_the_socket_takes_its_output(h):
    h.raw.room = 0  # the socket takes nothing
    h.pipe.cmd_send(b"late")
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "closing"

    h.loop.advance(h.socket.options.linger / 2)
    assert h.pipe.state == "closing"
    h.raw.room = None
    h.loop.fire_writer(h.pipe.stream)
    h.loop.run_ready()

    h.peer.pump()
    assert h.peer.received == frame(b"late")
    assert h.peer.closed
    assert h.is_gone()


# ---------------------------------------------------------------- the peer, while close_notify leaves


def test_messages_arriving_after_close_notify_are_counted_as_dropped_not_delivered(h, caplog):
    h.pipe.cmd_close()

    h.peer_sends(frame(b"a") + frame(b"b"))

    assert h.pipe.state == "tls_closing"
    assert h.socket.stats.snapshot() == {"dropped_closing": 2}
    assert h.socket.proto.received == []
    h.loop.run_ready()
    assert h.is_gone()
    assert problems(caplog) == []


def test_a_bad_frame_after_close_notify_is_counted_and_logged(caplog):
    h = SPHarness(recv_max_size=16).open_active()
    h.pipe.cmd_close()

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        h.peer_sends(frame(b"ok") + frame(b"z" * 17))

    assert h.is_gone()  # at once, not on the next turn
    assert h.socket.stats.snapshot() == {"dropped_closing": 1, "dropped_oversize": 1}
    assert problems(caplog) == [
        f"pipe {h.pipe.id} from tls+tcp://127.0.0.1:5555 closed: a 17-byte message exceeds "
        "recv_max_size=16 (raise the recv_max_size option, 0 = unlimited)"]


def test_the_peers_close_notify_ends_the_closing_pipe_at_once_and_quietly(h, caplog):
    h.pipe.cmd_close()

    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.peer.pump()
        h.peer.send_close_notify()
        h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {}
    assert not any("closed the connection" in r.getMessage() for r in caplog.records)
    assert problems(caplog) == []
    h.loop.run_ready()
    assert h.pipe.state == "dead"
    assert h.owner.closed == [h.pipe]


def test_a_connection_dropped_without_close_notify_ends_the_closing_pipe_quietly(h, caplog):
    h.pipe.cmd_close()

    h.raw.eof = True
    h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {}
    assert problems(caplog) == []


def test_a_reset_while_closing_ends_the_pipe_without_an_error_logged(h, caplog):
    h.pipe.cmd_close()

    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.raw.recv_error = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {}
    assert not any("reset" in r.getMessage() for r in caplog.records)


def test_a_tls_error_right_behind_the_peers_header_ends_the_pipe_in_the_same_read(caplog):
    # The header makes the pipe active; the error is kept for the next read, which no
    # readiness of the socket would ever bring.
    h = SPHarness()
    h.open()
    h.tls_handshake()
    h.turn()
    h.peer.send(PULL_HEADER + frame(b"first"))
    h.raw.inbox += b"\x17\x03\x03\x00\x20" + bytes(range(32))  # fails its integrity check
    h.loop.fire_reader(h.pipe.stream)

    assert h.socket.proto.received == [b"first"]
    assert h.is_gone()
    assert "closed: TLS error: [SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]" in caplog.text
