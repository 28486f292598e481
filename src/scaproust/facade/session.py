"""The public session: one I/O thread and the sockets it runs."""

from __future__ import annotations

import atexit
import threading
import weakref

from scaproust.core.protocol_info import ProtocolInfo
from scaproust.core.session import SessionCore
from scaproust.errors import Closed
from scaproust.facade.socket import Socket, wait_at_most


class Session:
    """Starts the I/O thread that runs every socket made from it.

    Use it as a context manager; closing it closes every socket (each flushing its queued
    output for up to its ``linger``) and stops the thread.
    """

    def __init__(self) -> None:
        self._core = SessionCore()
        # Weak: a socket the user dropped is garbage-collected (and closes itself).
        self._sockets: weakref.WeakValueDictionary[int, Socket] = weakref.WeakValueDictionary()
        #: The closes in progress, by their event's id: (the event set once the socket is
        #: closed, its linger). A socket leaves ``_sockets`` as its close begins, and one
        #: closed by the collector or by another thread is waited for here: stopped
        #: under it, its lingering pipes would stay open for ever. Written without a lock
        #: (one dict step each: ``Socket.__del__`` takes none), by the I/O thread too.
        self._closing: dict[int, tuple[threading.Event, float]] = {}
        self._lock = threading.Lock()
        self._closed = False
        _live_sessions.add(self)

    def __repr__(self) -> str:
        return f"<scaproust.Session {len(self._sockets)} sockets{' closed' if self._closed else ''}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def socket(self, protocol: ProtocolInfo, *, raw: bool = False, **options: object) -> Socket:
        """Create a socket of ``protocol`` (``sp.Pair``, ``sp.Push``, ``sp.Pull``, ...).

        Options (``send_timeout=1.0``, ...) are validated at once; see docs/OPTIONS.md.
        """
        if not isinstance(protocol, ProtocolInfo):
            raise TypeError(f"protocol must be one of sp.Pair, sp.Push, sp.Pull, ..., not {protocol!r}")
        if self._closed:
            raise Closed("session is closed")
        sock = Socket(self, protocol, raw=raw, **options)
        with self._lock:
            self._sockets[id(sock)] = sock
        return sock

    def _forget(self, sock: Socket) -> None:
        with self._lock:
            self._sockets.pop(id(sock), None)

    def close(self) -> None:
        """Close every socket, then stop the I/O thread. Closing twice is harmless."""
        if self._core.loop.forked():
            # A forked child (at exit, say): the I/O thread is the parent's, leave it
            # alone, and take no lock, which a parent thread may have held at the fork.
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._sockets.values())
        closing = [s for s in sockets if s._begin_close()]
        for sock in closing:
            sock._wait_closed()
        for done, linger in list(self._closing.values()):
            wait_at_most(done, linger + 5.0)  # bounded as Socket._wait_closed
        self._core.stop()

    def __del__(self) -> None:
        # As Socket.__del__: the collector may run anywhere, so take no lock and do not
        # wait; the I/O thread stops by itself once it reaches the request.
        try:
            if not self._closed and not self._core.loop.forked():
                self._closed = True
                self._core.stop(wait=False)
        except Exception:
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Session | None = None
_default_lock = threading.Lock()
_live_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


@atexit.register
def _close_sessions_at_exit() -> None:
    # Sessions still open at interpreter exit are closed here, while threads still run:
    # queued output gets its linger, and no daemon I/O thread is frozen mid-call.
    for session in list(_live_sessions):
        try:
            session.close()
        except Exception:
            pass


def default_session() -> Session:
    """The session behind ``sp.socket()``: started on first use, closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Session()
        return _default


def socket(protocol: ProtocolInfo, *, raw: bool = False, **options: object) -> Socket:
    """Create a socket on the default session (see ``Session.socket``)."""
    return default_session().socket(protocol, raw=raw, **options)
