"""Per-socket counters, kept by the I/O thread (and by the callers' threads for the
``purged_*`` ones: what a cooked protocol drops from the receive queue), read by anyone."""

from __future__ import annotations

import threading
from collections import Counter

# Every counter, by the name ``sock.stats`` shows (docs/OBSERVABILITY.md says what each
# counts; a test checks that table against COUNTERS). Code counts through these names only,
# never a string of its own, so a typo is an import error and not a counter nobody reads.
MSGS_SENT = "msgs_sent"
BYTES_SENT = "bytes_sent"
MSGS_RECEIVED = "msgs_received"
BYTES_RECEIVED = "bytes_received"
PIPES_OPENED = "pipes_opened"
PIPES_CLOSED = "pipes_closed"
PIPES_REJECTED = "pipes_rejected"
PIPES_REFUSED = "pipes_refused"
CONNECT_FAILURES = "connect_failures"
ACCEPT_ERRORS = "accept_errors"
PIPE_ERRORS = "pipe_errors"
PIPES_INTERRUPTED = "pipes_interrupted"
TLS_HANDSHAKE_FAILURES = "tls_handshake_failures"
REQUESTS_RESENT = "requests_resent"
DROPPED_OVERSIZE = "dropped_oversize"
DROPPED_MALFORMED = "dropped_malformed"
DROPPED_TTL = "dropped_ttl"
DROPPED_SLOW_SUBSCRIBER = "dropped_slow_subscriber"
DROPPED_PIPE_FULL = "dropped_pipe_full"
DROPPED_NO_ROUTE = "dropped_no_route"
DROPPED_NO_SUBSCRIBER = "dropped_no_subscriber"
DROPPED_STALE = "dropped_stale"
DROPPED_LATE = "dropped_late"
DROPPED_UNMATCHED = "dropped_unmatched"
DROPPED_UNEXPECTED = "dropped_unexpected"
DROPPED_BAD_HEADER = "dropped_bad_header"
DROPPED_REJECTED = "dropped_rejected"
DROPPED_CLOSING = "dropped_closing"
DROPPED_CLOSED = "dropped_closed"
DROPPED_LINGER = "dropped_linger"
DROPPED_CONTEXT_FULL = "dropped_context_full"
PURGED_STALE = "purged_stale"
PURGED_UNMATCHED = "purged_unmatched"

#: Every counter name above.
COUNTERS = frozenset(value for name, value in dict(globals()).items()
                     if name.isupper() and isinstance(value, str))


class Stats:
    """Counts what happened on a socket: messages, pipes, and every drop by reason."""

    def __init__(self) -> None:
        #: The session owner's counts, lock-free: the data path adds its traffic to them
        #: inline (Context.deliver), a call less on a receive's path.
        self.counts: Counter[str] = Counter()
        self._callers: Counter[str] = Counter()  # any other thread's, under _lock
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        """Count from the I/O thread (nothing for ``n == 0``: no counter appears at zero)."""
        if n:
            self.counts[name] += n

    def count_traffic(self, msgs: str, nbytes: str, n: int, size: int) -> None:
        """``count(msgs, n)`` then ``count(nbytes, size)``, in one call: every batch sent
        counts both, a call saved on the path of every message (a delivery counts with
        these steps inline, Context.deliver: it runs right after a caller's wake-up)."""
        if n:
            counts = self.counts
            counts[msgs] += n
            if size:
                counts[nbytes] += size

    def count_from_caller(self, name: str, n: int = 1) -> None:
        """Count from a caller's thread (several may count at once)."""
        if n:
            with self._lock:
                self._callers[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            callers = dict(self._callers)
        counts = dict(self.counts)
        for name, n in callers.items():
            counts[name] = counts.get(name, 0) + n
        return counts

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self.counts[name] + self._callers[name]

    def __contains__(self, name: object) -> bool:
        """Whether the counter has counted anything. Without it, ``in`` would fall back to
        ``__getitem__`` with 0, 1, 2, ... (every name reads 0) and never end."""
        return bool(self[name]) if isinstance(name, str) else False
