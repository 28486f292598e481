"""The WebSocket pipe's refusal and closing phases (protocols.yaml, machine ``ws_pipe``;
core/ws_pipe.py), sans-IO: a fake loop and a scripted stream, an accepted pipe whose
port already read the upgrade request (transports/ws.py does that part).

What is pinned (RFC 6455, section 7): our close (``ws_closing``) sends a 1000 close frame
after any queued output and waits at most ``CLOSE_TIMEOUT`` for the peer's; a close the
peer starts, or a violation of the protocol (``ws_dropping``), is answered with a close
frame carrying the code it calls for (1000, 1002, 1003, 1009), and the pipe dies once it
left; what arrives meanwhile ends or is dropped as the table says, counted and logged
exactly. A refused upgrade (``ws_refusing``) sends its 400 answer and dies once it left.
"""

from __future__ import annotations

import errno
import logging
import struct

import pytest
from protocols.fakes import FakeLoop, FakeOwner, FakeSocket, FakeStream, FakeTransport

from scaproust import protocols
from scaproust.core.options import Options
from scaproust.core.pipe import Publication
from scaproust.core.ws_pipe import CLOSE_TIMEOUT, WSPipe
from scaproust.transports.wscodec import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    build_request,
    encode_close,
    encode_control,
    encode_message,
    parse_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
PEER = "ws://127.0.0.1:5555/"


class WsStream(FakeStream):
    """An accepted connection as the WebSocket port hands it over: the request it read,
    and the bytes that came behind the request's head."""

    def __init__(self, request: bytes) -> None:
        super().__init__()
        self.request = parse_request(request)
        self.leftover = b""


def request(protocol: str = "push.sp.nanomsg.org") -> bytes:
    return build_request("127.0.0.1:5555", "/", KEY, protocol)


def message(payload: bytes) -> bytes:
    """One binary message from the client (masked, as a client must)."""
    return b"".join(encode_message((payload,), masked=True))


def close_frame(code: int, reason: str = "") -> bytes:
    return encode_close(code, reason, masked=True)


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """The frames a server wrote (never masked): (opcode, payload) each."""
    out = []
    at = 0
    while at < len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack_from(">H", data, at)
            at += 2
        elif length == 127:
            (length,) = struct.unpack_from(">Q", data, at)
            at += 8
        out.append((opcode, bytes(data[at:at + length])))
        at += length
    return out


def closed_with(code: int, reason: str = "") -> tuple[int, bytes]:
    return OP_CLOSE, struct.pack(">H", code) + reason.encode()


class WSHarness:
    """An accepted PUSH WebSocket pipe and its doubles."""

    def __init__(self, upgrade: bytes | None = None, **options) -> None:
        self.loop = FakeLoop()
        self.stream = WsStream(upgrade if upgrade is not None else request())
        self.socket = FakeSocket(protocols.Push, Options(**options))
        self.owner = FakeOwner()
        self.pipe = WSPipe(loop=self.loop, stream=self.stream, transport=FakeTransport(),
                           socket=self.socket, owner=self.owner, dialed=False, peer_addr=PEER)

    @property
    def stats(self) -> dict[str, int]:
        return self.socket.stats.snapshot()

    def open_active(self) -> WSHarness:
        """Upgrade answered with 101, then what was written is forgotten."""
        self.pipe.cmd_open()
        self.loop.run_ready()
        assert self.pipe.state == "active"
        assert self.stream.written.startswith(b"HTTP/1.1 101 ")
        self.stream.written.clear()
        self.socket.proto.calls.clear()
        return self

    def receive(self, data: bytes) -> None:
        self.stream.feed(data)
        self.loop.fire_reader(self.stream)

    def sent(self) -> list[tuple[int, bytes]]:
        return frames_of(bytes(self.stream.written))

    def is_gone(self) -> bool:
        return (self.pipe.state == "dead" and self.stream.closed and not self.loop.readers
                and not self.loop.writers and not self.loop.pending_timers())


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def debug_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.DEBUG and "WebSocket" in r.getMessage()]


@pytest.fixture
def h() -> WSHarness:
    return WSHarness().open_active()


@pytest.fixture
def ws_closing(h) -> WSHarness:
    """Closed by us: our 1000 close frame sent, the peer's awaited."""
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "ws_closing"
    assert h.sent() == [closed_with(1000)]
    return h


@pytest.fixture
def ws_dropping(h) -> WSHarness:
    """Closed by the peer, our answer not sent yet (the socket takes nothing)."""
    h.stream.block_writes = True
    h.receive(close_frame(1001, "going away"))
    h.loop.run_ready()
    assert h.pipe.state == "ws_dropping"
    return h


# ---------------------------------------------------------------- our close: ws_closing


