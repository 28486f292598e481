"""What every protocol machine shares: the context, the backlog and the common actions.

A protocol's ``ctx`` (core/context.py) is its only way out: ``deliver`` to the user,
``set_send_capacity`` so that send() blocks or not, ``reject_pipe``, timers. Pipes are
sent to with ``pipe.cmd_send(body, header)`` and report ``free`` slots.

``backlog`` holds messages the user handed over (with credit) that found no pipe able to
take them, because the pipe they were meant for went away in between: they go to the next
pipe that can take them, before anything newer, so nothing accepted is lost or reordered.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from scaproust.core.stats import DROPPED_CLOSED, DROPPED_UNEXPECTED

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe


class ProtocolBase:
    """Shared state and actions of the protocol machines."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.backlog: deque[Item] = deque()

    def deliver(self, pipe: Pipe, msgs: list[bytes]) -> None:
        self.ctx.deliver(msgs, pipe.recv_priority)

    def discard(self, pipe: Pipe, msgs: list[bytes]) -> None:
        self.ctx.stats.count(DROPPED_UNEXPECTED, len(msgs))

    def drop_backlog(self) -> None:
        if self.backlog:
            self.ctx.stats.count(DROPPED_CLOSED, len(self.backlog))
            self.backlog.clear()

    def hold(self, item: Item) -> None:
        self.backlog.append(item)
