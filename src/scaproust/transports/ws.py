"""WebSocket transports: ``ws://host:port/path``, the SP WebSocket mapping over TCP, and
``wss://host:port/path``, the same inside TLS (transports/tls.py's ``TLSStream``).

The frames and the HTTP upgrade are :mod:`scaproust.transports.wscodec`'s (no I/O); the
pipe that runs them is core/ws_pipe.py (machine ``ws_pipe``). This module listens,
accepts, routes and connects:

* URLs: ``ws://host:port/path``; the path defaults to ``/``, the port to 80; ``*`` or an
  empty host listens on every IPv4 interface, ``[::1]`` is IPv6, port 0 lets the kernel
  choose (``ep.url`` reports it).
* Several sockets of one session may listen on one port with different paths, as in nng:
  the first bind of a port makes a :class:`SharedPort`, which owns the TCP socket, accepts
  on the session's loop, reads each connection's HTTP request head (bounded in size and by
  :data:`REQUEST_TIMEOUT`) and routes it by its path to the :class:`PathHandle` bound
  there (the handle a listener watches, like inproc's names: a bell rings per connection
  waiting). A path nobody listens on is answered 404, a head that is not HTTP 400, both
  before the connection is closed. A bind of the same path again, or of that port from
  another session, is ``sp.AddressInUse``.
* Dialing is TCP's; the pipe sends the upgrade request.
* ``wss://``: TLS comes before HTTP, so a port runs the TLS handshake of each connection
  before it can read the path (with the TLS configuration of the port's first bind: the
  certificate a client sees cannot depend on a path it has not sent yet), then routes the
  :class:`WssStream` (a ``TLSStream`` whose ``recv`` and ``sendmsg`` carry plaintext) as
  it routes a plain socket. A dialed pipe runs its TLS handshake itself (``wss_pipe``'s
  ``tls_handshaking``). A port serves ``ws`` or ``wss``, not both.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports import tcp
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket, Resolved
from scaproust.transports.tls import TLSSetup, TLSStream
from scaproust.transports.url import WILDCARD_HOST, Address, format_tcp_url
from scaproust.transports.wscodec import (
    HttpRefusal,
    Request,
    build_error_response,
    head_end,
    parse_request,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    class Timer(Protocol):
        """A scheduled call, as the session's loop returns it."""

        def cancel(self) -> None: ...

    class HasFileno(Protocol):
        def fileno(self) -> int: ...

    class PortLoop(Protocol):
        """What a shared port asks of its session's loop (``reactor.loop.Loop``)."""

        def call_later(self, delay: float, fn: Callable[..., object], /,
                       *args: object) -> Timer: ...
        def add_reader(self, fileobj: HasFileno, callback: Callable[[], object]) -> None: ...
        def remove_reader(self, fileobj: HasFileno) -> bool: ...
        def add_writer(self, fileobj: HasFileno, callback: Callable[[], object]) -> None: ...
        def remove_writer(self, fileobj: HasFileno) -> bool: ...

__all__ = ["REQUEST_TIMEOUT", "SCHEMES", "PathHandle", "SharedPort", "WSTransport", "WsSocket",
           "WssStream", "http_host", "route_key"]

log = logging.getLogger("scaproust.transport.ws")

#: The schemes served by :class:`WSTransport`.
SCHEMES = ("ws", "wss")
#: Seconds a connection may take to send its whole HTTP request head (after the TLS
#: handshake, for wss) before it is closed.
REQUEST_TIMEOUT = 10.0
#: Connections accepted per readiness of a shared port.
ACCEPT_BATCH = 64
#: The pauses after a failed accept, as a listener's (core/listener.py says why these).
ACCEPT_BACKOFF_MIN = 0.01
ACCEPT_BACKOFF_MAX = 1.0
#: Connections whose request head is still being read, per port, at most; the oldest is
#: dropped to make room (a flood of idle connections holds no more than this).
PENDING_MAX = 256
_DEFAULT_PORTS = {"ws": 80, "wss": 443}


class WsSocket(socket.socket):
    """An accepted TCP connection with the request head the port read from it:
    ``request`` (parsed) and ``leftover`` (bytes that came after the head)."""

    request: Request | None = None
    leftover: bytes = b""


class WssStream(TLSStream):
    """An accepted TLS connection with the request head the port read through it."""

    request: Request | None = None
    leftover: bytes = b""
    #: The TLS handshake is complete (the port reads the request head from then on).
    ssl_done = False

    def getpeername(self) -> tuple[str, int]:
        """The TCP peer's address (a listener names its pipes by it)."""
        return cast("tuple[str, int]", self.sock.getpeername())


