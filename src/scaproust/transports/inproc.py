"""In-process transport: ``inproc://name`` between sockets of one Python process.

nng and nanomsg have it too; it never leaves the process, so no peer of another library
can be on the other end. A connection is a :class:`MemoryLink`: two :class:`MemoryEnd`
objects, each with an inbox of whole messages (``bytes``) that the other end appends to.
No kernel socket, no framing, no copy: a message travels as the bytes object the sender
made (``core/memory_pipe.py`` drives an end through the same pipe machine as a stream).

Connecting is still asynchronous, like every transport: a ``connect`` makes the link,
keeps one end and queues the other on the listener bound on that name, whose
selector-visible "bell" (a socket pair) rings once per pending connection, so accepting
stays the listener machine's usual readiness event.

Names live in one registry per process, shared by every session: binding a name twice is
``AddressInUse``; connecting to a name nobody bound is refused (the dialer retries), as a
connect to a missing IPC path is.

This module knows nothing of pipes or sessions: an end talks to its owner through the two
things it is given by ``attach``: the owner's loop, and a callback to run there when the
end has news (messages arrived, room freed at the peer, the peer closed).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports.tcp import LISTEN_BACKLOG
from scaproust.transports.url import Address, parse_url

__all__ = ["IPC_FRAMING", "PIPE_KIND", "SCHEME", "MemoryEnd", "MemoryLink", "accept",
           "close_listener", "configure_stream", "connect", "finish_connect", "listen", "parse_address"]

SCHEME = "inproc"
#: Messages cross as objects, not frames (core/memory_pipe.py): the flag is never read.
IPC_FRAMING = True
#: Pipes of this transport are memory pipes (core/memory_pipe.py), not stream pipes.
PIPE_KIND = "memory"

if TYPE_CHECKING:
    class EndLoop(Protocol):
        """What an end asks of its owner's loop (``reactor.loop.Loop``)."""

        def call_soon(self, fn: Callable[[], object], /) -> None: ...
        def call_after_batch(self, fn: Callable[[], object], /) -> None: ...
        def call_soon_threadsafe(self, fn: Callable[[], object], /) -> None: ...

