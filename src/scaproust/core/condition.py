"""A condition variable for the channel's queues: ``threading.Condition`` without its
checks.

``threading.Condition`` is written in Python, and every ``wait`` first asks its lock
whether this thread holds it (a second ``acquire`` on a plain lock), then goes through
``_release_save`` and ``_acquire_restore``; every ``notify`` asks again. The channel always
holds its lock when it waits or notifies, so those steps only cost: about a microsecond of
each hand-off between two threads of one process (an in-process round trip has two), a
twentieth of it. The waiting itself is the standard library's: a fresh lock per wait,
acquired once by the waiter and released by whoever notifies it.

Semantics are ``threading.Condition``'s, for a caller that holds the lock: ``wait`` may
return without a notify (a notify taken by a waiter that timed out meanwhile is lost to
the others), so callers wait in a loop on their predicate, as the channel does. A Ctrl-C
that interrupts ``wait`` leaves with the lock held again and the waiter gone.
"""

from __future__ import annotations

from _thread import allocate_lock
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _thread import LockType


class Condition:
    """``wait``, ``notify`` and ``notify_all`` on ``lock``, which the caller holds."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: LockType) -> None:
        self._lock = lock
        self._waiters: deque[LockType] = deque()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout`` seconds (None: no limit),
        take the lock again; whether it was notified."""
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self._lock.release()
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            else:
                notified = waiter.acquire(True, timeout) if timeout > 0 else waiter.acquire(False)
            return notified
        finally:
            self._lock.acquire()
            if not notified:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # a notify took it as the wait timed out

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, the longest waiting first."""
        waiters = self._waiters
        while waiters and n > 0:
            waiters.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(len(self._waiters))
