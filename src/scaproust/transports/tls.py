"""TLS transport: ``tls+tcp://`` (and ``tls+tcp4://``, ``tls+tcp6://``), the SP TCP mapping
inside TLS 1.2 or 1.3 (``sp-tls-mapping-01``): the TLS handshake first, then the 8-byte SP
header exchange and length-prefixed frames, all as TLS application data.

The sockets are TCP's (:mod:`scaproust.transports.tcp` listens, accepts and connects); what
this module adds is

* :class:`TLSConfig`, the configuration, shaped like pynng's, turned into an
  ``ssl.SSLContext`` per side by :func:`prepare` (both defined in the light
  :mod:`scaproust.transports.tls_config`, which ``import scaproust`` loads, and re-exported
  here);
* :class:`TLSStream`, the stream a TLS pipe reads and writes: Python's ``ssl.SSLObject``
  over two memory BIOs, fed from and drained to the non-blocking TCP socket, so the
  session's reactor drives TLS like any other stream and never blocks in OpenSSL (asyncio
  and trio do the same);
* :class:`TLSTransport`, the transport object registered for the three schemes.

The TLS pipe (core/tls_pipe.py, machine ``tls_pipe``) runs the handshake and the close.
docs/TRANSPORTS.md says what is guaranteed and why.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Mapping, Sequence

from scaproust.transports.tcp_family import FamilyTCP
from scaproust.transports.tls_config import TLSConfig, TLSSetup, prepare

__all__ = ["SCHEMES", "TLSConfig", "TLSSetup", "TLSStream", "TLSTransport", "prepare",
           "subject_of"]

#: The schemes served by :class:`TLSTransport`: any address family, IPv4 only, IPv6 only.
SCHEMES = ("tls+tcp", "tls+tcp4", "tls+tcp6")
#: Plaintext bytes encrypted per ``sendmsg`` at most (TLS records are 16 KiB each).
WRITE_MAX = 256 * 1024
#: Plaintext bytes asked of ``SSLObject.read`` per call.
READ_CHUNK = 64 * 1024


def subject_of(cert: Mapping[str, object] | None) -> str:
    """A peer certificate's subject as ``CN=name,O=org`` (empty when there is none)."""
    if not cert:
        return ""
    parts: list[str] = []
    subject = cert.get("subject", ())
    assert isinstance(subject, tuple)
    for rdn in subject:
        for key, value in rdn:
            parts.append(f"{_SHORT.get(key, key)}={value}")
    return ",".join(parts)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}


