"""ws:// between our sockets and against a hand-driven peer (a plain socket speaking
RFC 6455 byte by byte): URLs, ports shared by paths, refusals (404, 400, a 101 without the
subprotocol), pings, close codes 1002, 1003 and 1009, fragments, the close handshake."""

from __future__ import annotations

import base64
import errno
import logging
import socket
import ssl
import struct

import pytest

import scaproust as sp
from scaproust.transports import wscodec as wsc

from .conftest import tls_by_hand, wait_until

T = 5.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


class RawClient:
    """A WebSocket client by hand: exact bytes in and out."""

    def __init__(self, url: str) -> None:
        self.sock = socket.create_connection(_host_port(url), timeout=T)
        self.buf = b""

    def upgrade(self, path: str = "/", protocol: str = "rep.sp.nanomsg.org") -> bytes:
        self.sock.sendall(wsc.build_request("x", path, KEY, protocol))
        return self.read_head()

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self.more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, int, bytes]:
        """(fin and opcode byte, payload length, payload) of the next frame (unmasked)."""
        b0, b1 = self.take(2)
        assert not b1 & 0x80, "a server never masks"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self.take(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self.take(8))
        return b0, length, self.take(length)

    def send_frame(self, b0: int, payload: bytes, key: bytes = b"abcd") -> None:
        self.sock.sendall(_frame(b0, payload, key))

    def eof(self) -> bool:
        try:
            self.more()
        except (EOFError, ConnectionResetError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def _frame(b0: int, payload: bytes, key: bytes | None = b"abcd") -> bytes:
    n = len(payload)
    bit = 0x80 if key is not None else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = bytes((b0, bit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, bit | 127)) + struct.pack(">Q", n)
    return head + (key + wsc.mask(payload, key) if key is not None else payload)


@pytest.fixture
def rep(session):
    sock = session.socket(sp.Rep, recv_timeout=T, send_timeout=T)
    yield sock
    sock.close()


@pytest.fixture
def raw(request):
    clients: list[RawClient] = []

    def make(url: str) -> RawClient:
        client = RawClient(url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _dialed_by(sock, path: str = "/") -> tuple[socket.socket, socket.socket, bytes, str]:
    """A hand-driven server that ``sock`` dials: (server, connection, its request head,
    the request's key)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(T)
    sock.connect(f"ws://127.0.0.1:{server.getsockname()[1]}{path}")
    conn, _ = server.accept()
    conn.settimeout(T)
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
    return server, conn, request, key


def _upgraded(raw, url: str, path: str = "/") -> RawClient:
    client = raw(url)
    head = client.upgrade(path)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert b"Sec-WebSocket-Protocol: rep.sp.nanomsg.org\r\n" in head
    return client


# ---------------------------------------------------------------- URLs and paths


def test_the_path_defaults_to_slash_and_port_0_is_reported(session, rep):
    url = rep.bind("ws://127.0.0.1:0").url
    host, port = _host_port(url)
    assert port > 0 and url == f"ws://127.0.0.1:{port}/"
    assert rep.bind("ws://127.0.0.1:0/deep/path").url.endswith("/deep/path")


@pytest.mark.parametrize(("url", "normal"), [
    ("ws://*:0/a", "ws://*:{port}/a"),
    ("ws://:0/a", "ws://*:{port}/a"),
    ("ws://[::1]:0/a", "ws://[::1]:{port}/a"),
])
def test_every_address_form_binds_and_connects(session, rep, url, normal):
    if "::1" in url and not socket.has_ipv6:
        pytest.skip("no IPv6")
    bound = rep.bind(url).url
    port = _host_port(bound)[1]
    assert bound == normal.format(port=port)
    req = session.socket(sp.Req, recv_timeout=T)
    req.connect(bound.replace("*", "127.0.0.1"))
    req.send(b"q")
    assert rep.recv() == b"q"


@pytest.mark.parametrize("url", ["ws://127.0.0.1:1/a?b", "ws://127.0.0.1:1/a b",
                                 "ws://127.0.0.1:99999/", "ws://[::1/"])
def test_bad_urls_are_refused(session, url):
    with pytest.raises(sp.InvalidAddress):
        session.socket(sp.Req).connect(url)


def test_several_sockets_listen_on_one_port_with_different_paths(session, rep, raw):
    url = rep.bind("ws://127.0.0.1:0/rep").url
    port = _host_port(url)[1]
    pull = session.socket(sp.Pull, recv_timeout=T)
    assert pull.bind(f"ws://127.0.0.1:{port}/pull").url == f"ws://127.0.0.1:{port}/pull"
    with pytest.raises(sp.AddressInUse, match="that path already"):
        session.socket(sp.Pair).bind(f"ws://127.0.0.1:{port}/pull")
    req = session.socket(sp.Req, recv_timeout=T)
    push = session.socket(sp.Push, send_timeout=T)
    req.connect(url)
    push.connect(f"ws://127.0.0.1:{port}/pull")
    req.send(b"to rep")
    push.send(b"to pull")
    assert rep.recv() == b"to rep"
    assert pull.recv() == b"to pull"
    # A path nobody listens on: 404, then the connection is closed.
    client = raw(url)
    head = client.upgrade("/nobody")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert client.take(len(b"no socket listens on path '/nobody'\n")) == \
        b"no socket listens on path '/nobody'\n"
    assert client.eof()
    # Closing one path keeps the port for the other; closing both frees it.
    pull.close()
    assert raw(url).upgrade("/pull").startswith(b"HTTP/1.1 404")
    rep.close()
    wait_until(lambda: _refused(port), what="the port to be free")
    again = session.socket(sp.Rep)
    assert again.bind(f"ws://127.0.0.1:{port}/").url == f"ws://127.0.0.1:{port}/"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=T).close()
    except ConnectionRefusedError:
        return True
    return False


def test_another_session_cannot_share_a_port(session, rep):
    port = _host_port(rep.bind("ws://127.0.0.1:0/a").url)[1]
    with sp.Session() as other, pytest.raises(sp.AddressInUse, match="another session"):
        other.socket(sp.Rep).bind(f"ws://127.0.0.1:{port}/b")


# ---------------------------------------------------------------- the opening handshake


def test_a_request_for_another_protocol_is_answered_400(session, rep, raw):
    url = rep.bind("ws://127.0.0.1:0/").url
    client = raw(url)
    head = client.upgrade(protocol="pull.sp.nanomsg.org")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"subprotocol 'rep.sp.nanomsg.org' not offered" in client.buf + client.sock.recv(4096)
    assert client.eof()
    wait_until(lambda: rep.stats.get("dropped_malformed") == 1, what="the refusal counted")


def test_what_is_not_http_is_answered_400(session, rep, raw):
    url = rep.bind("ws://127.0.0.1:0/").url
    client = raw(url)
    client.sock.sendall(b"\x00SP\x00\x00\x30\x00\x00\r\n\r\n")  # an SP TCP header
    assert client.read_head().startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_the_client_refuses_an_answer_without_the_subprotocol(session, caplog):
    req = session.socket(sp.Req)
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        server, conn, request, key = _dialed_by(req, "/sp")
        with conn:
            assert request.startswith(b"GET /sp HTTP/1.1\r\n")
            assert b"Sec-WebSocket-Protocol: rep.sp.nanomsg.org\r\n" in request
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + wsc.accept_key(key).encode() + b"\r\n\r\n")
            assert conn.recv(4096) == b""  # closed at once, no frame sent
        wait_until(lambda: "101 without a subprotocol (we offered 'rep.sp.nanomsg.org')"
                   in caplog.text, what="the refusal logged")
    server.close()
    assert req.stats.get("pipes_opened", 0) == 0
    assert req.stats.get("dropped_malformed") == 1


# ---------------------------------------------------------------- frames


def test_one_message_per_binary_message_and_a_ping_is_answered(session, rep, raw):
    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    client.send_frame(0x89, b"are you there")
    assert client.frame() == (0x8A, 13, b"are you there")  # pong, unmasked
    # A request (id 0x80000001), fragmented, with a ping between its fragments.
    client.send_frame(0x02, b"\x80\x00")
    client.send_frame(0x89, b"")
    client.send_frame(0x00, b"\x00\x01hel")
    client.send_frame(0x80, b"lo")
    assert client.frame() == (0x8A, 0, b"")
    assert rep.recv() == b"hello"
    rep.send(b"world")
    assert client.frame() == (0x82, 9, b"\x80\x00\x00\x01world")


def test_a_large_message_leaves_in_fragments_of_at_most_64_kib(session, rep, raw):
    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    client.send_frame(0x82, b"\x80\x00\x00\x02")
    assert rep.recv() == b""
    body = bytes(range(256)) * 1000
    rep.send(body)
    frames = [client.frame()]
    while not frames[-1][0] & 0x80:
        frames.append(client.frame())
    assert [(b0, n) for b0, n, _ in frames] == [(0x02, 65536), (0x00, 65536), (0x00, 65536),
                                                (0x80, 256004 - 3 * 65536)]
    assert b"".join(p for _, _, p in frames) == b"\x80\x00\x00\x02" + body


@pytest.mark.parametrize(("frame", "code", "stat"), [
    (bytes((0x81, 0x82)) + b"abcd" + wsc.mask(b"hi", b"abcd"), 1003, "dropped_malformed"),
    (_frame(0x82, b"x", key=None), 1002, "dropped_malformed"),  # unmasked
    (b"\x82\xff" + struct.pack(">Q", 2 * 1024 * 1024) + b"abcd", 1009, "dropped_oversize"),
])
def test_a_bad_frame_closes_the_connection_with_its_code(session, rep, raw, frame, code, stat):
    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    client.sock.sendall(frame)  # the oversize one: its header alone, no body follows
    b0, n, payload = client.frame()
    assert b0 == 0x88 and struct.unpack(">H", payload[:2]) == (code,)
    assert client.eof()
    wait_until(lambda: rep.stats.get(stat) == 1, what=stat)


def test_the_peers_close_is_answered(session, rep, raw):
    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    client.send_frame(0x88, struct.pack(">H", 1001) + b"going away")
    assert client.frame() == (0x88, 2, b"\x03\xe8")
    assert client.eof()


def test_closing_a_socket_runs_the_close_handshake(session, rep, raw):
    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    wait_until(lambda: rep.stats.get("pipes_opened") == 1, what="the pipe")
    events = []
    rep.add_pipe_listener(events.append)
    rep.close()  # waits for our close frame to be answered, at most CLOSE_TIMEOUT
    assert client.frame() == (0x88, 2, b"\x03\xe8")
    client.send_frame(0x88, b"\x03\xe8")
    assert client.eof()


def test_a_client_masks_and_fragments_what_it_sends(session):
    push = session.socket(sp.Push, send_timeout=T)
    server, conn, request, key = _dialed_by(push)
    assert b"Sec-WebSocket-Protocol: pull.sp.nanomsg.org\r\n" in request
    conn.sendall(wsc.build_response(key, "pull.sp.nanomsg.org"))
    body = b"z" * 100_000
    push.send(body)
    decoder = wsc.WsDecoder(masked=True, max_size=0)  # refuses an unmasked frame
    got: list[bytes] = []
    while not got:
        got = decoder.feed(conn.recv(65536))
    assert got == [body]
    conn.close()
    server.close()
    assert len(base64.b64decode(key)) == 16  # a real key was offered


# ---------------------------------------------------------------- wss://


@pytest.fixture
def pki():
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name="wss server")
    server = sp.TLSConfig(own_cert_string=cert.cert_chain_pems[0].bytes().decode(),
                          own_key_string=cert.private_key_pem.bytes().decode())
    client = sp.TLSConfig(ca_string=ca.cert_pem.bytes().decode())
    return server, client


def test_wss_paths_of_one_port_share_its_tls_and_see_the_certificate(session, pki):
    server, client = pki
    rep = session.socket(sp.Rep, recv_timeout=T, tls=server)
    url = rep.bind("wss://127.0.0.1:0/a").url
    port = _host_port(url)[1]
    pull = session.socket(sp.Pull, recv_timeout=T)
    pull.bind(f"wss://127.0.0.1:{port}/b", tls=server)
    with pytest.raises(sp.AddressInUse, match="serves wss://"):
        session.socket(sp.Pair).bind(f"ws://127.0.0.1:{port}/c")
    req = session.socket(sp.Req, recv_timeout=T, tls=client)
    events = []
    req.add_pipe_listener(events.append)
    push = session.socket(sp.Push, send_timeout=T)
    req.connect(url)
    push.connect(f"wss://127.0.0.1:{port}/b", tls=client)
    req.send(b"q" * 100_000)
    push.send(b"p")
    assert rep.recv() == b"q" * 100_000
    assert pull.recv() == b"p"
    rep.send(b"r")
    assert req.recv() == b"r"
    assert "CN=wss server" in events[0].peer_subject


def test_a_wss_server_of_an_unknown_ca_is_refused_and_counted(session, pki, caplog):
    server, _client = pki
    rep = session.socket(sp.Rep, tls=server)
    url = rep.bind("wss://127.0.0.1:0/").url
    req = session.socket(sp.Req, reconnect_interval=0.05)  # trusts the system's CAs only
    with caplog.at_level(logging.INFO):
        req.connect(url)
        wait_until(lambda: req.stats.get("tls_handshake_failures", 0) >= 1,
                   what="a failed handshake")
        wait_until(lambda: "TLS handshake failed" in caplog.text
                   and "dropped" in caplog.text, what="both sides logged")
    assert "certificate verify failed" in caplog.text
    assert rep.stats.get("pipes_opened", 0) == 0 and req.stats.get("pipes_opened", 0) == 0


def test_a_wss_client_that_sends_close_notify_with_its_request_and_waits_is_closed(session,
                                                                                      pki):
    """Request, first message and close_notify in one write, then the peer waits with TCP
    open: what the port read behind the request head must be delivered, and its close
    noticed, with no readiness to come (an accepted pipe's TLS stream is its port's)."""
    server, client = pki
    events: list[sp.PipeEvent] = []
    pair = session.socket(sp.Pair, recv_timeout=T, tls=server)
    pair.add_pipe_listener(events.append)
    host, port = _host_port(pair.bind("wss://127.0.0.1:0/").url)
    raw, tls, outgoing = tls_by_hand(host, port, client.ca_string)
    tls.write(wsc.build_request("x", "/", KEY, "pair.sp.nanomsg.org") + _frame(0x82, b"hello"))
    with pytest.raises(ssl.SSLWantReadError):
        tls.unwrap()  # close_notify queued behind them
    raw.sendall(outgoing.read())  # one write
    try:
        assert pair.recv() == b"hello"
        wait_until(lambda: [e.kind for e in events] == ["added", "removed"], what="the removal")
    finally:
        raw.close()


def test_a_wss_bind_needs_a_certificate(session):
    with pytest.raises(ValueError, match="needs a certificate"):
        session.socket(sp.Rep).bind("wss://127.0.0.1:0/")


# ---------------------------------------------------------------- timeouts and edges


def test_a_request_head_that_never_completes_is_dropped(session, rep, raw, monkeypatch):
    from scaproust.transports import ws

    monkeypatch.setattr(ws, "REQUEST_TIMEOUT", 0.1)
    client = raw(rep.bind("ws://127.0.0.1:0/").url)
    client.sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
    assert client.eof()


def test_a_server_that_never_answers_the_upgrade_times_out(session, caplog):
    server = socket.create_server(("127.0.0.1", 0))
    req = session.socket(sp.Req, handshake_timeout=0.1, reconnect_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        req.connect(f"ws://127.0.0.1:{server.getsockname()[1]}/")
        conn, _ = server.accept()
        conn.settimeout(T)
        assert conn.recv(4096).startswith(b"GET / HTTP/1.1\r\n")
        assert conn.recv(4096) == b""  # closed by our side after handshake_timeout
        wait_until(lambda: "WebSocket upgrade not complete within handshake_timeout=0.1s"
                   in caplog.text, what="the timeout logged")
    conn.close()
    server.close()


def test_frames_right_behind_the_101_are_read(session):
    pull = session.socket(sp.Pull, recv_timeout=T)
    server, conn, _request, key = _dialed_by(pull)
    # The answer and two messages in one segment.
    conn.sendall(wsc.build_response(key, "push.sp.nanomsg.org")
                 + _frame(0x82, b"first", key=None) + _frame(0x82, b"second", key=None))
    assert pull.recv() == b"first"
    assert pull.recv() == b"second"
    conn.close()
    server.close()


def test_a_peer_that_never_answers_our_close_is_dropped_after_a_second(session, rep, raw):
    import time

    client = _upgraded(raw, rep.bind("ws://127.0.0.1:0/").url)
    wait_until(lambda: rep.stats.get("pipes_opened") == 1, what="the pipe")
    started = time.monotonic()
    rep.close()
    assert 0.9 < time.monotonic() - started < 3.0
    assert client.frame() == (0x88, 2, b"\x03\xe8")
    assert client.eof()


def test_messages_queued_before_close_leave_before_the_close_frame(session, raw):
    push = session.socket(sp.Push, send_timeout=T)
    url = push.bind("ws://127.0.0.1:0/").url
    client = raw(url)
    head = client.upgrade(protocol="push.sp.nanomsg.org")
    assert head.startswith(b"HTTP/1.1 101")
    wait_until(lambda: push.stats.get("pipes_opened") == 1, what="the pipe")
    for i in range(3):
        push.send(b"m%d" % i)
    push.close()
    assert [client.frame() for _ in range(4)] == [
        (0x82, 2, b"m0"), (0x82, 2, b"m1"), (0x82, 2, b"m2"), (0x88, 2, b"\x03\xe8")]


def test_a_port_out_of_descriptors_pauses_its_accepts_and_resumes(session, monkeypatch, caplog):
    # A failed accept leaves the connection queued and the socket readable: retried at
    # once, the port spun a core and logged a warning at every turn of the loop. It now
    # stops watching for a pause, doubling, as a listener does (core/listener.py).
    from scaproust.transports import ws

    real_accept, calls = ws.tcp.accept, []

    def accept(listening):
        calls.append(listening)
        if len(calls) <= 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(listening)

    monkeypatch.setattr(ws.tcp, "accept", accept)
    caplog.set_level(logging.INFO, logger="scaproust")
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    url = pull.bind("ws://127.0.0.1:0/x").url
    push.connect(url)
    push.send(b"accepted after the pauses")
    assert pull.recv() == b"accepted after the pauses"
    port = "tcp://" + url.split("//", 1)[1].split("/", 1)[0]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if r.getMessage().startswith(f"accept on {port} ")]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines  # once an episode
    assert lines[1][1] == f"accept on {port} works again after 3 failed attempts"


def test_a_path_with_and_without_its_trailing_slash_is_one_route(session):
    # Routed alike (transports/ws.py route_key), so the second bind is refused.
    first = session.socket(sp.Pull)
    url = first.bind("ws://127.0.0.1:0/a").url
    with pytest.raises(sp.AddressInUse, match="a socket listens on that path already"):
        session.socket(sp.Pull).bind(url + "/")
