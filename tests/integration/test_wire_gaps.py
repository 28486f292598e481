"""WIRE.md behaviours proven byte by byte over real TCP and IPC connections.

Each test here covers a statement of docs/WIRE.md that no other test proved on a
real connection (docs/WIRE_CONFORMANCE.md maps every statement to its tests). The peer is
usually a plain ``socket`` speaking SP bytes by hand, so the test sees exactly what goes
on the wire and can send what no well-behaved library would.

Test list:
- every protocol sends its 8-byte header with its id at once, before the peer sends
  anything, as a listener and as a dialer
- a header naming any protocol but the valid peer (obsolete ids included) is refused
- bad magic or non-zero reserved bytes close the connection, loudly; the listener goes on
- a header and a frame arriving one byte at a time still make a message
- a peer that never completes its header is closed after ``handshake_timeout``
- an oversize size field closes the connection before any of the body is sent; the
  listener goes on
- an IPC frame whose type byte is not 0x01 closes that pipe; the listener goes on
- what we write is ``size u64 BE | payload`` (IPC: ``01 | size | payload``), empty
  payloads included, and empty frames are read
- our REQ puts exactly one id word on the wire and ignores replies that do not carry it
- a cooked REP sends a multi-word backtrace back byte for byte
- a malformed request or survey (a partial word, no id word) closes that pipe with a debug
  line, and the listener goes on
- PULL fair-queues two pipes that both have messages waiting, also once its receive
  queue fills (reading pauses after the batch, and resumes starting with another pipe)
- a second PAIR v0 connection completes the header exchange and is then closed
- a connection that lasted is redialed at once; one that did not waits the interval
- the defaults are those WIRE.md lists; the TTL option takes 1..255
- no WebSocket transport: those URLs are refused as unknown schemes
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

import pytest

import scaproust as sp
from scaproust import protocols
from scaproust.protocols._headers import id_word, pipe_word
from tests.integration.conftest import wait_until

# Plain sockets speak to ours: TCP and IPC paths only (see conftest.py).
pytestmark = pytest.mark.raw_wire(("tcp", "ipc"))

T = 5.0  # every blocking call gives up after this long
MiB = 1 << 20
ALL = protocols.ALL


def header(proto_id: int, magic: bytes = b"\x00SP\x00", reserved: bytes = b"\x00\x00") -> bytes:
    return magic + struct.pack(">H", proto_id) + reserved


def frame(url: str, payload: bytes, kind: int = 0x01) -> bytes:
    prefix = struct.pack(">Q", len(payload))
    return (bytes([kind]) + prefix if url.startswith("ipc://") else prefix) + payload


def raw_connect(url: str) -> socket.socket:
    """A plain stream socket connected to our listener at ``url``."""
    if url.startswith("tcp://"):
        host, port = url[len("tcp://"):].rsplit(":", 1)
        conn = socket.create_connection((host, int(port)), timeout=T)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(T)
    conn.connect(url[len("ipc://"):])
    return conn


def raw_listener(url: str):
    """A plain listening socket; returns it and the URL to dial."""
    if url.startswith("tcp://"):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(url[len("ipc://"):])
    listener.listen(8)
    listener.settimeout(T)
    return listener, url


def accept(listener: socket.socket) -> socket.socket:
    conn, _ = listener.accept()
    conn.settimeout(T)
    return conn


def read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes: {data!r}"
        data += chunk
    return data


def read_until_closed(conn: socket.socket) -> bytes:
    """Everything the peer sends until it closes (EOF, or a reset for unread input)."""
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_frame(conn: socket.socket, url: str) -> bytes:
    if url.startswith("ipc://"):
        assert read_exactly(conn, 1) == b"\x01"
    (size,) = struct.unpack(">Q", read_exactly(conn, 8))
    return read_exactly(conn, size)


def pipes(sock, count: int) -> None:
    wait_until(lambda: sock.stats.get("pipes_opened", 0) >= count, what=f"{count} pipe(s) of {sock!r}")


def proves_listener_still_accepts(session, pull, url: str) -> None:
    """A well-behaved PUSH reaches ``pull`` on ``url``."""
    push = session.socket(sp.Push, send_timeout=T)
    push.connect(url)
    push.send(b"the listener still accepts")
    assert pull.recv(timeout=T) == b"the listener still accepts"
    push.close()


# ---------------------------------------------------------------- protocol ids, header


@pytest.mark.parametrize("info", ALL, ids=[info.name for info in ALL])
def test_every_protocol_sends_its_id_at_once_without_waiting_for_the_peers_header(session, url, info):
    sock = session.socket(info)
    ep = sock.bind(url)
    with raw_connect(ep.url) as peer:
        # Nothing sent yet: a side that waited for our header first would never answer.
        assert read_exactly(peer, 8) == b"\x00SP\x00" + struct.pack(">H", info.id) + b"\x00\x00"
        peer.sendall(header(info.peer_id))
        pipes(sock, 1)


def test_our_dialer_sends_its_header_before_the_listener_sends_anything(session, url):
    listener, where = raw_listener(url)
    with listener:
        push = session.socket(sp.Push, send_timeout=T)
        push.connect(where)
        with accept(listener) as conn:
            assert read_exactly(conn, 8) == bytes.fromhex("0053500000500000")
            conn.sendall(header(sp.Pull.id))
            push.send(b"after the exchange")
            assert read_frame(conn, where) == b"after the exchange"
        push.close()


# Every id in WIRE.md's table, and the obsolete surveyor/respondent draft ids 96/97.
KNOWN_IDS = sorted({info.id for info in ALL} | {0x60, 0x61})


@pytest.mark.parametrize("info", ALL, ids=[info.name for info in ALL])
def test_a_header_naming_any_protocol_but_the_valid_peer_is_refused(session, info):
    sock = session.socket(info)
    ep = sock.bind("tcp://127.0.0.1:0")
    for wrong in KNOWN_IDS:
        if wrong == info.peer_id:
            continue
        with raw_connect(ep.url) as peer:
            assert read_exactly(peer, 8) == header(info.id)
            peer.sendall(header(wrong))
            assert read_until_closed(peer) == b"", f"{info!r} accepted peer id {wrong:#x}"
    assert sock.stats.get("pipes_opened", 0) == 0
    with raw_connect(ep.url) as peer:  # the valid peer still gets a pipe
        read_exactly(peer, 8)
        peer.sendall(header(info.peer_id))
        pipes(sock, 1)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (header(sp.Push.id, magic=b"\x01SP\x00"), "magic"),
        (header(sp.Push.id, magic=b"\x00sp\x00"), "magic"),
        (header(sp.Push.id, magic=b"\x00SP\x01"), "magic"),
        (header(sp.Push.id, reserved=b"\x01\x00"), "reserved"),
        (header(sp.Push.id, reserved=b"\x00\x01"), "reserved"),
    ],
    ids=["magic-byte-0", "magic-bytes-1-2", "magic-byte-3", "reserved-byte-6", "reserved-byte-7"],
)
def test_bad_magic_or_non_zero_reserved_bytes_close_the_connection_loudly(session, url, caplog, bad, reason):
    pull = session.socket(sp.Pull, recv_timeout=T)
    ep = pull.bind(url)
    caplog.set_level(logging.WARNING, logger="scaproust")
    with raw_connect(ep.url) as peer:
        read_exactly(peer, 8)
        peer.sendall(bad)
        assert read_until_closed(peer) == b""
    wait_until(lambda: pull.stats.get("dropped_malformed", 0) == 1, what="the malformed counter")
    wait_until(lambda: reason in caplog.text, what=f"a warning naming the {reason}")
    assert pull.stats.get("pipes_opened", 0) == 0
    proves_listener_still_accepts(session, pull, ep.url)


def test_a_header_and_a_frame_arriving_one_byte_at_a_time_make_a_message(session, url):
    pull = session.socket(sp.Pull, recv_timeout=T)
    ep = pull.bind(url)
    with raw_connect(ep.url) as peer:
        read_exactly(peer, 8)
        wire = header(sp.Push.id) + frame(ep.url, b"one byte at a time") + frame(ep.url, b"")
        for i in range(len(wire)):
            peer.send(wire[i:i + 1])  # TCP_NODELAY: each byte leaves on its own
        assert pull.recv() == b"one byte at a time"
        assert pull.recv() == b""


def test_a_peer_that_never_completes_its_header_is_closed_after_the_handshake_timeout(session, url, caplog):
    pull = session.socket(sp.Pull, recv_timeout=T, handshake_timeout=0.2)
    ep = pull.bind(url)
    caplog.set_level(logging.WARNING, logger="scaproust")
    with raw_connect(ep.url) as peer:
        started = time.monotonic()
        assert read_exactly(peer, 8) == header(sp.Pull.id)
        peer.sendall(header(sp.Push.id)[:5])
        assert read_until_closed(peer) == b""
        assert time.monotonic() - started >= 0.15
    wait_until(lambda: "handshake_timeout=0.2" in caplog.text, what="a warning naming the option")
    proves_listener_still_accepts(session, pull, ep.url)


# ---------------------------------------------------------------- framing and size limit


def test_an_oversize_size_field_closes_the_connection_before_the_body_is_sent(session, url, caplog):
    pull = session.socket(sp.Pull, recv_timeout=T)  # default recv_max_size: 1 MiB
    ep = pull.bind(url)
    huge = 1 << 40
    caplog.set_level(logging.WARNING, logger="scaproust")
    with raw_connect(ep.url) as peer:
        read_exactly(peer, 8)
        peer.sendall(header(sp.Push.id) + frame(ep.url, b"fits"))
        assert pull.recv() == b"fits"
        type_byte = b"\x01" if ep.url.startswith("ipc://") else b""
        peer.sendall(type_byte + struct.pack(">Q", huge))  # no body: the size alone closes it
        assert read_until_closed(peer) == b""
    wait_until(lambda: pull.stats.get("dropped_oversize", 0) == 1, what="the oversize counter")
    warning = f"a {huge}-byte message exceeds recv_max_size={MiB}"
    wait_until(lambda: warning in caplog.text, what="a warning naming the size and the option")
    proves_listener_still_accepts(session, pull, ep.url)


@pytest.mark.parametrize("kind", [0x00, 0x02, 0xFF], ids=["type-0x00", "type-0x02", "type-0xff"])
def test_an_ipc_frame_whose_type_byte_is_not_one_closes_that_pipe_and_the_listener_goes_on(
    session, tmp_path, caplog, kind
):
    pull = session.socket(sp.Pull, recv_timeout=T)
    ep = pull.bind(f"ipc://{tmp_path}/type.ipc")
    caplog.set_level(logging.WARNING, logger="scaproust")
    with raw_connect(ep.url) as peer:
        read_exactly(peer, 8)
        peer.sendall(header(sp.Push.id) + frame(ep.url, b"good"))
        assert pull.recv() == b"good"
        peer.sendall(frame(ep.url, b"bad", kind=kind))
        assert read_until_closed(peer) == b""
    wait_until(lambda: pull.stats.get("dropped_malformed", 0) == 1, what="the malformed counter")
    wait_until(lambda: pull.stats.get("pipes_closed", 0) == 1, what="the pipe closed")
    with pytest.raises(sp.WouldBlock):
        pull.recv(block=False)  # the bad frame never reached the user
    proves_listener_still_accepts(session, pull, ep.url)


def test_what_we_write_is_size_then_payload_and_empty_payloads_are_legal(session, url):
    listener, where = raw_listener(url)
    with listener:
        push = session.socket(sp.Push, send_timeout=T)
        push.connect(where)
        with accept(listener) as conn:
            read_exactly(conn, 8)
            conn.sendall(header(sp.Pull.id))
            push.send(b"")
            push.send(b"ab")
            type_byte = b"\x01" if where.startswith("ipc://") else b""
            expected = type_byte + bytes(8) + type_byte + struct.pack(">Q", 2) + b"ab"
            assert read_exactly(conn, len(expected)) == expected
        push.close()


# ---------------------------------------------------------------- request / reply headers


def test_our_req_sends_exactly_one_id_word_and_ignores_replies_without_it(session, url):
    listener, where = raw_listener(url)
    with listener:
        req = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
        req.connect(where)
        with accept(listener) as conn:
            assert read_exactly(conn, 8) == header(sp.Req.id)
            conn.sendall(header(sp.Rep.id))
            req.send(b"question")
            payload = read_frame(conn, where)
            word, body = payload[:4], payload[4:]
            assert body == b"question" and word[0] & 0x80  # one word, the id, then the body
            number = int.from_bytes(word, "big")
            other = ((number + 1) & 0x7FFFFFFF) | 0x80000000
            conn.sendall(frame(where, struct.pack(">I", number & 0x7FFFFFFF) + b"high bit clear")
                         + frame(where, struct.pack(">I", other) + b"another id")
                         + frame(where, word + b"answer"))
            assert req.recv() == b"answer"
            wait_until(lambda: req.stats.get("dropped_stale", 0) == 2, what="two ignored replies")
            assert req.stats.get("pipes_closed", 0) == 0  # ignored silently, the pipe stays
        req.close()


def test_a_cooked_rep_sends_a_multi_word_backtrace_back_byte_for_byte(session, url):
    rep = session.socket(sp.Rep, recv_timeout=T, send_timeout=T)
    ep = rep.bind(url)
    backtrace = pipe_word(0x12345678) + pipe_word(7) + id_word(0x0ABCDEF0)
    with raw_connect(ep.url) as peer:
        assert read_exactly(peer, 8) == header(sp.Rep.id)
        peer.sendall(header(sp.Req.id) + frame(ep.url, backtrace + b"deep question"))
        assert rep.recv() == b"deep question"  # only the body reaches the user
        rep.send(b"deep answer")
        assert read_frame(peer, ep.url) == backtrace + b"deep answer"


MALFORMED = {
    "two-bytes": b"\x80\x01",
    "partial-second-word": pipe_word(1) + b"\x80\x00",
    "no-id-word": pipe_word(1) + pipe_word(2),
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("info", [sp.Rep, sp.Respondent], ids=["rep", "respondent"])
def test_a_malformed_backtrace_closes_that_pipe_with_a_debug_line_and_the_listener_goes_on(
    session, url, caplog, info, payload
):
    sock = session.socket(info, recv_timeout=T)
    ep = sock.bind(url)
    caplog.set_level(logging.DEBUG, logger="scaproust.protocol")
    with raw_connect(ep.url) as peer:
        read_exactly(peer, 8)
        peer.sendall(header(info.peer_id) + frame(ep.url, payload))
        assert read_until_closed(peer) == b""
    wait_until(lambda: sock.stats.get("dropped_malformed", 0) == 1, what="the malformed counter")
    wait_until(lambda: any(record.levelno == logging.DEBUG and "malformed" in record.getMessage()
                           for record in list(caplog.records) if record.name == "scaproust.protocol"),
               what="a debug line")
    with raw_connect(ep.url) as peer:  # a well-formed one on a new connection is served
        read_exactly(peer, 8)
        peer.sendall(header(info.peer_id) + frame(ep.url, id_word(5) + b"well formed"))
        assert sock.recv() == b"well formed"


# ---------------------------------------------------------------- pull fair-queue


def _longest_run_while_both_wait(order: list[int], each: int) -> int:
    """The most messages in a row from one sender while the other still had some coming."""
    left, longest, run, previous = {0: each, 1: each}, 0, 0, None
    for sender in order:
        if left[1 - sender] == 0:
            break
        run = run + 1 if sender == previous else 1
        previous, longest, left[sender] = sender, max(longest, run), left[sender] - 1
    return longest


def test_pull_fair_queues_two_pipes_that_both_have_messages_waiting(session):
    each, size = 100, 64 * 1024  # one 256 KiB read takes at most four of these
    # A small receive queue: reading pauses and resumes all the time, as with a slow reader.
    pull = session.socket(sp.Pull, recv_timeout=T, recv_buffer=4)
    ep = pull.bind("tcp://127.0.0.1:0")
    pushes = [session.socket(sp.Push, send_timeout=T) for _ in range(2)]
    for push in pushes:
        push.connect(ep.url)
    pipes(pull, 2)
    sent = [0, 0]

    def send_all(n: int) -> None:
        for _ in range(each):
            pushes[n].send(bytes([n]) * size)
            sent[n] += 1

    threads = [threading.Thread(target=send_all, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: min(sent) >= 50, what="both senders to have messages waiting")
    order = [pull.recv()[0] for _ in range(2 * each)]
    for thread in threads:
        thread.join(T)
    # Fair: the senders take turns, a read (at most four messages) or a few at a time; a
    # fixed PULL measured at most 12 in a row (a deferred pause, or a rotating resume).
    assert _longest_run_while_both_wait(order, each) <= 32, order


# ---------------------------------------------------------------- pair v0


def test_a_second_pair_connection_completes_the_header_exchange_and_is_then_closed(session, url):
    pair = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    ep = pair.bind(url)
    first = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    first.connect(ep.url)
    first.send(b"first")
    assert pair.recv() == b"first"
    with raw_connect(ep.url) as second:
        assert read_exactly(second, 8) == header(sp.Pair.id)  # the exchange completes
        second.sendall(header(sp.Pair.id))
        assert read_until_closed(second) == b""  # then the second pipe is closed
    wait_until(lambda: pair.stats.get("pipes_rejected", 0) == 1, what="the rejection counted")
    pair.send(b"the first stays")
    assert first.recv() == b"the first stays"


# ---------------------------------------------------------------- reconnect


def _wait_accept(listener: socket.socket, timeout: float) -> socket.socket | None:
    readable, _, _ = select.select([listener], [], [], timeout)
    return accept(listener) if readable else None


def test_a_dropped_connection_that_lasted_is_redialed_at_once_and_a_short_one_waits(session):
    interval = 0.4  # each wait is jittered to 50-100 %: never under 0.2 s
    listener, where = raw_listener("tcp://")
    with listener:
        pair = session.socket(sp.Pair, reconnect_interval=interval)
        pair.connect(where)
        conn = accept(listener)
        read_exactly(conn, 8)
        conn.sendall(header(sp.Pair.id))
        pipes(pair, 1)
        time.sleep(interval)  # the connection must last the interval (a duration, not a wait)
        conn.close()
        dropped = time.monotonic()
        conn = _wait_accept(listener, T)
        assert conn is not None, "never redialed"
        assert time.monotonic() - dropped < interval / 2, "the redial was not immediate"
        # Control: this connection is dropped before it lasted: the redial waits.
        read_exactly(conn, 8)
        conn.sendall(header(sp.Pair.id))
        pipes(pair, 2)
        conn.close()
        dropped = time.monotonic()
        conn = _wait_accept(listener, T)
        assert conn is not None, "never redialed"
        assert time.monotonic() - dropped >= interval / 2 - 0.01
        conn.close()
        pair.close()


# ---------------------------------------------------------------- defaults


def test_the_defaults_are_those_wire_md_lists(session):
    for info in ALL:
        sock = session.socket(info)
        assert sock.recv_max_size == MiB, info  # 1 MiB, as nanomsg; 0 = unlimited
        assert sock.handshake_timeout == 10.0, info  # as nng
        assert sock.reconnect_interval == 0.1 and sock.reconnect_interval_max == 0.0, info
        assert sock.send_timeout is None and sock.recv_timeout is None, info  # infinite
        assert sock.send_priority == 8 and sock.recv_priority == 8, info
    assert session.socket(sp.Req).resend_interval == 60.0
    assert session.socket(sp.Surveyor).survey_deadline == 1.0
    for info in (sp.Req, sp.Rep, sp.Surveyor, sp.Respondent, sp.Pair1):
        assert session.socket(info).ttl == 8, info


@pytest.mark.parametrize("name", ["ttl", "send_priority"])
def test_the_ttl_takes_1_to_255_and_priorities_1_to_16(session, name):
    top = {"ttl": 255, "send_priority": 16}[name]
    for good in (1, top):
        assert getattr(session.socket(sp.Rep, **{name: good}), name) == good
    for bad in (0, top + 1):
        with pytest.raises(ValueError, match=name):
            session.socket(sp.Rep, **{name: bad})
