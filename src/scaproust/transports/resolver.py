"""A few worker threads for blocking calls a session's I/O thread must never make: name
resolution (``getaddrinfo`` may wait seconds for a DNS answer, and the I/O thread serves
every socket of its session).

``submit(fn, *args)`` returns a ``concurrent.futures.Future``. The caller (a dialer) posts
the outcome back to its loop from a done-callback and bounds the wait with its own timer:
a lookup stuck in the C library cannot be interrupted, so a timeout only stops waiting
for it.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter
exit, so one lookup stuck on an unreachable DNS server would hold up the exit; and they
stay alive when idle. Here workers are daemon threads, at most ``MAX_WORKERS``, started
when work arrives and gone as soon as the queue is empty (a process returns to its
baseline of threads between dials). A forked child starts with an empty pool.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: At most this many lookups run at once; more wait their turn (a dialer's timeout still
#: runs). A few are enough: lookups are rare (one per dial of a host name), and a bound
#: keeps a storm of redials to an unreachable DNS server from making hundreds of threads.
MAX_WORKERS = 4


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (future, fn, args): each job's own types, checked by submit().
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[object, ...]]] = deque()
        self._workers = 0

    def submit(self, fn: Callable[[*Ts], T], *args: *Ts) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            self._queue.append((future, fn, args))
            if self._workers < MAX_WORKERS:
                self._workers += 1
                threading.Thread(target=self._work, name="scaproust-resolver",
                                 daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:  # decided under the lock submit() appends under
                    self._workers -= 1
                    return
                future, fn, args = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued: nobody waits for it any more
            try:
                result = fn(*args)
            except BaseException as err:  # handed to whoever waits, not lost in this thread
                future.set_exception(err)
            else:
                future.set_result(result)


_pool = _Pool()


def submit(fn: Callable[[*Ts], T], *args: *Ts) -> Future[T]:
    """Run ``fn(*args)`` in a worker thread; its result or exception lands in the Future."""
    return _pool.submit(fn, *args)


def _after_fork_in_child() -> None:
    # The parent's workers do not exist here, and a lock held by one of them would stay held.
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
