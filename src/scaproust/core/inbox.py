"""The user's receive queue, ordered by the receiving pipe's priority.

Fair queueing with priorities (nanomsg's ``NN_RCVPRIO``): a message from a pipe of a lower
priority (a higher number) is handed to the user only when none of a higher priority is
waiting. Within one priority, arrival order. Almost every socket uses one priority, so the
common path is one deque and an index that does not move.

A receive may take from ``head`` without the channel's lock (``Channel.take``;
docs/ARCHITECTURE.md, "One owner at a time", *a receive without the lock*), while
everything else here runs under it. What makes that safe, on an interpreter that switches
threads only at a call, a backward jump or a function's start:

- a taker's step (``head`` not empty, ``count`` lowered, ``head.popleft()``) has no call
  before the pop, so it never pops an empty queue and ``count`` falls with the item (an
  interrupt as the pop returns leaves it true);
- every other change of ``count`` reads and writes it with no call between (a size is
  taken first), so no taker's step in between is undone;
- ``count`` rises before the items it counts are queued, and falls with or after the items
  leave: at any switch it is at least what ``head`` holds, so "nothing queued" told from it
  is true, and an empty ``head`` sends a taker to the lock;
- while every queued item has one priority (``mixed`` false), they are all in ``head``, and
  emptying it leaves nothing to move on to. With several priorities queued, ``head`` must move
  on once emptied (``advance``) and a pop is a step of several calls: receives take the
  lock then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaproust.core.message import Item

DEFAULT_PRIORITY = 8
LOWEST_PRIORITY = 16


class Inbox:
    """Per-priority FIFO queues (1 = highest)."""

    __slots__ = ("_queues", "_best", "count", "head", "mixed")

    def __init__(self) -> None:
        # One deque per priority, and one more (index 0, never a priority) that stays empty:
        # ``head`` while nothing is queued.
        self._queues: list[deque[Item]] = [deque() for _ in range(LOWEST_PRIORITY + 1)]
        #: The priority of ``head`` (past the end while ``head`` is the always-empty queue).
        self._best = LOWEST_PRIORITY + 1
        #: How many items are queued (len(inbox), without a call: the receive fast path reads
        #: it). Never below what ``head`` holds: see the module's docstring.
        self.count = 0
        #: The queue of the best priority holding a message (an empty one when none does):
        #: ``Channel.take`` pops from it without a call.
        self.head: deque[Item] = self._queues[0]
        #: Items of more than one priority are queued (or were, and have not all been
        #: taken since): a pop may have to move ``head`` on, and only pops under the
        #: channel's lock may.
        self.mixed = False

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def extend(self, items: Sequence[Item], priority: int = DEFAULT_PRIORITY) -> None:
        n = len(items)
        queue = self._queues[priority]
        self.count += n  # first: see the module's docstring
        if queue is not self.head:
            self._move_head(queue, priority)
        queue.extend(items)

    def _move_head(self, queue: deque[Item], priority: int) -> None:
        """Items of ``priority`` come to a queue other than ``head``. No call in here: a
        taker without the lock sees ``head`` and ``mixed`` before this or after."""
        if not self.head:
            # Nothing queued (``head`` empty: with one priority every item is there, with
            # several ``advance`` keeps it so): this priority is the only one now.
            self.head = queue
            self._best = priority
            self.mixed = False
            return
        self.mixed = True
        if priority < self._best:
            self._best = priority
            self.head = queue

    def push_front(self, item: Item) -> None:
        """Queue ``item`` to be the next one taken (one taken but never handed over)."""
        if not self.head:
            self.extend([item])
            return
        self.count += 1  # first: see the module's docstring
        self.head.appendleft(item)

    def popleft(self) -> Item | None:
        """Remove and return the next item (best priority first); None when empty."""
        head = self.head
        if not head:
            return None
        self.count -= 1  # no call from the look to the pop: see the module's docstring
        item = head.popleft()
        if not head and self.mixed:
            self.advance()
        return item

    def advance(self) -> None:
        """``head`` was emptied with several priorities queued (``mixed``; the channel's
        lock held): move it to the next priority holding a message."""
        if not self.count:
            # Nothing queued at all: no priority to look through.
            self._best = LOWEST_PRIORITY + 1
            self.head = self._queues[0]
            return
        best, queues = self._best + 1, self._queues
        while best <= LOWEST_PRIORITY and not queues[best]:
            best += 1
        self._best = best
        self.head = queues[best] if best <= LOWEST_PRIORITY else queues[0]

    def take(self, limit: int) -> list[Item]:
        """Remove and return the next ``limit`` items (fewer if fewer are queued), best
        priority first: a whole queue leaves in one step, where popping items one by one
        is a call each. Takers without the lock may pop from ``head`` meanwhile: each item
        leaves once, one way or the other."""
        out: list[Item] = []
        while limit > 0:
            head = self.head
            if not head:
                break
            if len(head) <= limit:
                fresh: deque[Item] = deque()
                # No call from here to the swap: a taker pops from the queue it finds, the
                # old one before, the new one after. Then the items are this call's alone.
                self._queues[self._best] = fresh
                self.head = fresh
                taken = len(head)
                out.extend(head)
                self.count -= taken
            else:
                taken = 0
                popleft = head.popleft
                while taken < limit:
                    # The look inside the loop: a loop's jump back is where another thread
                    # may run, and one may have emptied the queue.
                    if not head:
                        break
                    self.count -= 1  # no call from the look to the pop
                    out.append(popleft())
                    taken += 1
            limit -= taken
            if not self.head and self.mixed:
                self.advance()
        return out

    def drain(self) -> list[Item]:
        """Remove and return everything, best priority first."""
        return self.take(self.count)
