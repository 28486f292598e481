"""Transports: the socket-level calls behind each URL scheme, and the wire framing.

The reactor looks a transport up by scheme and drives it through a small module interface
that every transport module provides (see :class:`Transport`); the frames themselves are
decoded and encoded by :mod:`scaproust.transports.framing`, which does no I/O, with the
transport's ``IPC_FRAMING`` flag choosing the frame prefix.
"""

from __future__ import annotations

import socket
from typing import Protocol

from scaproust.errors import InvalidAddress
from scaproust.transports import inproc, ipc, tcp
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket
from scaproust.transports.url import Address

__all__ = ["ListeningSocket", "Transport", "get_transport", "schemes"]

# mypy checks each module against ``Transport`` structurally.
_TRANSPORTS: dict[str, Transport] = {tcp.SCHEME: tcp, ipc.SCHEME: ipc}
# inproc's functions are the same over in-process objects (a BoundName, MemoryEnds) instead
# of sockets; core/memory_pipe.py drives its ends.
_TRANSPORTS[inproc.SCHEME] = inproc  # type: ignore[assignment]


class Transport(Protocol):
    """What a transport module provides (documentation and type checking only).

    TCP alone has host names, so it alone also provides ``needs_resolution(address)`` and
    ``resolve(address, *, passive, ipv4_only)``, whose result its ``listen`` and ``connect``
    take as ``resolved=``; callers look these up with ``getattr`` (a session resolves
    names off its I/O thread: see transports/tcp.py).
    """

    SCHEME: str
    #: True if frames carry the IPC type byte (``0x01 | size | payload``).
    IPC_FRAMING: bool

    def listen(self, address: Address | str, *, backlog: int = LISTEN_BACKLOG,
               ipv4_only: bool = False) -> tuple[ListeningSocket, str]: ...
    def accept(self, listener: ListeningSocket) -> socket.socket | None: ...
    def close_listener(self, listener: ListeningSocket) -> None: ...
    def connect(self, address: Address | str, *,
                ipv4_only: bool = False) -> tuple[socket.socket | None, int]: ...
    def finish_connect(self, sock: socket.socket) -> int: ...
    def configure_stream(self, sock: socket.socket, *, nodelay: bool = True,
                         keepalive: bool = False,
                         keepalive_timing: tuple[int, int, int] | None = None) -> None: ...


def get_transport(scheme: str) -> Transport:
    """Return the transport module for a URL scheme (``'tcp'`` or ``'ipc'``).

    Raises :class:`InvalidAddress` for an unknown scheme.
    """
    try:
        return _TRANSPORTS[scheme]
    except KeyError:
        raise InvalidAddress(
            f"unknown transport scheme {scheme!r} (supported: {', '.join(schemes())})"
        ) from None


def schemes() -> tuple[str, ...]:
    """The URL schemes with a registered transport, sorted."""
    return tuple(sorted(_TRANSPORTS))
