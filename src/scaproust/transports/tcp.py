"""TCP transport: the socket calls the reactor makes for ``tcp://`` endpoints.

Every function returns non-blocking sockets and never blocks, except for name resolution:
:func:`resolve` looks a host name up with ``getaddrinfo`` and may block for seconds on DNS.
Address literals (``127.0.0.1``, ``[::1]``) and ``*`` never need it (:func:`needs_resolution`
is False for them). A session never resolves on its I/O thread: ``bind()`` resolves in the
caller's thread and hands the result to :func:`listen` (``resolved=``); a dialer resolves in
a worker thread (:mod:`scaproust.transports.resolver`) and hands the result to
:func:`connect`. Called without ``resolved``, both resolve a name themselves (blocking).

The interface, shared with :mod:`scaproust.transports.ipc` so the reactor can drive either
through the module returned by ``get_transport(scheme)``:

* ``listen(address, *, backlog=LISTEN_BACKLOG) -> (ListeningSocket, resolved_url)``
* ``accept(listener) -> socket | None``
* ``close_listener(listener) -> None``
* ``connect(address) -> (socket | None, err)``, then ``finish_connect(sock) -> err``
* ``configure_stream(sock) -> None``
* ``SCHEME`` and ``IPC_FRAMING`` (False here: TCP frames have no type byte)

and, TCP only (the other transports have no names to resolve): ``needs_resolution(address)``
and ``resolve(address, *, passive, ipv4_only) -> (family, sockaddr)``, whose result
``listen`` and ``connect`` take as ``resolved=``; and ``set_read_low_water(sock, nbytes)``
(a pipe waits for a whole large body before it reads: core/pipe.py).

Name resolution policy: when a host name resolves to both IPv4 and IPv6 addresses (e.g.
``localhost``), the IPv4 one is used, by both listeners and dialers. Taking whatever
``getaddrinfo`` lists first would let a listener bind 127.0.0.1 while a dialer on the same
machine tries ::1 (the order depends on gai.conf); nanomsg also defaults to IPv4 only.
IPv6 is used when asked for by a literal (``tcp://[::1]:5555``) or when the name has no
IPv4 address.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from typing import TypeAlias

import attrs

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports.url import WILDCARD_HOST, Address, format_tcp_url, parse_url

#: The kernel's queue of connections not yet accepted (it caps this at net.core.somaxconn).
#: Once a small queue is full, new clients wait for their SYN to be retransmitted (1 s, then
#: 3 s, ...): 10,000 clients took 45 s to connect to a listener with the old 128.
LISTEN_BACKLOG = socket.SOMAXCONN

#: A socket address as ``getaddrinfo`` gives it: ``(host, port)`` for IPv4, ``(host, port,
#: flowinfo, scope_id)`` for IPv6 (typeshed adds ``(int, bytes)``, for a Python built
#: without IPv6 support).
SockAddr: TypeAlias = "tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]"
#: What :func:`resolve` finds: ``(family, sockaddr)``.
Resolved: TypeAlias = "tuple[int, SockAddr]"
#: One entry of ``getaddrinfo``: ``(family, type, proto, canonname, sockaddr)``.
AddrInfo: TypeAlias = "tuple[int, int, int, str, SockAddr]"

__all__ = [
    "IPC_FRAMING",
    "SCHEME",
    "ListeningSocket",
    "accept",
    "close_listener",
    "configure_stream",
    "connect",
    "finish_connect",
    "listen",
    "parse_address",
    "needs_resolution",
    "resolve",
    "set_read_low_water",
]

#: The blocking name lookup, with ``socket.getaddrinfo``'s signature. Called for host names
#: only (literals are parsed with ``AI_NUMERICHOST``, which never blocks), so a test may
#: replace it with a slow or failing fake.
getaddrinfo = socket.getaddrinfo

SCHEME = "tcp"
#: TCP frames are ``size u64 BE | payload``, with no type byte (WIRE.md, "Framing").
IPC_FRAMING = False

# errnos meaning "no connection waiting" or "that one went away before we took it": accept()
# returns None for these and the reactor simply waits for the next readiness event.
_ACCEPT_AGAIN = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNABORTED, errno.EPROTO}
)


@attrs.define(eq=False)
class ListeningSocket:
    """A listening socket and what the transport needs to close it properly.

    ``sock`` is non-blocking and may be registered with a selector directly (``fileno()`` is
    forwarded). ``address`` is what was asked for and ``url`` the resolved URL (actual
    port for port 0).

    IPC only (None for TCP): ``path`` is the absolute path of the socket file this listener
    created (absolute so that a later ``chdir`` does not change which file is removed), and
    ``identity`` its ``(st_dev, st_ino)``, so that closing the listener unlinks that file and
    never one that has replaced it since.
    """

    sock: socket.socket
    address: Address
    url: str
    path: str | None = None
    identity: tuple[int, int] | None = None

    def fileno(self) -> int:
        """The listening socket's file descriptor (for selectors)."""
        return self.sock.fileno()