def http_host(address: Address) -> str:
    """The ``Host`` header for a dialed address (an IPv6 literal in brackets)."""
    assert address.host is not None and address.port is not None
    return format_tcp_url(address.host, address.port, "x")[len("x://"):]


class PathHandle:
    """What one ``bind`` listens on: a path of a shared port. Connections routed here wait
    in ``ready`` and ring the bell (``fileno``) the listener watches."""

    def __init__(self, port: SharedPort, path: str, url: str) -> None:
        self.port = port
        self.path = path
        self.url = url
        self.ready: deque[WsSocket | WssStream] = deque()
        self._bell, self._ringer = socket.socketpair()
        self._bell.setblocking(False)
        self._ringer.setblocking(False)

    def __repr__(self) -> str:
        return f"<PathHandle {self.url}>"

    def fileno(self) -> int:
        return self._bell.fileno()

    def ring(self) -> None:
        with contextlib.suppress(OSError):
            self._ringer.send(b"\x00")

    def take(self) -> WsSocket | WssStream | None:
        """The next routed connection, or None (the bell is silenced when none is left)."""
        if self.ready:
            return self.ready.popleft()
        with contextlib.suppress(OSError):
            while len(self._bell.recv(4096)) == 4096:
                pass
        return None

    def close(self) -> None:
        while self.ready:
            self.ready.popleft().close()
        self._bell.close()
        self._ringer.close()


class _Pending:
    """A connection whose request head is being read (wss: its TLS handshake first)."""

    __slots__ = ("buf", "conn", "peer", "timer", "tls", "writing")

    def __init__(self, conn: socket.socket, peer: str, tls: WssStream | None) -> None:
        self.conn = conn
        self.peer = peer
        self.tls = tls  # wss: the TLS stream over ``conn``
        self.buf = b""
        self.timer: Timer | None = None
        self.writing = False  # wss: waiting for the socket to take handshake bytes


