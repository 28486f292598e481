"""Transports: the socket-level calls behind each URL scheme, and the wire framing.

Every scheme maps to a transport through one registry (:func:`register_transport`): the
built-in tcp (and tcp4, tcp6), ipc, inproc, abstract, tls+tcp and ws are registered below exactly as a user's
transport is, each by a factory that imports its module at the scheme's first use (tcp, ipc
and inproc load with the core anyway; the others, and ``ssl``, only when used). A transport is any object with the attributes of :class:`Transport` (a module
will do); docs/TRANSPORTS.md describes the interface. The frames themselves are decoded and
encoded by :mod:`scaproust.transports.framing`, which does no I/O, with the transport's
``IPC_FRAMING`` flag choosing the frame prefix.
"""

from __future__ import annotations

import importlib
import re
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from scaproust.errors import InvalidAddress
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket
from scaproust.transports.url import Address

__all__ = ["Address", "ListeningSocket", "Transport", "TransportFactory", "get_transport", "lookup",
           "register_transport", "schemes", "unregister_transport"]


class Transport(Protocol):
    """What a transport provides (documentation and type checking: docs/TRANSPORTS.md).

    Optional attributes, looked up with ``getattr``: ``PIPE_KIND`` (``"stream"``, the
    default: a socket-like stream driven by core/pipe.py; ``"memory"``: inproc's message
    ends; ``"tls"``: a TCP stream wrapped in TLS by core/tls_pipe.py), ``needs_resolution``
    and ``resolve`` (a transport with host names: a session resolves them off its I/O
    thread, see transports/tcp.py), ``peer_name(stream) -> str``,
    ``set_read_low_water(stream, nbytes) -> bool | None`` (a stream pipe then reads a large
    body in one piece once it is all there: core/pipe.py; None: not for this body).
    """

    SCHEME: str
    #: True if frames carry the IPC type byte (``0x01 | size | payload``).
    IPC_FRAMING: bool

    def parse_address(self, url: str) -> Address: ...
    def listen(self, address: Address, *, backlog: int = LISTEN_BACKLOG,
               ipv4_only: bool = False) -> tuple[ListeningSocket, str]: ...
    def accept(self, listener: ListeningSocket) -> socket.socket | None: ...
    def close_listener(self, listener: ListeningSocket) -> None: ...
    def connect(self, address: Address, *,
                ipv4_only: bool = False) -> tuple[socket.socket | None, int]: ...
    def finish_connect(self, sock: socket.socket) -> int: ...
    def configure_stream(self, sock: socket.socket, *, nodelay: bool = True,
                         keepalive: bool = False,
                         keepalive_timing: tuple[int, int, int] | None = None) -> None: ...


#: What :func:`register_transport` takes: called with the scheme, once, at the first
#: ``bind``/``connect`` that uses it, and returns the transport (so one class may serve
#: several schemes, as tcp4 and tcp6, or tls+tcp, tls+tcp4 and tls+tcp6 do).
TransportFactory = Callable[[str], Transport]

#: What every transport has (``Transport``'s members).
_REQUIRED = ("SCHEME", "IPC_FRAMING", "parse_address", "listen", "accept", "close_listener",
             "connect", "finish_connect", "configure_stream")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_lock = threading.Lock()
_factories: dict[str, TransportFactory] = {}
_made: dict[str, Transport] = {}


def register_transport(scheme: str, factory: TransportFactory, *, replace: bool = False) -> None:
    """Make ``scheme://`` URLs usable in ``bind`` and ``connect`` of every session.

    ``factory(scheme)`` returns the transport; it is called once, at the scheme's first use.
    A scheme already registered raises ``ValueError`` unless ``replace`` is True (the new
    factory then serves the endpoints made from now on; existing ones keep theirs).
    """
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ValueError(f"transport scheme must be lower-case letters, digits, '+', '-' or '.' "
                         f"starting with a letter, not {scheme!r}")
    if not callable(factory):
        raise TypeError(f"transport factory must be callable, not {factory!r}")
    with _lock:
        if scheme in _factories and not replace:
            raise ValueError(f"transport scheme {scheme!r} is already registered "
                             f"(pass replace=True to replace it)")
        _factories[scheme] = factory
        _made.pop(scheme, None)


