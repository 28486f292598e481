"""PUSH: load-balance messages over PULL peers (table: machine ``push``).

Theory of operation: the protocol has no state beyond its pipes, so its table has one
working state. Each message goes to one pipe, round-robin over the pipes that can take it
[seen in nng: 0,1,0,1], preferring the best send priority (a lower-priority pipe gets a
message only when no better one can take it); send credit is the sum of the pipes' free
slots, so send() blocks while no pipe can take a message.

Everything PUSH does is load balancing, shared with REQ: protocols/_balance.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.push import PushFSM
from scaproust.core.message import body_of
from scaproust.protocols._balance import LoadBalancer

if TYPE_CHECKING:
    from scaproust.core.message import Item


class Push(PushFSM, LoadBalancer):
    """PUSH protocol machine: the load balancer of _balance.py, sending bodies only."""

    def send_round_robin(self, item: Item) -> None:
        # Every PUSH send runs this: the usual case inline (nothing waits in the backlog,
        # the next pipe in turn has room and none is better), the rest in LoadBalancer.
        pipes = self.pipes
        start = self._next
        if start < len(pipes) and not self.backlog:
            pipe = pipes[start]
            if pipe.send_priority == self._top and pipe.free:
                start += 1
                self._next = start if start < len(pipes) else 0
                pipe.cmd_send(item if type(item) is bytes else body_of(item))
                return
        LoadBalancer.send_round_robin(self, item)

    def send_many(self, items: list[Item]) -> None:
        # A batch drained by the I/O thread (SocketCore._drain_outbox). With one pipe and
        # nothing in the backlog, round-robin gives that pipe every message it has room
        # for: one event for all of them. What it leaves (its room ran out, a body too
        # large to join) and every batch over several pipes go message by message.
        pipes = self.pipes
        if len(pipes) == 1 and not self.backlog and pipes[0].free:
            bodies = [item if type(item) is bytes else body_of(item) for item in items]
            pipes[0].cmd_send_many(bodies)
            items = items[len(items) - len(bodies):]
        LoadBalancer.send_many(self, items)
