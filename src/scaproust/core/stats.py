"""Per-socket counters, kept by the I/O thread and read by anyone."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Counts what happened on a socket: messages, pipes, and every drop by reason."""

    def __init__(self):
        self._counts: Counter = Counter()

    def count(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)

    def __getitem__(self, name: str) -> int:
        return self._counts[name]
