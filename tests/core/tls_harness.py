"""A real TLS session held in memory, for the sans-IO tests of the TLS and wss pipes.

The pipe under test wraps :class:`RawSocket` (what the TCP socket would be) in its own
``TLSStream``; :class:`TLSPeer` is the other end, an ``ssl.SSLObject`` over memory BIOs
that carries bytes to and from that socket when told to (``pump``). Both ends are real
OpenSSL, so what the pipe writes (records, close_notify) is checked by decrypting it, not
by comparing bytes a test guessed. Certificates come from trustme, made once per run.
:class:`TLSHarness` puts a pipe, the fakes around it and its peer together.
"""

from __future__ import annotations

import functools
import logging
import ssl
import struct
from typing import Any

import pytest
from protocols.fakes import FakeLoop, FakeOwner, FakeSocket, FakeTransport

from scaproust import protocols
from scaproust.core.options import Options
from scaproust.core.tls_pipe import TLSPipe
from scaproust.core.ws_pipe import WSSPipe
from scaproust.transports.tls import TLSSetup
from scaproust.transports.url import Address
from scaproust.transports.wscodec import build_response, head_end, parse_request

#: The name the server's certificate is issued for, and the client checks.
HOST = "pipe.test"
PUSH_HEADER = bytes.fromhex("0053500000500000")
PULL_HEADER = bytes.fromhex("0053500000510000")  # what a PUSH pipe expects from its peer


