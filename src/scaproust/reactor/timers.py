"""The loop's timers: a binary heap of ``(when, seq, handle)`` with lazy deletion.

``cancel()`` only marks the handle; the entry stays in the heap and is discarded when it reaches
the top. That makes cancel O(1), which matters because most protocol timers are cancelled
before they fire (a REQ resend timer is cancelled by every reply, a survey deadline by close).
The cost is memory held by dead entries, so once more than half of the heap is cancelled it is
rebuilt without them: each rebuild is O(n) and removes more than n/2 entries, so the cost per
cancel stays O(1) amortised. A heap of at most ``COMPACT_MIN`` entries is left alone: a REQ
that cancels its one resend timer and starts the next at every request would otherwise rebuild
the heap twice per round trip, for the sake of a few dead entries that hold no references
(``cancel`` drops them).

``seq`` breaks ties, so timers due at the same time fire in the order they were scheduled, and
the handles themselves are never compared.

Everything here runs on the loop thread only; nothing is locked.
"""

from __future__ import annotations

import heapq
import itertools
import reprlib
from collections import deque
from collections.abc import Callable
from typing import TypeVarTuple

Ts = TypeVarTuple("Ts")

#: Dead entries are dropped by a rebuild only in a heap larger than this.
COMPACT_MIN = 64


class TimerHandle:
    """A scheduled call returned by ``Loop.call_at``/``call_later``; ``cancel()`` it on the
    loop thread. Cancelling a timer that already fired, or cancelling twice, does nothing."""

    __slots__ = ("when", "_callback", "_args", "_queue", "_cancelled")

    def __init__(
        self, when: float, callback: Callable[..., object], args: tuple[object, ...],
        queue: TimerQueue,
    ) -> None:
        self.when = when
        self._callback: Callable[..., object] | None = callback
        self._args = args
        # The queue whose heap holds this handle; None once it has been popped to fire, so a
        # late cancel() does not miscount the heap's dead entries.
        self._queue: TimerQueue | None = queue
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        # Drop the references now: a cancelled entry may sit in the heap until its deadline.
        self._callback = None
        self._args = ()
        if self._queue is not None:
            self._queue._cancelled_one()

    def _run(self) -> None:
        # Popped as due, but a callback that ran earlier in the same batch may have cancelled
        # it since (a reply arriving in the iteration where its resend timer expires).
        callback = self._callback
        if callback is not None:  # None once cancelled
            callback(*self._args)

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else f"{self._callback!r}{reprlib.repr(self._args)}"
        return f"<TimerHandle when={self.when} {state}>"


class TimerQueue:
    __slots__ = ("_heap", "_seq", "_ncancelled")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._ncancelled = 0  # cancelled entries still in _heap

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones included."""
        return len(self._heap)

    def push(self, when: float, callback: Callable[[*Ts], object],
             args: tuple[*Ts]) -> TimerHandle:
        handle = TimerHandle(when, callback, args, self)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def next_when(self) -> float | None:
        """The deadline of the earliest live timer, or None; drops dead entries on top."""
        heap = self._heap
        while heap and heap[0][2]._cancelled:
            heapq.heappop(heap)
            self._ncancelled -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float,
                ready: deque[tuple[Callable[..., object], tuple[object, ...]]]) -> None:
        """Move every live timer due at ``now`` to ``ready``, in (when, seq) order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            if handle._cancelled:
                self._ncancelled -= 1
                continue
            handle._queue = None
            ready.append((handle._run, ()))

    def clear(self) -> None:
        self._heap.clear()
        self._ncancelled = 0

    def _cancelled_one(self) -> None:
        self._ncancelled += 1
        if self._ncancelled * 2 > len(self._heap) > COMPACT_MIN:
            self._compact()

    def _compact(self) -> None:
        # Never called while pop_due/next_when iterate: they run no callbacks.
        heap = [entry for entry in self._heap if not entry[2]._cancelled]
        heapq.heapify(heap)
        self._heap = heap
        self._ncancelled = 0
