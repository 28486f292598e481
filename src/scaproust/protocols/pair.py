"""PAIR v0: one peer at a time (table: machine ``pair`` in protocols.yaml).

Theory of operation: the states say whether there is a peer. ``unpaired`` → ``paired``
on the first pipe; a second pipe while ``paired`` has completed its header exchange and is
closed, the first stays (WIRE.md, "PAIR v0" [seen]). Send credit is the peer pipe's free
slots, so send() blocks with no peer.

Extra fields: ``peer`` (the pipe, ``paired`` only), ``backlog`` (see _base.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.pair import PairFSM
from scaproust.core.message import Message, body_of
from scaproust.core.stats import PIPES_REJECTED
from scaproust.protocols._base import ProtocolBase

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe


class Pair(PairFSM, ProtocolBase):
    """PAIR v0 protocol machine."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.peer: Pipe | None = None

    def is_peer(self, pipe: Pipe, *args: object) -> bool:
        # A guard of evt_pipe_removed/evt_pipe_ready (pipe) and evt_pipe_recv (pipe, msgs).
        return pipe is self.peer

    def take_peer(self, pipe: Pipe) -> None:
        self.peer = pipe

    def reject_pipe(self, pipe: Pipe) -> None:
        self.ctx.stats.count(PIPES_REJECTED)
        self.ctx.reject_pipe(pipe)

    def forget_peer(self, pipe: Pipe) -> None:
        self.peer = None

    # send_backlog and send_to_peer run only while paired (the table), so with a peer.

    def send_backlog(self, pipe: Pipe) -> None:
        backlog, peer = self.backlog, self.peer
        while backlog and peer.free:  # type: ignore[union-attr]
            peer.cmd_send(body_of(backlog.popleft()))  # type: ignore[union-attr]

    def grant_capacity(self, *args: object) -> None:
        # *args: an action of pipe events (pipe; PAIR v1: pipe, msgs) and of a refused raw
        # PAIR v1 cmd_send (item); the credit depends on the peer and the backlog only.
        peer = self.peer
        if peer is None or self.backlog or not peer.free:
            self.ctx.set_send_capacity(0, 0)
        else:
            self.ctx.set_send_capacity(peer.free, peer.free_bytes)

    def send_to_peer(self, item: Item) -> None:
        if self.backlog or not self.peer.free:  # type: ignore[union-attr]
            self.backlog.append(item)
        else:
            # body_of, inline: the path of every send, between send() and the kernel.
            self.peer.cmd_send(  # type: ignore[union-attr]
                item.body if isinstance(item, Message) else item)