def _as_address(address: Address | str) -> Address:
    if isinstance(address, str):
        address = parse_url(address)
    if address.scheme != SCHEME:
        raise InvalidAddress(f"{address.url!r} is not a {SCHEME}:// address")
    return address


def parse_address(url: str) -> Address:
    """A ``tcp://`` URL as an :class:`Address`; :class:`InvalidAddress` if it is not one."""
    return _as_address(url)


def _literal(host: str, port: int, flags: int) -> Sequence[AddrInfo] | None:
    """``getaddrinfo`` of an address literal (never blocks: ``AI_NUMERICHOST``); None for a
    host name."""
    try:
        return socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                  socket.IPPROTO_TCP, flags | socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None


def needs_resolution(address: Address) -> bool:
    """True if ``address`` names its host (``localhost``, ``example.com``): only
    :func:`resolve` can turn it into an IP address, possibly blocking on DNS. False for
    ``*`` and for IPv4 and IPv6 literals."""
    assert address.host is not None
    if address.host == WILDCARD_HOST:
        return False
    try:  # pure Python: no syscall, no lazy import (which could fail out of descriptors)
        ipaddress.ip_address(address.host)
    except ValueError:
        return True
    return False


def resolve(address: Address | str, *, passive: bool = False, ipv4_only: bool = False,
            ipv6_only: bool = False) -> Resolved:
    """Return ``(family, sockaddr)`` for a TCP address: blocks on DNS for a host name, so a
    session calls it in the caller's thread (bind) or a worker thread (dial), never on its
    I/O thread. With ``ipv4_only`` an address that has no IPv4 form is InvalidAddress, as is
    a name that does not resolve; ``ipv6_only`` likewise (``tls+tcp6``)."""
    return _resolve(_as_address(address), passive=passive, ipv4_only=ipv4_only,
                    ipv6_only=ipv6_only)


def _resolve(address: Address, *, passive: bool, ipv4_only: bool = False,
             ipv6_only: bool = False) -> Resolved:
    """Return ``(family, sockaddr)`` for a TCP address (may block on DNS); with ``ipv4_only``
    an address that has no IPv4 form is InvalidAddress, with ``ipv6_only`` one that has no
    IPv6 form."""
    assert address.host is not None and address.port is not None
    if address.host == WILDCARD_HOST:
        # '*' means every IPv4 interface, like nanomsg and nng.
        return socket.AF_INET, ("0.0.0.0", address.port)
    flags = socket.AI_NUMERICSERV | (socket.AI_PASSIVE if passive else 0)
    infos: Sequence[AddrInfo] | None = _literal(address.host, address.port, flags)
    if infos is None:
        try:
            infos = getaddrinfo(address.host, address.port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                socket.IPPROTO_TCP, flags)
        except (socket.gaierror, UnicodeError) as exc:
            raise InvalidAddress(f"{address.url!r}: cannot resolve {address.host!r}: {exc}") from None
    if ipv4_only and ipv6_only:
        raise InvalidAddress(f"{address.url!r}: an IPv6-only address with ipv4_only set")
    families = ((socket.AF_INET,) if ipv4_only else (socket.AF_INET6,) if ipv6_only
                else (socket.AF_INET, socket.AF_INET6))
    usable = [i for i in infos if i[0] in families]
    if not usable:
        kind = ("IPv4 address (ipv4_only is set)" if ipv4_only else "IPv6 address"
                if ipv6_only else "IPv4 or IPv6 address")
        raise InvalidAddress(f"{address.url!r}: {address.host!r} has no {kind}")
    # Prefer IPv4 when both are offered (see the module docstring).
    for family, _type, _proto, _canon, sockaddr in usable:
        if family == socket.AF_INET:
            return family, sockaddr
    family, _type, _proto, _canon, sockaddr = usable[0]
    return family, sockaddr


