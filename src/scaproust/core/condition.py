"""A condition variable for the channel's queues: ``threading.Condition`` without its
checks, whose sleepers a notify may choose now and wake later, once the notifier holds no
lock.

Why not ``threading.Condition``: it is written in Python, and every ``wait`` first asks its
lock whether this thread holds it, then goes through ``_release_save`` and
``_acquire_restore``; every ``notify`` asks again. The channel always holds its lock when
it waits or notifies, so those steps only cost (about a microsecond of each hand-off
between two threads of one process).

A sleeper waits on what ``thread_waker`` gives its thread (reactor/waker.py): on one core,
a descriptor of its own, which a write wakes as soon as the notifier's system call lets go
of the interpreter lock; otherwise a lock of that sleep's own. ``take`` chooses the
sleepers to wake, under the lock, and the caller wakes them, those on a descriptor once it
holds no lock (``Loop.notify_after_release``); ``notify`` wakes them at once.

Semantics are ``threading.Condition``'s, for a caller that holds the lock: ``wait`` may
return without a notify (a wake-up meant for an earlier wait of the thread), so callers
wait in a loop on their predicate, as the channel does. A notify taken by a waiter whose
wait was ending is lost to the others, as in ``threading.Condition``. A Ctrl-C that
interrupts ``wait`` leaves with the lock held again and the waiter gone.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from scaproust.reactor.waker import thread_waker, wake_all

if TYPE_CHECKING:
    from _thread import LockType

    from scaproust.reactor.waker import Waker


class Condition:
    """``wait``, ``notify``, ``take`` and ``notify_all`` on ``lock``, which the caller
    holds."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: LockType) -> None:
        self._lock = lock
        self._waiters: deque[Waker] = deque()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout`` seconds (None: no limit),
        take the lock again; whether a notify chose this waiter."""
        waiter = thread_waker()
        waiter.taken = False
        # A Ctrl-C lands where Python next looks for signals, which is also just after a
        # call in C returns: after the append (the waiter listed, the lock still held)
        # or after the release (the lock let go). Each step is undone by what was done
        # of it: ``released`` is set before the release, and nothing between the two
        # looks for a signal.
        released = False
        try:
            self._waiters.append(waiter)
            released = True
            self._lock.release()
            waiter.sleep(timeout)
        finally:
            if released:
                self._lock.acquire()
            if not waiter.taken:
                # Timed out, interrupted, or woken early by a wake-up meant for an earlier
                # wait of this thread: still listed, and nobody will wake it for this one
                # (a notify would choose it over a real sleeper).
                self._waiters.remove(waiter)
        return waiter.taken

    def take(self, n: int = 1) -> list[Waker]:
        """Choose up to ``n`` waiters, the longest waiting first, for the caller to wake
        (``wake_all``) once it holds no lock."""
        waiters = self._waiters
        taken = []
        while waiters and n > 0:
            waiter = waiters.popleft()
            waiter.taken = True
            taken.append(waiter)
            n -= 1
        return taken

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters now, the longest waiting first."""
        if self._waiters:
            wake_all(self.take(n))

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(len(self._waiters))
