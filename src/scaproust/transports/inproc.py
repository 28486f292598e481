"""In-process transport: ``inproc://name`` between sockets of one Python process.

nng and nanomsg have it too; it never leaves the process, so no peer of another library
can be on the other end. Here it reuses the stream machinery: a ``connect`` makes a
connected Unix socket pair, keeps one end and hands the other to the listener bound on
that name, whose selector-visible "bell" (another socket pair) rings once per pending
connection. From there the pipe is like any other: header exchange, frames (IPC framing),
one ``sendmsg`` per batch.

Names live in one registry per process, shared by every session: binding a name twice is
``AddressInUse``; connecting to a name nobody bound is refused (the dialer retries), as a
connect to a missing IPC path is.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections import deque

from scaproust.core.errors import AddressInUse
from scaproust.transports.tcp import LISTEN_BACKLOG, finish_connect
from scaproust.transports.url import Address, parse_url

__all__ = ["IPC_FRAMING", "SCHEME", "accept", "close_listener", "configure_stream", "connect",
           "finish_connect", "listen"]

SCHEME = "inproc"
#: Both ends are scaproust: any framing would do; the IPC one carries a type byte check.
IPC_FRAMING = True

_registry: dict[str, InprocListener] = {}
_lock = threading.Lock()


class InprocListener:
    """A bound name: connections wait in ``pending`` and ring the bell."""

    def __init__(self, address: Address):
        self.address = address
        self.url = address.url
        self.pending: deque[socket.socket] = deque()
        self._bell, self._ringer = socket.socketpair()
        self._bell.setblocking(False)
        self._ringer.setblocking(False)
        self.closed = False

    def fileno(self) -> int:
        return self._bell.fileno()

    def ring(self) -> None:
        try:
            self._ringer.send(b"\x00")
        except (BlockingIOError, OSError):
            pass  # a ring is pending already, or the listener is closing

    def silence(self) -> None:
        try:
            while len(self._bell.recv(4096)) == 4096:
                pass
        except (BlockingIOError, OSError):
            pass


def _as_address(address: Address | str) -> Address:
    return parse_url(address) if isinstance(address, str) else address


def configure_stream(sock: socket.socket, *, nodelay: bool = True, keepalive: bool = False) -> None:
    """Non-blocking; the TCP options mean nothing in process and are ignored."""
    sock.setblocking(False)


def listen(address: Address | str, *, backlog: int = LISTEN_BACKLOG, ipv4_only: bool = False) -> tuple[InprocListener, str]:
    """Bind a name in this process; ``AddressInUse`` if it is bound already."""
    address = _as_address(address)
    with _lock:
        if address.path in _registry:
            raise AddressInUse(f"{address.url!r}: name already bound in this process")
        listener = _registry[address.path] = InprocListener(address)
    return listener, address.url


def accept(listener: InprocListener) -> socket.socket | None:
    """The next pending connection's listener end, or None."""
    listener.silence()
    with _lock:
        if not listener.pending:
            return None
        sock = listener.pending.popleft()
    configure_stream(sock)
    return sock


def close_listener(listener: InprocListener) -> None:
    """Unbind the name (if it is still ours) and refuse what was still pending. Idempotent."""
    with _lock:
        if _registry.get(listener.address.path) is listener:
            del _registry[listener.address.path]
        listener.closed = True
        pending, listener.pending = listener.pending, deque()
    for sock in pending:
        sock.close()
    listener._bell.close()
    listener._ringer.close()


def connect(address: Address | str, *, ipv4_only: bool = False) -> tuple[socket.socket | None, int]:
    """Connect to a bound name: ``(sock, 0)``, or ``(None, ECONNREFUSED)`` if none."""
    address = _as_address(address)
    with _lock:
        listener = _registry.get(address.path)
        if listener is None or listener.closed:
            return None, errno.ECONNREFUSED
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.pending.append(theirs)
    configure_stream(ours)
    listener.ring()
    return ours, 0