def configure_stream(sock: socket.socket, *, nodelay: bool = True, keepalive: bool = False,
                     keepalive_timing: tuple[int, int, int] | None = None) -> None:
    """Make a connected (or connecting) TCP socket ready for a pipe.

    Non-blocking, and TCP_NODELAY: the writer already coalesces frames into one ``sendmsg``,
    so Nagle would only add latency to REQ/REP round trips. Used for accepted and dialed
    sockets alike. With ``keepalive``, ``keepalive_timing`` is (idle, interval, count): the
    kernel declares the connection dead after idle + interval * count seconds of silence
    from the peer (where the platform has those options; Linux does).
    """
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(keepalive))
    if keepalive and keepalive_timing is not None:
        for name, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
                               keepalive_timing, strict=True):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


#: Linux reports a TCP socket readable (poll, epoll) only once SO_RCVLOWAT bytes are
#: queued, or on EOF or an error; it also grows the receive buffer to hold them, and caps
#: the value at half the largest buffer it allows. Not every other platform's poll()
#: honours the option, so it is used on Linux only.
_LOW_WATER = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVLOWAT")


#: A large mark is set only once the receive buffer holds this many times the body. When
#: the buffer is smaller than a mark needs, Linux grows it to fit the mark and clamps the
#: receive window to the mark: the peer may then send one body and no more until it is
#: read, and each message waits for the one before (stop and wait). The kernel grows the
#: buffer by itself as a stream's reads keep up (autotuning), which a mark set early cut
#: short. Measured with 1 MiB messages between two scaproust processes, 50 runs each way:
#: 19 under 4.5 GB/s when any mark was set at once (their buffer, where read, at 1.2-1.9
#: MiB), 5 with this rule alone (docs/ARCHITECTURE.md, "The pipe").
LOW_WATER_ROOM = 2
#: A buffer smaller than that is first asked to grow to this many bodies, by a mark this
#: large set for a moment: Linux grows a buffer that the user did not fix to hold a mark,
#: and clamps the window to it, here several bodies. Left to autotuning, a stream whose
#: buffer stayed under two bodies read each body in chunks, and a body read in chunks is
#: copied once more: 1 MiB messages between two scaproust processes, 40 runs each way
#: alternated (2026-12-07), runs under 4.5 GB/s 8 -> 0, the slowest 3.6 -> 5.5 GB/s, the
#: median 5.9 -> 6.1 (growing to 2 bodies instead of 4 left runs under 4 GB/s, their
#: buffer at 2 MiB).
LOW_WATER_GROW = 4


def set_read_low_water(sock: socket.socket, nbytes: int) -> bool | None:
    """Report ``sock`` readable only once ``nbytes`` bytes are queued (1: as usual).

    A pipe waiting for a large body asks for all of it: one wake-up and one ``recv`` then
    take the body, where it took a wake-up, a read and a copy per chunk (core/pipe.py,
    ``_read_whole_body``). A receive buffer smaller than ``LOW_WATER_ROOM`` times the body
    is first asked to grow to ``LOW_WATER_GROW`` bodies. True once set; None, the mark at
    one byte, if the buffer still cannot hold ``LOW_WATER_ROOM`` bodies (its size fixed by
    an ``SO_RCVBUF`` set on it, or the system's largest buffer too small: the pipe reads
    this body in chunks and asks again at the next); False where the platform cannot (the
    pipe reads chunks)."""
    if not _LOW_WATER:
        return False
    if nbytes > 1 and _receive_buffer(sock) < LOW_WATER_ROOM * nbytes:
        # Linux caps a mark at half the largest buffer it allows (a fixed buffer: at half
        # that buffer) and grows an unfixed buffer to hold what it granted.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, LOW_WATER_GROW * nbytes)
        if _receive_buffer(sock) < LOW_WATER_ROOM * nbytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            return None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
    return True


def _receive_buffer(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def listen(address: Address | str, *, backlog: int = LISTEN_BACKLOG, ipv4_only: bool = False,
           resolved: Resolved | None = None) -> tuple[ListeningSocket, str]:
    """Bind and listen on a TCP address; return ``(listener, resolved_url)``.

    ``address`` is an :class:`Address` or a ``tcp://`` URL. The host is resolved with
    ``getaddrinfo`` (``AI_PASSIVE``) unless ``resolved`` gives what :func:`resolve`
    returned for it (``passive=True``); ``*`` binds 0.0.0.0. The socket has SO_REUSEADDR (so
    a restarted listener can bind while old connections sit in TIME_WAIT; never
    SO_REUSEPORT, which would let two listeners share a port silently), is listening and is
    non-blocking. ``resolved_url`` is the canonical URL with the actual port, e.g.
    ``tcp://127.0.0.1:0`` -> ``tcp://127.0.0.1:41234``, ``tcp://*:0`` -> ``tcp://*:41234``,
    ``tcp://[::1]:0`` -> ``tcp://[::1]:41234``.

    Raises :class:`AddressInUse` if the port is taken, :class:`InvalidAddress` if the host
    cannot be resolved or is not an address of this machine (EADDRNOTAVAIL); any other
    ``OSError`` (e.g. ``PermissionError`` for a privileged port) propagates unchanged.
    """
    address = _as_address(address)
    if resolved is None:
        resolved = _resolve(address, passive=True, ipv4_only=ipv4_only)
    family, sockaddr = resolved
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            # On Windows SO_REUSEADDR allows stealing a bound port: never set it there.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"{address.url!r}: address already in use") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidAddress(
                    f"{address.url!r}: {address.host!r} is not an address of this machine"
                ) from None
            raise
        sock.listen(backlog)
        sock.setblocking(False)
        port = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    assert address.host is not None
    url = format_tcp_url(address.host, port)
    return ListeningSocket(sock=sock, address=address, url=url), url


