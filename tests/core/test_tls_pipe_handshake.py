"""The TLS handshake phase (``tls_handshaking``) of the two pipes that run one, a
``tls+tcp`` pipe (machine ``tls_pipe``) and a dialed ``wss`` pipe (machine ``wss_pipe``),
sans-IO with a real TLS peer in memory (tls_harness.py).

What is pinned: a dialed pipe connects first and then speaks TLS as the client, its TCP
socket tuned once; the handshake's timer gives way to the next phase's own; a failed
handshake (bad bytes, the peer closing, the timer firing) is counted in ``tls_handshake_failures`` and logged once, with the reason,
and the pipe dies at once; a socket error is logged at debug and not counted as a failed
handshake.
"""

from __future__ import annotations

import errno
import logging

import pytest

from tests.core.tls_harness import SPHarness, TLSHarness, WSSHarness, problems


@pytest.fixture(params=["tls", "wss"])
def dialed(request) -> TLSHarness:
    """A dialed pipe of either kind, not opened yet."""
    return SPHarness(dialed=True, handshake_timeout=2.0) if request.param == "tls" \
        else WSSHarness(handshake_timeout=2.0)


def test_a_dialed_pipe_connects_first_then_is_the_tls_client(dialed):
    h = dialed

    h.pipe.cmd_open()
    assert h.pipe.state == "connecting"
    assert h.pipe.stream is h.raw  # no TLS yet
    h.loop.fire_writer(h.raw)
    assert h.pipe.state == "tls_handshaking"

    h.handshake()  # the rest of the way, as the client

    assert h.transport.configured == [h.raw]  # the TCP socket's options, set once
    assert h.pipe.peer_subject.startswith("O=trustme")  # the server's, verified
    assert h.socket.stats.snapshot() == {}


def test_the_handshake_timer_gives_way_to_the_next_phases_own(dialed):
    h = dialed
    h.open()
    h.loop.advance(1.5)  # a slow TLS handshake, within its 2 s

    h.tls_handshake()

    assert h.pipe.state == "handshaking"
    (timer,) = h.loop.pending_timers()  # the TLS handshake's is gone
    assert timer.when == h.loop.time() + 2.0
    h.loop.advance(1.999)
    assert h.pipe.state == "handshaking"


def test_a_handshake_stuck_on_a_full_socket_times_out_and_its_writer_goes_with_it(dialed):
    h = dialed
    h.open()
    h.raw.room = 0  # the peer reads nothing: our hello cannot leave

    h.loop.run_ready()
    assert h.loop.writers[h.pipe.stream].__name__ == "_tls_step"  # waiting to send it
    h.loop.advance(2.0)

    assert h.is_gone()  # the handshake's writer removed, not left on a closed socket
    assert h.socket.stats.snapshot() == {"tls_handshake_failures": 1}


def test_a_handshake_not_done_within_the_handshake_timeout_fails_counted_and_logged(dialed,
                                                                                   caplog):
    h = dialed
    h.open()
    h.loop.run_ready()  # our hello goes out; no answer comes

    h.loop.advance(1.999)
    assert h.pipe.state == "tls_handshaking"
    h.loop.advance(0.001)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {"tls_handshake_failures": 1}
    assert problems(caplog) == [
        f"pipe {h.pipe.id} to {h.url}: TLS handshake failed: not complete within "
        "handshake_timeout=2.0s"]


def test_a_server_that_does_not_speak_tls_fails_the_handshake_counted_and_logged(dialed,
                                                                                  caplog):
    h = dialed
    h.open()
    h.loop.run_ready()  # our hello goes out

    h.raw.inbox += b"HTTP/1.1 400 Bad Request\r\n\r\n"
    h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {"tls_handshake_failures": 1}
    (warning,) = problems(caplog)
    assert warning.startswith(f"pipe {h.pipe.id} to {h.url}: TLS handshake failed: ")


def test_a_peer_that_closes_during_the_handshake_fails_it_counted_and_logged(dialed, caplog):
    h = dialed
    h.open()
    h.loop.run_ready()

    h.raw.eof = True
    h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()
    assert h.socket.stats.snapshot() == {"tls_handshake_failures": 1}
    assert problems(caplog) == [
        f"pipe {h.pipe.id} to {h.url}: TLS handshake failed: the peer closed the connection "
        "(it may have refused our certificate, or sent none we could check)"]


def test_a_reset_during_the_handshake_ends_the_pipe_logged_but_not_counted(dialed, caplog):
    h = dialed
    h.open()
    h.loop.run_ready()  # our hello goes out

    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.raw.recv_error = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        h.loop.fire_reader(h.pipe.stream)

    assert h.is_gone()  # at once: nothing is left to send
    assert h.socket.stats.snapshot() == {}
    assert problems(caplog) == []
    assert f"pipe {h.pipe.id} to {h.url} failed: [Errno {errno.ECONNRESET}] Connection reset " \
           "by peer" in [r.getMessage() for r in caplog.records]