def test_closing_sends_a_1000_close_frame_and_waits_for_the_peers(h, caplog):
    h.pipe.cmd_close()

    assert h.pipe.state == "ws_closing"
    h.loop.run_ready()
    assert h.sent() == [closed_with(1000)]
    assert [t.when - h.loop.time() for t in h.loop.pending_timers()] == [CLOSE_TIMEOUT]
    assert h.pipe.state == "ws_closing"  # its leaving changes nothing

    h.receive(close_frame(1000))

    assert h.is_gone()
    assert h.sent() == [closed_with(1000)]  # the peer's answer is not answered
    assert h.stats == {}
    assert warnings_of(caplog) == []


def test_messages_queued_before_the_close_leave_before_the_close_frame(h):
    h.pipe.cmd_send(b"one")
    h.pipe.cmd_send(b"two")
    h.pipe.cmd_close()
    assert h.pipe.state == "closing"

    h.loop.run_ready()

    assert h.sent() == [(OP_BINARY, b"one"), (OP_BINARY, b"two"), closed_with(1000)]
    assert h.pipe.state == "ws_closing"


@pytest.mark.parametrize(("state", "sent"), [
    ("ws_closing", [closed_with(1000)]),  # the peer never answers our close
    ("ws_dropping", []),  # our answer to the peer's close cannot leave
])
def test_the_close_timeout_bounds_both_closing_states(request, state, sent):
    h = request.getfixturevalue(state)

    h.loop.advance(CLOSE_TIMEOUT - 0.001)
    assert h.pipe.state == state
    h.loop.advance(0.001)

    assert h.is_gone()
    assert h.sent() == sent
    assert h.stats == {}


def test_closing_again_while_awaiting_the_peers_close_sends_nothing_more(ws_closing):
    h = ws_closing

    h.pipe.cmd_close()
    h.loop.run_ready()

    assert h.pipe.state == "ws_closing"
    assert h.sent() == [closed_with(1000)]
    assert len(h.loop.pending_timers()) == 1


def test_messages_before_the_peers_close_are_dropped_and_counted(ws_closing):
    h = ws_closing

    h.receive(message(b"a") + message(b"b"))

    assert h.pipe.state == "ws_closing"
    assert h.stats == {"dropped_closing": 2}
    assert h.socket.proto.received == []
    h.receive(close_frame(1000))
    assert h.is_gone()


@pytest.mark.parametrize("bad", [
    bytes((0x81, 0x80)) + b"abcd",  # a text frame
    bytes((0x82, 0x01)) + b"x",  # unmasked
], ids=["text", "unmasked"])
def test_a_bad_frame_while_awaiting_the_peers_close_ends_the_pipe_quietly(ws_closing, bad,
                                                                           caplog):
    h = ws_closing

    h.receive(message(b"ok") + bad)

    assert h.is_gone()
    assert h.sent() == [closed_with(1000)]  # our close said it all
    assert h.stats == {"dropped_closing": 1}
    assert warnings_of(caplog) == []


def test_the_connection_ending_while_awaiting_the_peers_close_ends_the_pipe(ws_closing, caplog):
    h = ws_closing

    h.stream.feed_eof()
    h.loop.fire_reader(h.stream)

    assert h.is_gone()
    assert h.stats == {}
    assert warnings_of(caplog) == []