class SharedPort:
    """One listening TCP socket serving every path bound on it, driven by one session's
    loop (all under that session's lock)."""

    def __init__(self, key: tuple[int, str, int], listening: ListeningSocket,
                 loop: PortLoop, scheme: str, tls: TLSSetup | None) -> None:
        self.key = key
        self.listening = listening
        self.loop = loop
        self.scheme = scheme
        self.tls = tls  # wss: the TLS side of every connection of this port
        self.paths: dict[str, PathHandle] = {}
        self._pending: dict[socket.socket, _Pending] = {}
        # A failed accept (out of descriptors) leaves the connection queued and the socket
        # readable: the port stops watching it for a pause, doubling while the failures
        # last, as a listener does (core/listener.py). Retried at once, it spun a core
        # and logged a warning at every turn of the loop.
        self._backoff = ACCEPT_BACKOFF_MIN
        self._failures = 0
        self._backoff_timer: Timer | None = None
        loop.add_reader(listening, self._on_acceptable)

    def __repr__(self) -> str:
        return f"<SharedPort {self.key} {sorted(self.paths)}>"

    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn = tcp.accept(self.listening)
            except OSError as err:  # out of descriptors: retried after a pause
                self._back_off(err)
                return
            if self._failures:
                log.info("accept on %s works again after %d failed attempts",
                         self.listening.url, self._failures)
                self._failures, self._backoff = 0, ACCEPT_BACKOFF_MIN
            if conn is None:
                return
            if len(self._pending) >= PENDING_MAX:
                self._drop(next(iter(self._pending.values())), "too many connections "
                           "sending their request head at once")
            tls = WssStream(conn, self.tls) if self.tls is not None else None
            pending = _Pending(conn, _peer(conn), tls)
            self._pending[conn] = pending
            pending.timer = self.loop.call_later(REQUEST_TIMEOUT, self._expire, pending)
            self.loop.add_reader(conn, functools.partial(self._read, pending))

    def _read(self, pending: _Pending) -> None:
        tls = pending.tls
        try:
            if tls is not None and not tls.ssl_done:
                if not self._handshake(pending, tls):
                    return
            data = (tls or pending.conn).recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except ssl.SSLError as err:
            self._drop(pending, f"TLS handshake failed: {getattr(err, 'verify_message', None) or err.reason or err}", logging.WARNING)
            return
        except EOFError:
            self._drop(pending, "closed during the TLS handshake")
            return
        except OSError as err:
            self._drop(pending, f"read failed: {err}")
            return
        if not data:
            self._drop(pending, "closed before its request was complete")
            return
        pending.buf += data
        try:
            size = head_end(pending.buf)
            if not size:
                return
            request = parse_request(pending.buf[:size])
        except HttpRefusal as err:
            self._refuse(pending, err.status, str(err))
            return
        handle = self.paths.get(route_key(request.path))
        if handle is None:
            self._refuse(pending, 404, f"no socket listens on path {request.path!r}")
            return
        self._forget(pending)
        conn = pending.conn
        routed: WsSocket | WssStream
        if tls is not None:
            routed = tls
        else:
            routed = WsSocket(conn.family, conn.type, conn.proto, fileno=conn.detach())
        routed.request = request
        routed.leftover = pending.buf[size:]
        handle.ready.append(routed)
        handle.ring()

    def _handshake(self, pending: _Pending, tls: WssStream) -> bool:
        """Advance a wss connection's TLS handshake; True once it is done."""
        done = tls.handshake_step()
        tls.ssl_done = done
        if tls.backlog and not pending.writing:
            pending.writing = True
            self.loop.add_writer(pending.conn, functools.partial(self._read, pending))
        elif not tls.backlog and pending.writing:
            pending.writing = False
            self.loop.remove_writer(pending.conn)
        return done

    def _expire(self, pending: _Pending) -> None:
        pending.timer = None
        if pending.conn in self._pending:
            self._drop(pending, f"no complete request head within {REQUEST_TIMEOUT:g} s")

    def _forget(self, pending: _Pending) -> None:
        del self._pending[pending.conn]
        self.loop.remove_reader(pending.conn)
        if pending.writing:
            pending.writing = False
            self.loop.remove_writer(pending.conn)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None

    def _back_off(self, err: OSError) -> None:
        if not self._failures:
            log.warning("accept on %s failed: %s; retrying after a pause, %g s doubling up "
                        "to %g s, while it fails", self.listening.url, err,
                        ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX)
        self._failures += 1
        self.loop.remove_reader(self.listening)
        self._backoff_timer = self.loop.call_later(self._backoff, self._accept_again)
        self._backoff = min(self._backoff * 2, ACCEPT_BACKOFF_MAX)

    def _accept_again(self) -> None:
        self._backoff_timer = None
        self.loop.add_reader(self.listening, self._on_acceptable)

    def _drop(self, pending: _Pending, why: str, level: int = logging.INFO) -> None:
        log.log(level, "ws connection from %s to %s dropped: %s", pending.peer, self.listening.url, why)
        self._forget(pending)
        pending.conn.close()

    def _refuse(self, pending: _Pending, status: int, why: str) -> None:
        log.info("ws connection from %s to %s refused with %d: %s", pending.peer,
                 self.listening.url, status, why)
        self._forget(pending)
        with contextlib.suppress(OSError):  # best effort, then closed
            (pending.tls or pending.conn).sendmsg([build_error_response(status, why)])
        pending.conn.close()

    def close(self) -> None:
        """Stop accepting and drop every connection not routed yet (the last path is
        gone)."""
        if self._backoff_timer is not None:
            self._backoff_timer.cancel()
            self._backoff_timer = None
        self.loop.remove_reader(self.listening)
        for pending in list(self._pending.values()):
            self._forget(pending)
            pending.conn.close()
        tcp.close_listener(self.listening)


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "?"
    return format_tcp_url(host, port, "ws")[len("ws://"):]


def route_key(path: str) -> str:
    """What a request's path is routed by: without a trailing slash, as nng's listener
    serves ``/a/`` to a socket bound on ``/a``; the empty path, which nng's dialer sends
    for a URL without one (``GET  HTTP/1.1``), is ``/``."""
    return path.rstrip("/") or "/"


def _tcp(address: Address) -> Address:
    """The TCP address under a ws or wss one (its host and port)."""
    return Address("tcp", host=address.host, port=address.port)


_ports: dict[tuple[int, str, int], SharedPort] = {}
_ports_lock = threading.Lock()


