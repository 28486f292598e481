"""TLS transport: ``tls+tcp://`` (and ``tls+tcp4://``, ``tls+tcp6://``), the SP TCP mapping
inside TLS 1.2 or 1.3 (``sp-tls-mapping-01``): the TLS handshake first, then the 8-byte SP
header exchange and length-prefixed frames, all as TLS application data.

The sockets are TCP's (:mod:`scaproust.transports.tcp` listens, accepts and connects); what
this module adds is

* :class:`TLSConfig`, the configuration, shaped like pynng's, turned into an
  ``ssl.SSLContext`` per side by :func:`prepare`;
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
import ipaddress
import os
import socket
import ssl
import tempfile
from collections.abc import Mapping, Sequence

import attrs

from scaproust.errors import InvalidAddress
from scaproust.transports import tcp
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket, Resolved
from scaproust.transports.url import WILDCARD_HOST, Address, format_tcp_url

__all__ = ["SCHEMES", "TLSConfig", "TLSSetup", "TLSStream", "TLSTransport", "prepare",
           "subject_of"]

#: The schemes served by :class:`TLSTransport`: any address family, IPv4 only, IPv6 only.
SCHEMES = ("tls+tcp", "tls+tcp4", "tls+tcp6")
#: Plaintext bytes encrypted per ``sendmsg`` at most (TLS records are 16 KiB each).
WRITE_MAX = 256 * 1024
#: Plaintext bytes asked of ``SSLObject.read`` per call.
READ_CHUNK = 64 * 1024

_MODES = ("client", "server")
_AUTH_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
               "required": ssl.CERT_REQUIRED}


def _files(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class TLSConfig:
    """How one side of a TLS connection authenticates (pynng's ``TLSConfig``, in Python).

    ``mode``: ``"client"`` (connect) or ``"server"`` (bind); None (the default) fits
    either, as it is used. ``server_name``: the name a client checks the server's
    certificate against (default: the URL's host). ``ca_string`` (PEM text) and/or
    ``ca_files``: the certificates trusted to sign the peer's; a client with neither trusts
    the system's. ``own_cert_string`` with ``own_key_string`` (PEM text), or
    ``cert_key_file`` (one PEM file holding both): this side's certificate, which a server
    must have and a client presents when the server asks. ``auth_mode``: ``"none"`` (the
    peer's certificate is not checked), ``"optional"`` (checked if the peer sends one),
    ``"required"``; default: ``"required"`` for a client, ``"none"`` for a server, as in
    nng. ``minimum_version`` and ``maximum_version`` bound the TLS version (default 1.2 and
    the newest OpenSSL has).
    """

    mode: str | None = None
    server_name: str | None = None
    ca_string: str | None = None
    ca_files: tuple[str, ...] = attrs.field(default=(), converter=_files)
    own_cert_string: str | None = None
    own_key_string: str | None = None
    cert_key_file: str | None = None
    auth_mode: str | None = None
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED

    def __attrs_post_init__(self) -> None:
        if self.mode not in (None, *_MODES):
            raise ValueError(f"TLSConfig mode must be 'client', 'server' or None, not {self.mode!r}")
        if self.auth_mode not in (None, *_AUTH_MODES):
            raise ValueError(f"TLSConfig auth_mode must be 'none', 'optional' or 'required', "
                             f"not {self.auth_mode!r}")
        if (self.own_cert_string is None) != (self.own_key_string is None):
            raise ValueError("TLSConfig: own_cert_string and own_key_string go together")
        if self.own_cert_string is not None and self.cert_key_file is not None:
            raise ValueError("TLSConfig: give own_cert_string and own_key_string, or "
                             "cert_key_file, not both")
        if self.minimum_version < ssl.TLSVersion.TLSv1_2 and \
                self.minimum_version != ssl.TLSVersion.MINIMUM_SUPPORTED:
            raise ValueError("TLSConfig: SP over TLS needs TLS 1.2 or newer")

    @property
    def has_own_certificate(self) -> bool:
        return self.own_cert_string is not None or self.cert_key_file is not None

    def context(self, *, server: bool) -> ssl.SSLContext:
        """A new ``ssl.SSLContext`` for this side. ``ValueError`` if the mode says the
        other side, or for a server without a certificate; ``ssl.SSLError`` or ``OSError``
        for a certificate, key or CA that OpenSSL cannot load."""
        side = "server" if server else "client"
        if self.mode is not None and self.mode != side:
            raise ValueError(f"a TLSConfig of mode {self.mode!r} cannot serve a "
                             f"{'bind' if server else 'connect'} (it needs mode {side!r} or None)")
        if server and not self.has_own_certificate:
            raise ValueError("a TLS server needs its certificate: own_cert_string and "
                             "own_key_string, or cert_key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = self.minimum_version
        context.maximum_version = self.maximum_version
        auth = self.auth_mode or ("none" if server else "required")
        if auth == "none":
            context.check_hostname = False
        context.verify_mode = _AUTH_MODES[auth]
        if self.ca_string is not None or self.ca_files:
            if self.ca_string is not None:
                context.load_verify_locations(cadata=self.ca_string)
            for path in self.ca_files:
                context.load_verify_locations(cafile=path)
        elif not server:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert_key_file is not None:
            context.load_cert_chain(self.cert_key_file)
        elif self.own_cert_string is not None and self.own_key_string is not None:
            _load_cert_strings(context, self.own_cert_string, self.own_key_string)
        return context


def _load_cert_strings(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``load_cert_chain`` takes files only: write the PEM text to a file only this user
    may read (``mkstemp`` makes it 0600), load it and remove it at once."""
    fd, path = tempfile.mkstemp(prefix="scaproust-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(cert if cert.endswith("\n") else cert + "\n")
            out.write(key)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


@attrs.frozen
class TLSSetup:
    """What a TLS endpoint hands each of its pipes: the context of its side, and for a
    client the name to check the server's certificate against (None: not checked)."""

    context: ssl.SSLContext
    server_side: bool
    server_hostname: str | None = None


def prepare(tls: TLSConfig | ssl.SSLContext | None, *, server: bool,
            host: str | None = None) -> TLSSetup:
    """The setup of a TLS endpoint from the ``tls`` option or argument.

    A :class:`TLSConfig` makes the context of its side; an ``ssl.SSLContext`` is used as
    given (a client context for ``connect``, a server one for ``bind``). A client checks
    the server's certificate against ``server_name`` or, by default, ``host`` (the URL's);
    with no configuration at all a client trusts the system's CAs and a server is refused
    (it needs a certificate). Raises ``ValueError`` (or OpenSSL's error loading a file).
    """
    if tls is None:
        if server:
            raise ValueError("a tls+tcp:// bind needs a certificate: pass tls=sp.TLSConfig(...) "
                             "(or an ssl.SSLContext) to bind() or set the socket's tls option")
        tls = TLSConfig()
    if isinstance(tls, TLSConfig):
        context = tls.context(server=server)
        name = tls.server_name
    elif isinstance(tls, ssl.SSLContext):
        context, name = tls, None
        wrong = ssl.PROTOCOL_TLS_CLIENT if server else ssl.PROTOCOL_TLS_SERVER
        if context.protocol == wrong:
            raise ValueError(f"a {'client' if server else 'server'} ssl.SSLContext cannot "
                             f"serve a {'bind' if server else 'connect'}")
    else:
        raise TypeError(f"tls must be an sp.TLSConfig, an ssl.SSLContext or None, not {tls!r}")
    if server:
        return TLSSetup(context, server_side=True)
    if name is None and context.check_hostname:
        name = host
    return TLSSetup(context, server_side=False, server_hostname=name)


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
    """A TCP socket seen through TLS: ``recv``/``sendmsg`` carry plaintext.

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
        chunks = []
        closed = False
        while True:
            try:
                chunk = self.ssl.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
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

    def sendmsg(self, buffers: Sequence[bytes | memoryview]) -> int:
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


def _join(buffers: Sequence[bytes | memoryview]) -> bytes | memoryview:
    """Up to :data:`WRITE_MAX` plaintext bytes from the front of ``buffers`` (at least the
    first buffer's, whatever its size is, without a copy when it is alone)."""
    first = buffers[0]
    if len(buffers) == 1 or len(first) >= WRITE_MAX:
        return first if len(first) <= WRITE_MAX else memoryview(first)[:WRITE_MAX]
    parts: list[bytes | memoryview] = []
    size = 0
    for buf in buffers:
        if size + len(buf) > WRITE_MAX:
            if not parts:
                parts.append(memoryview(buf)[:WRITE_MAX])
            break
        parts.append(buf)
        size += len(buf)
    return b"".join(parts)


class TLSTransport:
    """The transport of ``tls+tcp``, ``tls+tcp4`` (IPv4 only) and ``tls+tcp6`` (IPv6
    only): TCP's sockets, URLs and name resolution, with the scheme's restrictions."""

    IPC_FRAMING = False
    #: Pipes are core/tls_pipe.py's, driven by the ``tls_pipe`` machine.
    PIPE_KIND = "tls"

    def __init__(self, scheme: str) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"TLSTransport serves {', '.join(SCHEMES)}, not {scheme!r}")
        self.SCHEME = scheme
        self._family = {"tls+tcp4": socket.AF_INET, "tls+tcp6": socket.AF_INET6}.get(scheme)

    def __repr__(self) -> str:
        return f"<TLSTransport {self.SCHEME}>"

    def parse_address(self, url: str) -> Address:
        scheme, sep, rest = url.partition("://")
        if scheme != self.SCHEME or not sep:
            raise InvalidAddress(f"{url!r} is not a {self.SCHEME}:// address")
        try:
            inner = tcp.parse_address(f"tcp://{rest}")
        except InvalidAddress as err:
            raise InvalidAddress(str(err).replace(f"'tcp://{rest}'", repr(url))) from None
        assert inner.host is not None
        if self._family is not None and inner.host != WILDCARD_HOST:
            version: int
            try:
                version = ipaddress.ip_address(inner.host).version
            except ValueError:
                version = 0  # a name: resolve() checks its family
            if version and (version == 4) != (self._family == socket.AF_INET):
                raise InvalidAddress(f"{url!r}: {inner.host!r} is not an "
                                     f"IPv{6 if version == 4 else 4} address")
        return Address(self.SCHEME, host=inner.host, port=inner.port)

    def _tcp(self, address: Address) -> Address:
        return Address("tcp", host=address.host, port=address.port)

    def needs_resolution(self, address: Address) -> bool:
        return tcp.needs_resolution(self._tcp(address))

    def resolve(self, address: Address, *, passive: bool = False,
                ipv4_only: bool = False) -> Resolved:
        if self._family == socket.AF_INET6 and address.host == WILDCARD_HOST:
            assert address.port is not None
            return socket.AF_INET6, ("::", address.port, 0, 0)
        found = tcp.resolve(self._tcp(address), passive=passive,
                            ipv4_only=ipv4_only or self._family == socket.AF_INET)
        if self._family == socket.AF_INET6 and found[0] != socket.AF_INET6:
            raise InvalidAddress(f"{address.url!r}: {address.host!r} has no IPv6 address")
        return found

    def listen(self, address: Address, *, backlog: int = LISTEN_BACKLOG,
               ipv4_only: bool = False, resolved: Resolved | None = None,
               ) -> tuple[ListeningSocket, str]:
        if resolved is None:
            resolved = self.resolve(address, passive=True, ipv4_only=ipv4_only)
        listener, url = tcp.listen(self._tcp(address), backlog=backlog, resolved=resolved)
        assert address.host is not None
        url = format_tcp_url(address.host, int(url.rsplit(":", 1)[1]), self.SCHEME)
        listener.address, listener.url = address, url
        return listener, url

    def accept(self, listener: ListeningSocket) -> socket.socket | None:
        return tcp.accept(listener)

    def close_listener(self, listener: ListeningSocket) -> None:
        tcp.close_listener(listener)

    def connect(self, address: Address, *, ipv4_only: bool = False,
                resolved: Resolved | None = None) -> tuple[socket.socket | None, int]:
        if address.host == WILDCARD_HOST:
            raise InvalidAddress(f"{address.url!r}: cannot connect to the wildcard host '*'")
        if resolved is None:
            resolved = self.resolve(address, ipv4_only=ipv4_only)
        return tcp.connect(self._tcp(address), resolved=resolved)

    def finish_connect(self, sock: socket.socket) -> int:
        return tcp.finish_connect(sock)

    def configure_stream(self, sock: socket.socket, *, nodelay: bool = True,
                         keepalive: bool = False,
                         keepalive_timing: tuple[int, int, int] | None = None) -> None:
        tcp.configure_stream(sock, nodelay=nodelay, keepalive=keepalive,
                             keepalive_timing=keepalive_timing)