def accept(listener: ListeningSocket) -> socket.socket | None:
    """Accept one pending connection without blocking.

    Returns the new socket, non-blocking and configured (:func:`configure_stream`), or None
    if no connection is waiting (EAGAIN) or the one waiting was aborted by its peer. Other
    errors (notably EMFILE/ENFILE, out of file descriptors) propagate: the reactor should
    back off rather than spin on a listener that stays readable.
    """
    try:
        conn, _peer = listener.sock.accept()
    except OSError as exc:
        if exc.errno in _ACCEPT_AGAIN:
            return None
        raise
    try:
        configure_stream(conn)
    except OSError:
        # The peer may already have reset the connection: treat it as never accepted.
        conn.close()
        return None
    return conn


def close_listener(listener: ListeningSocket) -> None:
    """Close a listener's socket (idempotent)."""
    listener.sock.close()


def connect(address: Address | str, *, ipv4_only: bool = False,
            resolved: Resolved | None = None) -> tuple[socket.socket | None, int]:
    """Start connecting to a TCP address without blocking; return ``(sock, err)``.

    The contract (the same for IPC):

    * ``err == 0``: connected; ``sock`` is ready for the header exchange.
    * ``err == errno.EINPROGRESS``: pending (the normal case for TCP). Wait until ``sock`` is
      writable, then call :func:`finish_connect`: 0 means connected, anything else is the
      failure's errno and the caller must close ``sock``.
    * any other ``err``: the attempt failed at once (e.g. ECONNREFUSED); ``sock`` is None
      and the socket has already been closed. The dialer schedules a retry.

    ``resolved`` is what :func:`resolve` returned for ``address``; without it a host name
    is resolved here, which may block (a dialer never lets it: it resolves names in a
    worker thread first).

    Raises :class:`InvalidAddress` for the wildcard host ``*`` (there is nothing to connect
    to) or a host that cannot be resolved.
    """
    address = _as_address(address)
    if address.host == WILDCARD_HOST:
        raise InvalidAddress(f"{address.url!r}: cannot connect to the wildcard host '*'")
    if resolved is None:
        resolved = _resolve(address, passive=False, ipv4_only=ipv4_only)
    family, sockaddr = resolved
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        configure_stream(sock)
        err = sock.connect_ex(sockaddr)
    except BaseException:
        sock.close()
        raise
    if os.name == "nt" and err == errno.EWOULDBLOCK:  # pragma: no cover - Windows only
        err = errno.EINPROGRESS  # Winsock reports a pending connect as WSAEWOULDBLOCK
    if err == 0 and _connected_to_itself(sock):
        err = errno.ECONNREFUSED
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        return None, err
    return sock, err


def finish_connect(sock: socket.socket) -> int:
    """Return the outcome of a pending connect once ``sock`` is writable: 0 or an errno.

    A socket connected to itself is refused (``ECONNREFUSED``): see
    :func:`_connected_to_itself`. Does not close ``sock`` on failure: the caller
    unregisters it from its selector first.
    """
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == 0 and _connected_to_itself(sock):
        return errno.ECONNREFUSED
    return err


def _connected_to_itself(sock: socket.socket) -> bool:
    """Whether a connect to a local port nobody listens on was made from that very port.

    The kernel picks a dialer's own port at random in the ephemeral range; when it picks
    the port being dialed and nobody listens there, TCP's simultaneous open connects the
    socket to itself: it then reads what it writes. A dialer that retries a local address
    many times (a peer restarting) meets it sooner or later; a PAIR or BUS would then pair
    with itself, and the address stays taken for the listener coming back."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:
        return False  # not connected after all: the next step says why
