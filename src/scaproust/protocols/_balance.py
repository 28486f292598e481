"""Load balancing: what PUSH and REQ (raw) share.

Each message goes to one pipe: of the pipes that can take a message (``pipe.free``), those
of the best ``send_priority`` (1 highest), and among them the next in round-robin order
[seen in nng: 0,1,0,1]. Send credit is the sum of the free slots (and bytes) of the pipes
that can take a message, so send() blocks while none can. A message that finds no pipe
(its pipe went away between the credit and the send) waits in the backlog, in order, for
the next pipe that can take it, before anything newer.

Extra fields: ``pipes`` (active pipes in arrival order, less those rejected), ``_next``
(round-robin cursor), ``_top`` (best send priority among the pipes: nothing can beat it),
``backlog`` (see _base.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust.core.message import body_of
from scaproust.protocols._base import ProtocolBase

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe


#: Send priority of a socket with no pipe: any pipe beats it.
_NO_PRIORITY = 17


class LoadBalancer(ProtocolBase):
    """Shared actions of the PUSH and raw REQ machines."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.pipes: list[Pipe] = []
        self._next = 0
        self._top = _NO_PRIORITY

    def add_pipe(self, pipe: Pipe) -> None:
        self.pipes.append(pipe)
        self._top = min(self._top, pipe.send_priority)

    def remove_pipe(self, pipe: Pipe) -> None:
        self._forget(pipe)

    def grant_capacity(self, *args: object) -> None:
        # *args: an action of pipe events (pipe), and in REQ of cmd_send (item) and
        # evt_timeout (nothing); the credit depends on the pipes and the backlog only.
        # Messages wait in the backlog only while no pipe can take one: no credit then.
        if self.backlog:
            self.ctx.set_send_capacity(0, 0)
            return
        # One pass, no temporary list: REQ runs this twice per request (its send, then
        # the flush that makes room again).
        free = free_bytes = 0
        for pipe in self.pipes:
            slots = pipe.free
            if slots:
                free += slots
                free_bytes += pipe.free_bytes
        self.ctx.set_send_capacity(free, free_bytes)

    def send_backlog(self, pipe: Pipe) -> None:
        backlog = self.backlog
        # pipe: the one that became ready; any pipe that can take a message will do.
        while backlog:
            target = self._pick()
            if target is None:
                return
            self._transmit(target, backlog.popleft())

    def send_round_robin(self, item: Item) -> None:
        pipe = None if self.backlog else self._pick()
        if pipe is None:
            self.backlog.append(item)
        else:
            self._transmit(pipe, item)

    def send_many(self, items: list[Item]) -> None:
        """A batch the I/O thread drained, in order (PUSH gives one pipe many at once)."""
        for item in items:
            self.send_round_robin(item)

    def _transmit(self, pipe: Pipe, item: Item) -> None:
        """Put ``item`` on ``pipe``'s wire (PUSH: the body only; a header is not sent)."""
        pipe.cmd_send(item if type(item) is bytes else body_of(item))

    def _forget(self, pipe: Pipe) -> None:
        """Stop using ``pipe`` (gone, or rejected and about to go); harmless twice."""
        try:
            index = self.pipes.index(pipe)
        except ValueError:
            return
        del self.pipes[index]
        if index < self._next:
            self._next -= 1
        if self._next >= len(self.pipes):
            self._next = 0
        self._top = min((p.send_priority for p in self.pipes), default=_NO_PRIORITY)

    def _pick(self) -> Pipe | None:
        """The pipe to send to, or None if none can take a message."""
        pipes = self.pipes
        count = len(pipes)
        start, top = self._next, self._top
        if count:
            # The usual case first: the next pipe in turn can take it and none is better.
            pipe = pipes[start]
            if pipe.send_priority == top and pipe.free:
                self._next = start + 1 if start + 1 < count else 0
                return pipe
        best: Pipe | None = None
        best_index = 0
        for step in range(count):
            index = (start + step) % count
            pipe = pipes[index]
            if pipe.free and (best is None or pipe.send_priority < best.send_priority):
                best, best_index = pipe, index
                if pipe.send_priority == top:
                    break  # nothing can beat it
        if best is not None:
            self._next = (best_index + 1) % count
        return best
