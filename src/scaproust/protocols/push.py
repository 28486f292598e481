"""PUSH: load-balance messages over PULL peers (table: machine ``push``).

Theory of operation: the protocol has no state beyond its pipes, so its table has one
working state. Each message goes to one pipe, round-robin over the pipes that can take it
[seen in nng: 0,1,0,1], preferring the best send priority (a lower-priority pipe gets a
message only when no better one can take it); send credit is the sum of the pipes' free
slots, so send() blocks while no pipe can take a message.

Extra fields: ``pipes`` (active pipes in arrival order), ``_next`` (round-robin cursor),
``backlog`` (see _base.py).
"""

from __future__ import annotations

from scaproust._generated.push import PushFSM
from scaproust.protocols._base import ProtocolBase, body_of


class Push(PushFSM, ProtocolBase):
    """PUSH protocol machine."""

    def __init__(self, ctx):
        ProtocolBase.__init__(self, ctx)
        self.pipes: list = []
        self._next = 0
        self._top = 8  # the best send priority among the pipes: nothing can beat it

    def add_pipe(self, pipe) -> None:
        self.pipes.append(pipe)
        self._top = min(p.send_priority for p in self.pipes)

    def remove_pipe(self, pipe) -> None:
        index = self.pipes.index(pipe)
        del self.pipes[index]
        if index < self._next:
            self._next -= 1
        self._top = min((p.send_priority for p in self.pipes), default=8)

    def send_backlog(self, *args) -> None:
        backlog = self.backlog
        while backlog:
            pipe = self._pick()
            if pipe is None:
                return
            pipe.cmd_send(body_of(backlog.popleft()))

    def grant_capacity(self, *args) -> None:
        # Messages wait in the backlog only while no pipe can take one: no credit then.
        if self.backlog:
            self.ctx.set_send_capacity(0, 0)
            return
        ready = [pipe for pipe in self.pipes if pipe.free]
        self.ctx.set_send_capacity(sum(p.free for p in ready), sum(p.free_bytes for p in ready))

    def send_round_robin(self, item) -> None:
        pipe = None if self.backlog else self._pick()
        if pipe is None:
            self.backlog.append(item)
        else:
            pipe.cmd_send(body_of(item))

    def _pick(self):
        """The pipe to send to: of the pipes that can take a message, those of the best
        send priority, and among them the next in round-robin order; None if none can."""
        pipes = self.pipes
        count = len(pipes)
        start, top = self._next, self._top
        best = None
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