class TLSStream:
    """A TCP socket seen through TLS: ``recv``, ``send`` and ``sendmsg`` carry plaintext.

    The rules this class keeps (the ``ssl`` module's own advice for memory BIOs, and what
    nng does):

    * the handshake is called explicitly (:meth:`handshake_step`): only ``do_handshake``
      checks the server's name;
    * :meth:`recv` decrypts everything the socket held, so no plaintext ever waits inside
      OpenSSL where a ``poll()`` of the socket cannot see it (the caller-thread reader polls
      the socket, docs/ARCHITECTURE.md);
    * a ragged EOF (the peer closed TCP without close_notify, as nng does right after
      sending it, or before) is a close, like close_notify itself;
    * :meth:`sendmsg` never writes an empty buffer, and its contract is the socket's: it
      returns how many plaintext bytes it took. Encrypted bytes the kernel did not take wait
      here; until they are all sent, the last plaintext byte is reported as not taken, so
      the pipe keeps it queued (its queue, its ``has_output`` and its linger stay exact) and
      offers it again, and the retry is answered without writing it twice.
    """

    def __init__(self, sock: socket.socket, setup: TLSSetup) -> None:
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = setup.context.wrap_bio(self._incoming, self._outgoing,
                                          server_side=setup.server_side,
                                          server_hostname=setup.server_hostname)
        self._backlog = memoryview(b"")
        self._held = 0
        self._eof = False
        #: The peer closed (close_notify, or TCP) and every byte before it was returned.
        #: Set by the :meth:`recv` that returned the last bytes: the socket may never be
        #: readable again (a peer that waits for our close_notify), so the pipe checks it.
        self.peer_closed = False
        #: A TLS error met after some plaintext was decrypted in the same read: that
        #: plaintext is returned first, and the next :meth:`recv` raises this. The socket
        #: may never be readable again either, so the pipe checks ``failed``.
        self._failure: ssl.SSLError | None = None

    @property
    def failed(self) -> bool:
        """A TLS error waits for the next :meth:`recv` (see ``_failure``)."""
        return self._failure is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def backlog(self) -> int:
        """Encrypted bytes waiting for the kernel to take them."""
        return len(self._backlog)

    # ------------------------------------------------------------------ handshake

    def handshake_step(self) -> bool:
        """Feed what the socket holds to the handshake and send its answer; True once the
        handshake is complete. Raises ``ssl.SSLError`` when it fails (the reason OpenSSL
        gave), ``EOFError`` if the peer closed first, ``OSError`` for the socket's errors."""
        self._read_socket()
        try:
            self.ssl.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        finally:
            self._send_backlog()
        if not done and self._eof:
            raise EOFError("the peer closed the connection during the TLS handshake")
        return done

    def _read_socket(self) -> None:
        while not self._eof:
            try:
                data = self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                self._eof = True
                return
            self._incoming.write(data)

    def _send_backlog(self) -> None:
        if self._outgoing.pending:
            pending = self._outgoing.read()
            self._backlog = memoryview(bytes(self._backlog) + pending if self._backlog else pending)
        while self._backlog:
            try:
                sent = self.sock.send(self._backlog)
            except (BlockingIOError, InterruptedError):
                return
            self._backlog = self._backlog[sent:]

    # ------------------------------------------------------------------ data

    def recv(self, size: int) -> bytes:
        """Plaintext: everything the socket's next ``size`` bytes (and anything buffered)
        decrypt to; ``b""`` when the peer closed (close_notify or not);
        ``BlockingIOError`` when there is nothing yet."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self.peer_closed:
            return b""
        if not self._eof:
            try:
                data = self.sock.recv(size)
            except (BlockingIOError, InterruptedError):
                data = None
            if data is not None:
                if data:
                    self._incoming.write(data)
                else:
                    self._eof = True
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self.ssl.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            except ssl.SSLError as err:  # a bad record, a fatal alert
                if not chunks:
                    raise
                # The records before it were good: their messages are delivered first, as
                # a stream pipe delivers the frames before a bad one.
                self._failure = err
                break
            if not chunk:  # the peer's close_notify (Python returns b"" for it)
                closed = True
                break
            chunks.append(chunk)
        if self._outgoing.pending:  # TLS 1.3 post-handshake messages answered
            self._send_backlog()
        if closed or self._eof:
            self.peer_closed = True
        if chunks:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.peer_closed:
            return b""
        raise BlockingIOError

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """``sendmsg`` of one buffer (the contract of ``socket.send``)."""
        return self.sendmsg((data,))

    def sendmsg(self, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        """Encrypt and send (the contract of ``socket.sendmsg``: the plaintext bytes
        taken, ``BlockingIOError`` if none; see the class's docstring)."""
        if self._backlog:
            self._send_backlog()
            if self._backlog:
                raise BlockingIOError
        if self._held:
            held, self._held = self._held, 0
            return held
        data = _join(buffers)
        if not data:
            return 0  # never hand OpenSSL an empty write
        taken = self.ssl.write(data)  # a memory BIO takes it all
        self._send_backlog()
        if self._backlog:
            self._held = 1
            return taken - 1
        return taken

    def send_close_notify(self) -> None:
        """Queue close_notify and send it if the kernel takes it now; the peer's answer is
        not awaited (nng closes the connection right after its own)."""
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.ssl.unwrap()
        with contextlib.suppress(OSError):
            self._send_backlog()

    def close(self) -> None:
        self.sock.close()


def _join(buffers: Sequence[bytes | bytearray | memoryview]) -> bytes | bytearray | memoryview:
    """Up to :data:`WRITE_MAX` plaintext bytes from the front of ``buffers`` (at least the
    first buffer's, whatever its size is, without a copy when it is alone)."""
    first = buffers[0]
    if len(buffers) == 1 or len(first) >= WRITE_MAX:
        return first if len(first) <= WRITE_MAX else memoryview(first)[:WRITE_MAX]
    parts: list[bytes | bytearray | memoryview] = []
    size = 0
    for buf in buffers:
        if size + len(buf) > WRITE_MAX:
            if not parts:
                parts.append(memoryview(buf)[:WRITE_MAX])
            break
        parts.append(buf)
        size += len(buf)
    return b"".join(parts)


class TLSTransport(FamilyTCP):
    """The transport of ``tls+tcp``, ``tls+tcp4`` (IPv4 only) and ``tls+tcp6`` (IPv6
    only): TCP's sockets, URLs and name resolution, with the scheme's restrictions
    (transports/tcp_family.py)."""

    SCHEMES = SCHEMES
    #: Pipes are core/tls_pipe.py's, driven by the ``tls_pipe`` machine.
    PIPE_KIND = "tls"