def test_a_reset_while_awaiting_the_peers_close_ends_the_pipe_quietly(ws_closing, caplog):
    h = ws_closing

    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.stream.fail_recv(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
        h.loop.fire_reader(h.stream)

    assert h.is_gone()
    assert h.stats == {}  # not even a pipe error
    assert not any("reset" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- the peer's close: ws_dropping


def test_the_peers_close_is_answered_with_1000_and_the_pipe_dies_once_it_left(h, caplog):
    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.receive(close_frame(1001, "going away"))

        assert h.pipe.state == "ws_dropping"
        assert h.socket.proto.calls == [("evt_pipe_removed", h.pipe)]
        h.loop.run_ready()

    assert h.sent() == [closed_with(1000)]
    assert h.is_gone()
    assert debug_of(caplog) == [f"pipe {h.pipe.id}: {PEER} closed the WebSocket (code 1001)"]
    assert h.stats == {}


def test_the_answer_to_the_peers_close_may_leave_in_pieces(h):
    h.stream.accept_per_call = 1
    h.receive(close_frame(1000))
    h.loop.run_ready()

    assert h.pipe.state == "ws_dropping"  # one byte of four went out
    h.stream.accept_per_call = None
    h.loop.fire_writer(h.stream)

    assert h.sent() == [closed_with(1000)]
    assert h.is_gone()


def test_a_peer_that_closes_while_we_flush_is_answered_after_our_output(h, caplog):
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()
    assert h.pipe.state == "closing"

    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        h.receive(close_frame(1000))
    assert h.pipe.state == "ws_dropping"
    assert debug_of(caplog) == [f"pipe {h.pipe.id}: {PEER} closed the WebSocket (code 1000)"]
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)

    assert h.sent() == [(OP_BINARY, b"bye"), closed_with(1000)]
    assert h.is_gone()


def test_bytes_after_the_peers_close_frame_end_the_pipe_at_once(ws_dropping, caplog):
    h = ws_dropping

    h.receive(message(b"late"))  # a peer must send nothing after its close frame

    assert h.is_gone()  # our answer, still queued, is given up
    assert h.sent() == []
    assert h.stats == {}
    assert warnings_of(caplog) == []


def test_closing_while_answering_the_peers_close_changes_nothing(ws_dropping):
    h = ws_dropping

    h.pipe.cmd_close()

    assert h.pipe.state == "ws_dropping"
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)
    assert h.sent() == [closed_with(1000)]
    assert h.is_gone()


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_the_connection_ending_while_answering_the_peers_close_ends_the_pipe(ws_dropping, how,
                                                                            caplog):
    h = ws_dropping

    if how == "eof":
        h.stream.feed_eof()
    else:
        h.stream.fail_recv(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
    h.loop.fire_reader(h.stream)

    assert h.is_gone()
    assert h.sent() == []
    assert h.stats == {}
    assert warnings_of(caplog) == []


# ---------------------------------------------------------------- violations: ws_dropping


@pytest.mark.parametrize(("bad", "code", "stat", "reason"), [
    (bytes((0x81, 0x80)) + b"abcd", 1003, "dropped_malformed",
     "a text frame: the SP mapping carries binary messages only"),
    (bytes((0x82, 0x01)) + b"x", 1002, "dropped_malformed", "an unmasked frame from a client"),
    (message(b"z" * 17), 1009, "dropped_oversize", None),
], ids=["text", "unmasked", "oversize"])
def test_a_violation_is_answered_with_its_close_code_counted_and_logged(bad, code, stat, reason,
                                                                       caplog):
    h = WSHarness(recv_max_size=16).open_active()

    h.receive(message(b"ok") + bad)

    assert h.pipe.state == "ws_dropping"
    assert h.socket.proto.received == [b"ok"]  # what came before it still counts
    h.loop.run_ready()
    assert h.is_gone()
    (answer,) = h.sent()
    assert answer[0] == OP_CLOSE
    assert struct.unpack(">H", answer[1][:2]) == (code,)
    assert h.stats == {stat: 1}
    (warning,) = warnings_of(caplog)
    assert warning.startswith(f"pipe {h.pipe.id} from {PEER} closed: ")
    if reason is not None:
        assert answer == closed_with(code, reason)
        assert warning.endswith(reason)


def test_a_violation_while_flushing_our_output_is_answered_after_it(caplog):
    h = WSHarness().open_active()
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()

    h.receive(bytes((0x81, 0x80)) + b"abcd")

    assert h.pipe.state == "ws_dropping"
    assert h.stats == {"dropped_malformed": 1}
    assert len(warnings_of(caplog)) == 1
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)
    assert h.sent() == [(OP_BINARY, b"bye"), closed_with(1003, "a text frame: the SP mapping "
                                                               "carries binary messages only")]
    assert h.is_gone()


def test_bytes_after_a_violation_end_the_pipe_at_once_without_counting_it_twice(h, caplog):
    h.stream.block_writes = True
    h.receive(bytes((0x82, 0x01)) + b"x")  # unmasked
    assert h.pipe.state == "ws_dropping"

    h.receive(message(b"more"))  # the decoder refuses everything after a violation

    assert h.is_gone()
    assert h.sent() == []
    assert h.stats == {"dropped_malformed": 1}
    assert len(warnings_of(caplog)) == 1


# ---------------------------------------------------------------- pings while closing


def test_a_ping_while_flushing_is_answered_and_one_while_awaiting_the_close_is_not(h):
    h.stream.block_writes = True
    h.pipe.cmd_send(b"bye")
    h.pipe.cmd_close()
    h.loop.run_ready()
    h.receive(encode_control(OP_PING, b"p1", masked=True))
    h.stream.block_writes = False
    h.loop.fire_writer(h.stream)
    h.loop.run_ready()
    assert h.pipe.state == "ws_closing"

    h.receive(encode_control(OP_PING, b"p2", masked=True))
    h.loop.run_ready()

    assert h.sent() == [(OP_BINARY, b"bye"), (OP_PONG, b"p1"), closed_with(1000)]


# ---------------------------------------------------------------- a refused upgrade: ws_refusing


