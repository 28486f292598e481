"""Per-socket counters, kept by the I/O thread (and by the callers' threads for the
``purged_*`` ones: what a cooked protocol drops from the receive queue), read by anyone."""

from __future__ import annotations

import threading
from collections import Counter


class Stats:
    """Counts what happened on a socket: messages, pipes, and every drop by reason."""

    def __init__(self):
        self._counts: Counter = Counter()  # the I/O thread's, lock-free (the hot path)
        self._callers: Counter = Counter()  # any other thread's, under _lock
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        """Count from the I/O thread."""
        self._counts[name] += n

    def count_from_caller(self, name: str, n: int = 1) -> None:
        """Count from a caller's thread (several may count at once)."""
        if n:
            with self._lock:
                self._callers[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            callers = dict(self._callers)
        counts = dict(self._counts)
        for name, n in callers.items():
            counts[name] = counts.get(name, 0) + n
        return counts

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name] + self._callers[name]
