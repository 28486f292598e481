"""The wake-up socketpair: how another thread interrupts the loop's ``select()``.

The loop keeps the reading end registered in its selector. A thread that has posted work while
the loop sleeps writes one byte to the other end, ``select()`` returns, and the loop drains the
reading end. Only the fact that a byte arrived matters, never how many: so both ends are
non-blocking, a full buffer means a wake-up is already pending (the write is dropped), and the
drain reads until the socket is empty so that one readiness event clears every pending byte.
"""

from __future__ import annotations

import socket

# Bytes read per recv() while draining. Posters write only while the loop is idle, so a handful
# of bytes is the usual backlog; one call clears it.
_DRAIN_CHUNK = 4096


class Wakeup:
    """A non-blocking socketpair; ``wakeup()`` is safe from any thread."""

    def __init__(self) -> None:
        self.read_sock, self._write_sock = socket.socketpair()
        self.read_sock.setblocking(False)
        self._write_sock.setblocking(False)
        # A tiny send buffer: one pending byte is enough to wake the loop, so there is no use
        # in letting a burst of posts queue kilobytes that the loop must then drain. The kernel
        # rounds this up to its minimum; some platforms refuse it, which is harmless.
        try:
            self._write_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        except OSError:
            pass

    def fileno(self) -> int:
        return self.read_sock.fileno()

    def wakeup(self) -> None:
        try:
            self._write_sock.send(b"\x00")
        except BlockingIOError:
            # Buffer full: unread bytes are already waiting, so the loop will wake anyway.
            pass
        except OSError:
            # Closed by a stop() racing with this post (the poster read the idle flag just
            # before the loop closed). There is no loop left to wake.
            pass

    def drain(self) -> None:
        # A short read means the socket is empty now: stop without the extra recv() that
        # would only say EAGAIN (one syscall per wake-up instead of two).
        try:
            while len(self.read_sock.recv(_DRAIN_CHUNK)) == _DRAIN_CHUNK:
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.read_sock.close()
        self._write_sock.close()