def test_a_refused_upgrade_is_answered_400_counted_logged_and_the_pipe_dies_once_it_left(caplog):
    h = WSHarness(request("pull.sp.nanomsg.org"))

    h.pipe.cmd_open()
    h.loop.run_ready()

    assert h.is_gone()
    head, _, body = bytes(h.stream.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == b"subprotocol 'push.sp.nanomsg.org' not offered " \
                   b"(offered: 'pull.sp.nanomsg.org')\n"
    assert h.stats == {"dropped_malformed": 1}
    assert warnings_of(caplog) == [
        f"pipe {h.pipe.id} from {PEER} closed: WebSocket upgrade refused with 400: subprotocol "
        "'push.sp.nanomsg.org' not offered (offered: 'pull.sp.nanomsg.org')"]
    assert h.socket.opened == []


def test_a_refusal_that_leaves_in_pieces_keeps_the_pipe_until_it_is_all_sent():
    h = WSHarness(request("pull.sp.nanomsg.org"))
    h.stream.accept_per_call = 10

    h.pipe.cmd_open()
    h.loop.run_ready()

    assert h.pipe.state == "ws_refusing"
    while h.stream in h.loop.writers:
        h.loop.fire_writer(h.stream)
        assert h.pipe.state in ("ws_refusing", "dead")
    assert bytes(h.stream.written).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert bytes(h.stream.written).endswith(b"\n")
    assert h.is_gone()


def test_a_refusal_the_peer_never_reads_is_given_up_after_the_handshake_timeout():
    h = WSHarness(request("pull.sp.nanomsg.org"), handshake_timeout=2.0)
    h.stream.block_writes = True
    h.pipe.cmd_open()
    h.loop.run_ready()

    h.loop.advance(1.999)
    assert h.pipe.state == "ws_refusing"
    h.loop.advance(0.001)

    assert h.is_gone()
    assert h.stats == {"dropped_malformed": 1}


def test_a_refusal_that_fails_to_leave_ends_the_pipe(caplog):
    h = WSHarness(request("pull.sp.nanomsg.org"))
    h.stream.send_error = BrokenPipeError(errno.EPIPE, "Broken pipe")

    h.pipe.cmd_open()
    h.loop.run_ready()

    assert h.is_gone()
    assert h.stats == {"dropped_malformed": 1}
    assert len(warnings_of(caplog)) == 1  # the refusal's, nothing about the broken pipe


def test_frames_behind_the_upgrade_request_come_before_those_read_after_it():
    # A client may send its first message right behind its request: the port hands those
    # bytes over with the request, and they must reach the socket before anything the
    # pipe reads once active (a caller's thread that borrows it reads at once).
    h = WSHarness()
    h.stream.leftover = message(b"zero")
    h.pipe.cmd_open()
    answer, args = h.loop.ready.popleft()  # the request answered: the pipe is active
    answer(*args)
    assert h.pipe.state == "active"

    h.receive(message(b"one"))  # read before the loop's next round
    h.loop.run_ready()

    assert h.socket.proto.received == [b"zero", b"one"]


# ---------------------------------------------------------------- a batch (PUSH)


def test_a_batch_goes_out_as_one_websocket_message_per_body_in_order(h):
    bodies = [b"one", b"two", b"x" * 200]

    h.pipe.cmd_send_many(bodies)
    h.loop.run_ready()

    assert bodies == []
    assert h.sent() == [(OP_BINARY, b"one"), (OP_BINARY, b"two"), (OP_BINARY, b"x" * 200)]


def test_a_batch_stops_where_the_pipe_has_no_room_as_sends_one_by_one_would():
    batched, single = (WSHarness(send_buffer=3).open_active() for _ in range(2))
    bodies = [b"%d" % n for n in range(6)]
    for w in (batched, single):
        w.stream.block_writes = True

    left = list(bodies)
    batched.pipe.cmd_send_many(left)
    taken = 0
    while single.pipe.free:
        single.pipe.cmd_send(bodies[taken])
        taken += 1

    assert 0 < taken < len(bodies) and left == bodies[taken:]
    assert [bytes(b) for b in batched.pipe._out] == [bytes(b) for b in single.pipe._out]
    assert batched.pipe._out_msgs == single.pipe._out_msgs == taken


def test_a_published_batch_goes_out_one_websocket_message_each_the_rest_missed():
    h = WSHarness(send_buffer=4).open_active()
    h.stream.block_writes = True
    batch = Publication([b"a", b"b", b"c", b"d", b"e"])

    h.pipe.cmd_publish_many(batch)

    assert 0 < batch.missed < 5
    taken = 5 - batch.missed
    h.stream.block_writes = False
    h.loop.run_ready()
    assert h.sent() == [(OP_BINARY, body) for body in batch.bodies[:taken]]