class WSTransport:
    """The transport of ``ws://`` and ``wss://``."""

    IPC_FRAMING = False
    #: ``listen`` takes the session's loop (``loop=``), on which a shared port accepts, and
    #: the endpoint's TLS setup (``tls=``, wss only).
    LISTENS_ON_LOOP = True

    def __init__(self, scheme: str) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"WSTransport serves {', '.join(SCHEMES)}, not {scheme!r}")
        self.SCHEME = scheme
        #: Pipes are core/ws_pipe.py's: ``WSPipe`` (machine ``ws_pipe``) for ws,
        #: ``WSSPipe`` (``wss_pipe``, with the TLS handshake of a dialed pipe) for wss.
        self.PIPE_KIND = scheme

    def __repr__(self) -> str:
        return f"<WSTransport {self.SCHEME}>"

    def parse_address(self, url: str) -> Address:
        scheme, sep, rest = url.partition("://")
        if scheme != self.SCHEME or not sep:
            raise InvalidAddress(f"{url!r} is not a {self.SCHEME}:// address")
        slash = rest.find("/")
        netloc, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        if "?" in path or "#" in path:
            raise InvalidAddress(f"{url!r}: a query or fragment has no meaning here")
        if any(c <= " " or c == "\x7f" for c in path):
            raise InvalidAddress(f"{url!r}: the path holds a space or a control character")
        if netloc.startswith(":") or not netloc:
            netloc = WILDCARD_HOST + netloc
        try:
            port_given = urlsplit(f"//{netloc}").port is not None
        except ValueError:
            port_given = True  # let tcp's parser name what is wrong with it
        if not port_given:
            netloc = f"{netloc}:{_DEFAULT_PORTS[self.SCHEME]}"
        try:
            inner = tcp.parse_address(f"tcp://{netloc}")
        except InvalidAddress as err:
            raise InvalidAddress(str(err).replace(f"'tcp://{netloc}'", repr(url))) from None
        return Address(self.SCHEME, host=inner.host, port=inner.port, path=path)

    def needs_resolution(self, address: Address) -> bool:
        return tcp.needs_resolution(address)  # a host name (not '*' nor a literal)

    def resolve(self, address: Address, *, passive: bool = False,
                ipv4_only: bool = False) -> Resolved:
        return tcp.resolve(_tcp(address), passive=passive, ipv4_only=ipv4_only)

    def listen(self, address: Address, *, loop: PortLoop, tls: TLSSetup | None = None,
               backlog: int = LISTEN_BACKLOG, ipv4_only: bool = False,
               resolved: Resolved | None = None) -> tuple[PathHandle, str]:
        """Listen on ``address``'s path: on its port's :class:`SharedPort`, made now if
        this is the port's first path (wss: with ``tls``, which the port's later paths
        share). ``AddressInUse`` for a path bound already, or a port another session or
        the other scheme listens on."""
        if (tls is not None) != (self.SCHEME == "wss"):
            raise ValueError(f"a {self.SCHEME}:// bind takes {'a' if tls is None else 'no'} "
                             f"TLS setup")
        assert address.host is not None and address.port is not None and address.path
        if resolved is None:
            resolved = self.resolve(address, passive=True, ipv4_only=ipv4_only)
        family, sockaddr = resolved
        with _ports_lock:
            port = None
            if address.port:
                port = _ports.get((family, str(sockaddr[0]), address.port))
            if port is not None and port.loop is not loop:
                raise AddressInUse(f"{address.url!r}: the port is held by another session")
            if port is not None and port.scheme != self.SCHEME:
                raise AddressInUse(f"{address.url!r}: the port serves {port.scheme}://")
            if port is None:
                listening, url = tcp.listen(_tcp(address), backlog=backlog,
                                            resolved=resolved)
                number = int(url.rsplit(":", 1)[1])
                port = SharedPort((family, str(sockaddr[0]), number), listening, loop,
                                  self.SCHEME, tls)
                _ports[port.key] = port
            key = route_key(address.path)
            if key in port.paths:
                raise AddressInUse(f"{address.url!r}: a socket listens on that path already")
            url = format_tcp_url(address.host, port.key[2], self.SCHEME) + address.path
            handle = PathHandle(port, address.path, url)
            port.paths[key] = handle
        return handle, url

    def accept(self, handle: PathHandle) -> WsSocket | WssStream | None:
        return handle.take()

    def close_listener(self, handle: PathHandle) -> None:
        port = handle.port
        with _ports_lock:
            key = route_key(handle.path)
            if port.paths.get(key) is handle:
                del port.paths[key]
            last = not port.paths
            if last and _ports.get(port.key) is port:
                del _ports[port.key]
        handle.close()
        if last:
            port.close()

    def connect(self, address: Address, *, ipv4_only: bool = False,
                resolved: Resolved | None = None) -> tuple[socket.socket | None, int]:
        return tcp.connect(_tcp(address), ipv4_only=ipv4_only, resolved=resolved)

    def finish_connect(self, sock: socket.socket) -> int:
        return tcp.finish_connect(sock)

    def configure_stream(self, sock: socket.socket | TLSStream, *, nodelay: bool = True,
                         keepalive: bool = False,
                         keepalive_timing: tuple[int, int, int] | None = None) -> None:
        if isinstance(sock, TLSStream):  # an accepted wss connection: the TCP socket under it
            sock = sock.sock
        tcp.configure_stream(sock, nodelay=nodelay, keepalive=keepalive,
                             keepalive_timing=keepalive_timing)