_registry: dict[str, BoundName] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's names are its sockets', which the child cannot use (their I/O thread
    # is the parent's): a session of the child binds and dials them afresh. And a lock a
    # parent thread held at the fork would be held here for ever.
    global _registry, _lock
    _registry = {}
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX only, and there is no fork anywhere else
    os.register_at_fork(after_in_child=_after_fork_in_child)


class MemoryEnd:
    """One end of an in-process connection.

    ``inbox`` holds what the peer sent and this end's owner has not read yet; the peer's
    owner appends, this end's owner pops (a ``deque`` does both atomically, so the two may
    be different sessions, in different threads). Each counter has one writer: ``arrived``
    (bytes ever appended, by the peer's owner) and ``taken`` (bytes ever popped, by this
    end's owner), so the bytes in flight are ``arrived - taken`` without a lock.

    ``signal`` tells this end's owner to look at the end; ``signalled`` keeps a burst of
    news down to one callback (cleared by the owner before it looks, so news that comes
    while it looks signals again). ``blocked``: this end's owner found no room at the peer
    and waits for the peer's owner to signal once it has read some.
    """

    __slots__ = ("inbox", "peer", "closed", "loop", "_callback", "signalled", "blocked",
                 "arrived", "taken", "__weakref__")

    def __init__(self) -> None:
        self.inbox: deque[bytes] = deque()
        self.peer: MemoryEnd = self
        self.closed = False
        self.loop: EndLoop | None = None
        self._callback: Callable[[], object] | None = None
        self.signalled = False
        self.blocked = False
        self.arrived = 0
        self.taken = 0

    def __repr__(self) -> str:
        return f"<MemoryEnd {len(self.inbox)} queued{' closed' if self.closed else ''}>"

    def in_flight(self) -> tuple[int, int]:
        """Messages and bytes in this end's inbox."""
        return len(self.inbox), self.arrived - self.taken

    def attach(self, loop: EndLoop, callback: Callable[[], object]) -> None:
        """From now on ``signal`` runs ``callback`` on ``loop`` (its owner calls this); the
        callback runs once at once, for whatever arrived before."""
        self._callback = callback
        self.loop = loop
        self.signalled = True
        loop.call_soon(callback)

    def signal(self, from_loop: EndLoop | None) -> None:
        """Have this end's owner run its callback (called by whoever owns ``from_loop``,
        None if nobody). Same loop: after the current batch, in the same thread (no
        wake-up). Another session: posted to its loop, which wakes if it sleeps."""
        if self.signalled:
            return
        loop, callback = self.loop, self._callback
        if loop is None or callback is None:
            return  # not accepted yet: attach() looks at the inbox
        self.signalled = True
        if loop is from_loop:
            loop.call_after_batch(callback)
            return
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:
            pass  # that session is closing: its pipes go away with it

    def close(self) -> None:
        """No more sending or reading here; the peer reads what is left, then sees the
        close. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.inbox.clear()
        self.peer.signal(self.loop)


class MemoryLink:
    """A connection: two ends, each the other's peer."""

    __slots__ = ("dialer_end", "listener_end")

    def __init__(self) -> None:
        self.dialer_end = MemoryEnd()
        self.listener_end = MemoryEnd()
        self.dialer_end.peer = self.listener_end
        self.listener_end.peer = self.dialer_end


class BoundName:
    """A bound name: connections wait in ``pending`` and ring the bell."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.url = address.url
        self.pending: deque[MemoryEnd] = deque()
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


def parse_address(url: str) -> Address:
    """An ``inproc://name`` URL as an :class:`Address` (the name in ``path``)."""
    address = parse_url(url)
    if address.scheme != SCHEME:
        raise InvalidAddress(f"{url!r} is not an {SCHEME}:// address")
    return address


def _name(address: Address) -> str:
    """The bound name (an inproc address keeps it in ``path``, never None)."""
    assert address.path is not None
    return address.path


def configure_stream(end: MemoryEnd, *, nodelay: bool = True, keepalive: bool = False,
                     keepalive_timing: tuple[int, int, int] | None = None) -> None:
    """Nothing to configure: the TCP options mean nothing in process."""


def finish_connect(end: MemoryEnd) -> int:
    """A link is connected from the start: always 0 (no error)."""
    return 0


def listen(address: Address | str, *, backlog: int = LISTEN_BACKLOG, ipv4_only: bool = False) -> tuple[BoundName, str]:
    """Bind a name in this process; ``AddressInUse`` if it is bound already."""
    address = _as_address(address)
    with _lock:
        if _name(address) in _registry:
            raise AddressInUse(f"{address.url!r}: name already bound in this process")
        listener = _registry[_name(address)] = BoundName(address)
    return listener, address.url


def accept(listener: BoundName) -> MemoryEnd | None:
    """The next pending connection's listener end, or None.

    The bell is emptied only once the queue is found empty, as a listening TCP socket
    stays readable while connections wait: the listener accepts a batch at a time
    (core/listener.py, ``ACCEPT_BATCH``), and a bell emptied by the first accept of a
    batch left the connections past it waiting, unseen, until their dialers gave up."""
    with _lock:
        if listener.pending:
            return listener.pending.popleft()
    listener.silence()
    # A connect that came between the look and the silence rang a bell just emptied:
    # looked for again, now that a later one rings it anew.
    with _lock:
        return listener.pending.popleft() if listener.pending else None


def close_listener(listener: BoundName) -> None:
    """Unbind the name (if it is still ours) and refuse what was still pending. Idempotent."""
    with _lock:
        if _registry.get(_name(listener.address)) is listener:
            del _registry[_name(listener.address)]
        listener.closed = True
        pending, listener.pending = listener.pending, deque()
    for end in pending:
        end.close()
    listener._bell.close()
    listener._ringer.close()


def connect(address: Address | str, *, ipv4_only: bool = False) -> tuple[MemoryEnd | None, int]:
    """Connect to a bound name: ``(end, 0)``, or ``(None, ECONNREFUSED)`` if none."""
    address = _as_address(address)
    with _lock:
        listener = _registry.get(_name(address))
        if listener is None or listener.closed:
            return None, errno.ECONNREFUSED
        link = MemoryLink()
        listener.pending.append(link.listener_end)
    listener.ring()
    return link.dialer_end, 0