def unregister_transport(scheme: str) -> None:
    """Forget ``scheme`` (``KeyError`` if it is not registered); endpoints already made
    keep their transport."""
    with _lock:
        del _factories[scheme]
        _made.pop(scheme, None)


def get_transport(scheme: str) -> Transport:
    """Return the transport of a URL scheme.

    Raises :class:`InvalidAddress` for a scheme nobody registered.
    """
    transport = _made.get(scheme)
    if transport is not None:
        return transport
    with _lock:
        factory = _factories.get(scheme)
    if factory is None:
        raise InvalidAddress(
            f"unknown transport scheme {scheme!r} (supported: {', '.join(schemes())})")
    transport = factory(scheme)
    missing = [name for name in _REQUIRED if not hasattr(transport, name)]
    if missing:
        raise TypeError(f"the transport made for {scheme!r} ({transport!r}) lacks "
                        f"{', '.join(missing)} (docs/TRANSPORTS.md)")
    with _lock:
        if _factories.get(scheme) is factory:
            transport = _made.setdefault(scheme, transport)
    return transport


def lookup(url: str) -> tuple[Transport, Address]:
    """The transport of ``url``'s scheme and the address it parsed from ``url``.

    Raises :class:`InvalidAddress` for something that is not a URL, an unknown scheme, or
    what the transport refuses."""
    if not isinstance(url, str):
        raise InvalidAddress(f"endpoint URL must be a str, got {type(url).__name__}")
    scheme, sep, _rest = url.partition("://")
    if not sep:
        raise InvalidAddress(
            f"{url!r}: not a URL, expected scheme://address (e.g. tcp://127.0.0.1:5555)")
    transport = get_transport(scheme)
    address = transport.parse_address(url)
    if address.scheme != scheme:
        raise InvalidAddress(f"{url!r}: the {scheme} transport parsed it as {address.url!r}")
    return transport, address


def schemes() -> tuple[str, ...]:
    """The URL schemes with a registered transport, sorted."""
    with _lock:
        return tuple(sorted(_factories))


def _lazy(module: str, attribute: str | None = None) -> TransportFactory:
    """A factory that imports ``scaproust.transports.<module>`` when first called and
    returns the module itself, or its ``attribute`` called with the scheme (a class
    serving several schemes)."""
    def factory(scheme: str) -> Transport:
        loaded = importlib.import_module(f"scaproust.transports.{module}")
        if attribute is None:
            return loaded  # a module with Transport's names
        made: Transport = getattr(loaded, attribute)(scheme)
        return made
    return factory


# The built-in transports, registered the way a user's are, each loaded at its first use
# (test_protocol_info.py pins what ``import scaproust`` loads). Their schemes are written
# here so that registering them imports nothing; test_transport_registry.py checks them
# against each module's SCHEME/SCHEMES. inproc's functions are the same over in-process
# objects (a BoundName, MemoryEnds) instead of sockets: core/memory_pipe.py drives its
# ends, so its module does not match ``Transport`` exactly.
BUILTIN: dict[str, tuple[str, str | None]] = {
    "tcp": ("tcp", None),
    "tcp4": ("tcp_family", "TCPTransport"),
    "tcp6": ("tcp_family", "TCPTransport"),
    "ipc": ("ipc", None),
    "abstract": ("abstract", None),
    "tls+tcp": ("tls", "TLSTransport"),
    "tls+tcp4": ("tls", "TLSTransport"),
    "tls+tcp6": ("tls", "TLSTransport"),
    "inproc": ("inproc", None),
    "ws": ("ws", "WSTransport"),
    "wss": ("ws", "WSTransport"),
}
for _scheme, (_name, _attribute) in BUILTIN.items():
    register_transport(_scheme, _lazy(_name, _attribute))