def frame(payload: bytes) -> bytes:
    """An SP message on a TCP stream: its 64-bit size, then itself."""
    return struct.pack(">Q", len(payload)) + payload


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the pipe logged at WARNING or above."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@functools.cache
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for :data:`HOST`, and a client context that
    trusts the CA which issued it."""
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


class RawSocket:
    """The non-blocking TCP socket under a ``TLSStream``: ``recv`` and ``send`` of bytes.

    ``inbox`` holds what the peer sent and ``recv`` has not taken yet; ``sent`` what the
    pipe sent and the peer has not taken yet. ``room``, when not None, is how many more bytes
    the kernel's buffer takes before ``send`` blocks (a test refills it); ``eof`` makes an empty ``recv`` return ``b""``;
    ``recv_error`` is raised by the next ``recv``.
    """

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.sent = bytearray()
        self.room: int | None = None
        self.eof = False
        self.recv_error: OSError | None = None
        self.closed = False

    def fileno(self) -> int:
        return -1

    def recv(self, n: int) -> bytes:
        if self.recv_error is not None:
            raise self.recv_error
        if self.inbox:
            data = bytes(self.inbox[:n])
            del self.inbox[:n]
            return data
        if self.eof:
            return b""
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def send(self, data: Any) -> int:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        data = bytes(data)
        if self.room is not None:
            if not self.room:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            data = data[: self.room]
            self.room -= len(data)
        self.sent += data
        return len(data)

    def close(self) -> None:
        self.closed = True


class TLSPeer:
    """The far end of a :class:`RawSocket`: a TLS client (or server) in memory.

    ``pump`` moves the pipe's bytes in, advances the handshake, decrypts what it can into
    ``received`` (``closed`` once the pipe's close_notify came) and moves its own bytes
    out.
    """

    def __init__(self, raw: RawSocket, *, server_side: bool = False) -> None:
        server, client = contexts()
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = (server if server_side else client).wrap_bio(
            self._in, self._out, server_side=server_side,
            server_hostname=None if server_side else HOST)
        self.ready = False
        self.received = bytearray()
        self.closed = False

    def pump(self) -> None:
        if self.raw.sent:
            self._in.write(bytes(self.raw.sent))
            self.raw.sent.clear()
        if not self.ready:
            try:
                self.ssl.do_handshake()
                self.ready = True
            except ssl.SSLWantReadError:
                pass
        while self.ready:
            try:
                chunk = self.ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # Python reads the peer's close_notify as b""
                self.closed = True
                break
            self.received += chunk
        self._flush()

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` and put it where the pipe's socket reads."""
        self.ssl.write(plaintext)
        self._flush()

    def send_close_notify(self) -> None:
        try:
            self.ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is sent; the pipe's need not have come
        self._flush()

    def _flush(self) -> None:
        if self._out.pending:
            self.raw.inbox += self._out.read()


class TLSHarness:
    """A PUSH pipe of ``pipe_class`` (TLSPipe, WSSPipe) to ``url``, accepted (the TLS
    server) or ``dialed`` (the client), its fakes, and the TLS peer it talks to.

    What follows the TLS handshake (the SP header exchange, the WebSocket upgrade) is
    the tests' own."""

    def __init__(self, pipe_class: type[TLSPipe], url: Address, *, dialed: bool = False,
                 **options: Any) -> None:
        self.loop = FakeLoop()
        self.raw = RawSocket()
        self.socket = FakeSocket(protocols.Push, Options(**options))
        self.owner = FakeOwner()
        self.owner.address = url  # a dialer's, which a dialed WebSocket pipe asks for
        server, client = contexts()
        self.owner.tls_setup = (TLSSetup(client, server_side=False, server_hostname=HOST)
                                if dialed else TLSSetup(server, server_side=True))
        self.url = url.url
        self.transport = FakeTransport()
        self.pipe = pipe_class(loop=self.loop, stream=self.raw, transport=self.transport,
                               socket=self.socket, owner=self.owner, dialed=dialed,
                               peer_addr=self.url)
        self.peer = TLSPeer(self.raw, server_side=dialed)

    def turn(self) -> None:
        """One exchange: the peer answers, the pipe reads what came, deferred work runs."""
        self.peer.pump()
        if self.raw.inbox and self.pipe.stream in self.loop.readers:
            self.loop.fire_reader(self.pipe.stream)
        self.loop.run_ready()

    def open(self) -> None:
        """cmd_open, and for a dialed pipe its TCP connection made: the TLS handshake
        starts."""
        self.pipe.cmd_open()
        if self.pipe.state == "connecting":
            self.loop.fire_writer(self.raw)
        assert self.pipe.state == "tls_handshaking"

    def tls_handshake(self) -> None:
        """Both ends exchange until the pipe's TLS handshake is over."""
        for _ in range(10):
            if self.pipe.state != "tls_handshaking":
                return
            self.turn()
        raise AssertionError("the TLS handshake never ended")

    def peer_sends(self, plaintext: bytes) -> None:
        """The peer's bytes arrive and the socket is readable once."""
        self.peer.send(plaintext)
        self.loop.fire_reader(self.pipe.stream)

    def is_gone(self) -> bool:
        """Dead, its socket closed, nothing left registered or pending."""
        return (self.pipe.state == "dead" and self.raw.closed and not self.loop.readers
                and not self.loop.writers and not self.loop.pending_timers())


class SPHarness(TLSHarness):
    """An SP pipe over TLS (``tls+tcp``), brought to ``active`` by the header exchange."""

    def __init__(self, *, dialed: bool = False, **options: Any) -> None:
        super().__init__(TLSPipe, Address("tls+tcp", "127.0.0.1", 5555), dialed=dialed,
                         **options)

    def open_active(self) -> SPHarness:
        self.open()
        return self.handshake()

    def handshake(self) -> SPHarness:
        """TLS handshake, SP header exchange; then what the peer received is forgotten."""
        self.tls_handshake()
        assert self.pipe.state == "handshaking"
        self.turn()
        assert self.peer.received == PUSH_HEADER
        self.peer.send(PULL_HEADER)
        self.turn()
        assert self.pipe.state == "active"
        self.peer.pump()
        self.peer.received.clear()
        self.socket.proto.calls.clear()
        return self


class WSSHarness(TLSHarness):
    """A dialed WebSocket pipe over TLS (``wss``): an accepted one never runs a TLS
    handshake of its own (its port did), so only the client side is here."""

    def __init__(self, **options: Any) -> None:
        super().__init__(WSSPipe, Address("wss", "127.0.0.1", 5555, "/sp"), dialed=True,
                         **options)

    def open_active(self) -> WSSHarness:
        self.open()
        return self.handshake()

    def handshake(self) -> WSSHarness:
        """TLS handshake, then the upgrade: the peer reads the request and answers 101
        with the PULL subprotocol; what the peer received is then forgotten."""
        self.tls_handshake()
        assert self.pipe.state == "handshaking"
        self.turn()
        size = head_end(self.peer.received)
        assert size == len(self.peer.received)
        self.request = parse_request(bytes(self.peer.received))
        key = self.request.headers["sec-websocket-key"]
        self.peer.send(build_response(key, "pull.sp.nanomsg.org"))
        self.turn()
        assert self.pipe.state == "active"
        self.peer.received.clear()
        self.socket.proto.calls.clear()
        return self
