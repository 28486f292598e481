"""Abstract transport: ``abstract://name``, the IPC mapping on a Linux abstract socket.

A Linux abstract socket is a Unix-domain socket whose address starts with a NUL byte: it
has a name but no file, so nothing is left on the file system and nothing stale can block a
new bind (the name is freed when the last socket bound to it closes). Frames are the IPC
ones (``0x01 | size | payload``), as nng's abstract transport sends them.

The name is the URL's text after ``abstract://``, percent-decoded to bytes (so
``abstract://a%00b`` is the three bytes ``a``, NUL, ``b``; any byte may appear), at most
:data:`NAME_MAX` (107) bytes: the kernel's ``sun_path`` holds 108, the first being the NUL.
An empty name (``abstract://``) binds to a name the kernel picks (autobind: five hex
digits on Linux), which the endpoint's URL then reports, percent-encoded; there is
nothing to connect to under an empty name.

Same interface as :mod:`scaproust.transports.ipc` otherwise (docs/TRANSPORTS.md).
"""

from __future__ import annotations

import errno
import socket
import sys
from urllib.parse import quote, unquote_to_bytes

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports.ipc import accept, configure_stream, connect_unix
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket, finish_connect
from scaproust.transports.url import Address

__all__ = [
    "IPC_FRAMING",
    "NAME_MAX",
    "SCHEME",
    "accept",
    "close_listener",
    "configure_stream",
    "connect",
    "finish_connect",
    "format_url",
    "listen",
    "name_of",
    "parse_address",
]

SCHEME = "abstract"
#: The IPC mapping: frames carry the ``0x01`` type byte.
IPC_FRAMING = True
#: The longest name: ``sun_path`` (108 bytes on Linux) less the leading NUL.
NAME_MAX = 107


def format_url(name: bytes) -> str:
    """``abstract://`` and ``name`` percent-encoded (every byte but letters, digits and
    ``-._~``), the form ``ep.url`` reports."""
    return f"{SCHEME}://{quote(name, safe='')}"


def parse_address(url: str) -> Address:
    """An ``abstract://name`` URL as an :class:`Address` whose ``path`` is the URL's text
    after ``abstract://`` (the name, percent-encoded; :func:`name_of` decodes it).

    Raises :class:`InvalidAddress` off Linux, and for a name over :data:`NAME_MAX` bytes.
    """
    scheme, sep, rest = url.partition("://")
    if scheme != SCHEME or not sep:
        raise InvalidAddress(f"{url!r} is not an {SCHEME}:// address")
    if not sys.platform.startswith("linux"):
        raise InvalidAddress(f"{url!r}: abstract sockets exist on Linux only")
    name = unquote_to_bytes(rest)
    if len(name) > NAME_MAX:
        raise InvalidAddress(f"{url!r}: the name is {len(name)} bytes once decoded; an "
                             f"abstract socket name has at most {NAME_MAX}")
    return Address(SCHEME, path=rest)


def name_of(address: Address) -> bytes:
    """The name's bytes (percent-decoded), without the leading NUL."""
    assert address.path is not None
    return unquote_to_bytes(address.path)


def listen(address: Address, *, backlog: int = LISTEN_BACKLOG,
           ipv4_only: bool = False) -> tuple[ListeningSocket, str]:
    """Bind and listen on the abstract name; return ``(listener, url)``.

    ``url`` is the URL as given, or for an empty name ``abstract://`` and the name the
    kernel chose. :class:`AddressInUse` if a socket holds the name already.
    """
    name = name_of(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            # An empty address asks the kernel for a name (autobind); otherwise NUL + name.
            sock.bind(b"\0" + name if name else b"")
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"{address.url!r}: the abstract name is taken") from None
            raise
        sock.listen(backlog)
        sock.setblocking(False)
        url = address.url
        if not name:
            bound = sock.getsockname()
            url = format_url(bound[1:] if isinstance(bound, bytes) else bound[1:].encode())
    except BaseException:
        sock.close()
        raise
    return ListeningSocket(sock=sock, address=address, url=url), url


def close_listener(listener: ListeningSocket) -> None:
    """Close the listening socket; the name is free again (there is no file). Idempotent."""
    listener.sock.close()


def connect(address: Address, *, ipv4_only: bool = False) -> tuple[socket.socket | None, int]:
    """Connect to the abstract name without blocking: ``(sock, 0)``, or ``(None, errno)``
    (ECONNREFUSED: nobody listens; EAGAIN: its backlog is full). The same contract as
    :func:`scaproust.transports.tcp.connect`. :class:`InvalidAddress` for an empty name."""
    name = name_of(address)
    if not name:
        raise InvalidAddress(f"{address.url!r}: cannot connect to an empty abstract name "
                             f"(only a bind may leave the name to the kernel)")
    return connect_unix(address, b"\0" + name)
