"""A dialed wss pipe once its TLS handshake is over (machine ``wss_pipe``, which extends
``ws_pipe``; core/ws_pipe.py), sans-IO with a real TLS server in memory (tls_harness.py):
the upgrade request and the frames travel inside TLS, and the session ends with the
WebSocket close handshake alone, without close_notify (the machine's doc says why).
"""

from __future__ import annotations

import pytest

from scaproust.transports.wscodec import (
    WsDecoder,
    build_response,
    encode_close,
    encode_message,
    parse_request,
)
from tests.core.tls_harness import WSSHarness


@pytest.fixture
def h() -> WSSHarness:
    return WSSHarness().open_active()


def from_server(payload: bytes) -> bytes:
    return b"".join(encode_message((payload,), masked=False))


def test_the_upgrade_asks_for_the_dialed_path_and_the_peers_subprotocol(h):
    request = h.request

    assert (request.method, request.target) == ("GET", "/sp")
    assert request.headers["host"] == "127.0.0.1:5555"
    assert request.headers["sec-websocket-protocol"] == "pull.sp.nanomsg.org"


def test_messages_travel_as_websocket_frames_inside_tls(h):
    h.pipe.cmd_send(b"up")
    h.loop.run_ready()
    h.peer_sends(from_server(b"down"))

    h.peer.pump()
    decoder = WsDecoder(masked=True, max_size=0)  # a client masks what it sends
    assert decoder.feed(bytes(h.peer.received)) == [b"up"]
    assert h.socket.proto.received == [b"down"]


def test_the_close_handshake_ends_the_session_without_close_notify(h):
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "ws_closing"

    h.peer_sends(encode_close(1000, masked=False))

    assert h.is_gone()
    h.peer.pump()
    decoder = WsDecoder(masked=True, max_size=0)
    assert decoder.feed(bytes(h.peer.received)) == []
    assert decoder.close == (1000, "")
    assert not h.peer.closed
    assert h.socket.stats.snapshot() == {}


def answered_with(behind: bytes) -> WSSHarness:
    """A dialed pipe whose peer has sent its 101 answer with ``behind`` right after it,
    not read yet."""
    h = WSSHarness()
    h.open()
    h.tls_handshake()
    h.turn()
    key = parse_request(bytes(h.peer.received)).headers["sec-websocket-key"]
    h.peer.send(build_response(key, "pull.sp.nanomsg.org") + behind)
    return h


def test_frames_behind_the_upgrade_answer_come_before_those_read_after_it():
    # The peer's first message can share a read with its 101 answer (a publisher sends as
    # soon as its end is up). It must reach the socket before anything read later: a
    # caller's thread that borrows the pipe reads it as soon as the pipe is active, before
    # the loop runs anything it deferred (a CI run once received 1..99 then 0).
    h = answered_with(from_server(b"zero"))
    h.loop.fire_reader(h.pipe.stream)
    assert h.pipe.state == "active"

    h.peer_sends(from_server(b"one"))  # read before the loop's next round
    h.loop.run_ready()

    assert h.socket.proto.received == [b"zero", b"one"]


# A record that fails TLS's integrity check, as a peer's broken stack would send.
BAD_RECORD = b"\x17\x03\x03\x00\x20" + bytes(range(32))


def test_a_close_notify_behind_the_last_message_ends_the_pipe_in_the_same_read(h):
    # A peer that closes TLS and waits for ours sends nothing more: no readiness would say
    # so, and the pipe (a PAIR's, say) would stay for ever, refusing the next peer.
    h.peer.send(from_server(b"last"))
    h.peer.send_close_notify()
    h.loop.fire_reader(h.pipe.stream)

    assert h.socket.proto.received == [b"last"]
    assert h.is_gone()


def test_a_tls_error_behind_the_last_message_ends_the_pipe_in_the_same_read(h, caplog):
    h.peer.send(from_server(b"good"))
    h.raw.inbox += BAD_RECORD
    h.loop.fire_reader(h.pipe.stream)

    assert h.socket.proto.received == [b"good"]
    assert h.is_gone()
    assert "closed: TLS error: [SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]" in caplog.text


def test_a_close_notify_behind_the_upgrade_answer_ends_the_pipe_in_the_same_read():
    h = answered_with(from_server(b"only"))
    h.peer.send_close_notify()
    h.loop.fire_reader(h.pipe.stream)

    assert h.socket.proto.received == [b"only"]
    assert h.is_gone()
