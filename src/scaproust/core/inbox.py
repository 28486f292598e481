"""The user's receive queue, ordered by the receiving pipe's priority.

Fair queueing with priorities (nanomsg's ``NN_RCVPRIO``): a message from a pipe of a lower
priority (a higher number) is handed to the user only when none of a higher priority is
waiting. Within one priority, arrival order. Almost every socket uses one priority, so the
common path is one deque and an index that does not move.
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

    __slots__ = ("_queues", "_best", "count", "head")

    def __init__(self) -> None:
        # One deque per priority, and one more (index 0, never a priority) that stays empty:
        # ``head`` while nothing is queued.
        self._queues: list[deque[Item]] = [deque() for _ in range(LOWEST_PRIORITY + 1)]
        self._best = LOWEST_PRIORITY + 1  # lowest index holding a message; past the end: empty
        #: How many items are queued (len(inbox), without a call: the receive fast path reads it).
        self.count = 0
        #: The queue of the best priority holding a message (the empty one when none does):
        #: ``Channel.take`` pops from it without a call, then ``advance()`` if it emptied it.
        self.head: deque[Item] = self._queues[0]

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def extend(self, items: Sequence[Item], priority: int = DEFAULT_PRIORITY) -> None:
        self._queues[priority].extend(items)
        self.count += len(items)
        if priority < self._best:
            self._best = priority
            self.head = self._queues[priority]

    def push_front(self, item: Item) -> None:
        """Queue ``item`` to be the next one taken (one taken but never handed over)."""
        if not self.count:
            self.extend([item])
            return
        self.head.appendleft(item)
        self.count += 1

    def popleft(self) -> Item:
        """Remove and return the next item (best priority first); IndexError when empty."""
        head = self.head
        item = head.popleft()
        self.count -= 1
        if not head:
            self.advance()
        return item

    def advance(self) -> None:
        """``head`` was emptied: move it to the next priority holding a message."""
        if not self.count:
            # Nothing queued at all (a receiver keeping up: every pop empties the inbox):
            # no priority to look through.
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
        priority first: a whole queue moves in one ``extend``, where popping items one by
        one is a call each."""
        out: list[Item] = []
        while self.count and limit:
            head = self.head
            if len(head) <= limit:
                out.extend(head)
                taken = len(head)
                head.clear()
            else:
                popleft = head.popleft
                out.extend([popleft() for _ in range(limit)])
                taken = limit
            self.count -= taken
            limit -= taken
            if not head:
                self.advance()
        return out

    def drain(self) -> list[Item]:
        """Remove and return everything, best priority first."""
        return self.take(self.count)
