"""BUS, raw and cooked (tables: machines ``bus_raw`` and ``bus`` in protocols.yaml).

Theory of operation
-------------------
A bus node talks to its direct neighbours only (WIRE.md, "BUS" [seen]): every message sent
goes to each pipe once, nothing received is ever sent on (no forwarding: a full mesh needs
a link between every two nodes, or a device), and nothing comes back to its sender (no
echo). There is no header on the wire. The protocol has no state beyond its pipes, so each
table has one working state.

- Send never blocks: the credit is ``UNBOUNDED`` from the start. A pipe that cannot take a
  message now (512 messages or 4 MiB queued) misses it, counted as ``dropped_pipe_full``;
  nng drops it the same way once the pipe's send queue is full.
- ``BusRaw`` hands each message received over as ``Message(body, header=pipe_word(id))``,
  the id of the pipe it came from: a local-only header, never on the wire. On send, a
  header's first word names a pipe that does not get the message, and the header itself is
  not sent: so a device that reflects a raw bus onto itself (``sp.device(bus)``) sends each
  message to every pipe but the one it came from (nng's bus0 does the same).
- ``Bus`` (cooked) delivers bodies only and sends bodies only (a ``Message``'s header is
  ignored) to every pipe.

Extra fields: ``pipes`` (the active pipes, in arrival order, as dict keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.bus import BusFSM
from scaproust._generated.bus_raw import BusRawFSM
from scaproust.core.channel import UNBOUNDED
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.stats import DROPPED_PIPE_FULL
from scaproust.protocols._base import ProtocolBase
from scaproust.protocols._headers import WORD, pipe_word

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe


class BusRaw(BusRawFSM, ProtocolBase):
    """Raw BUS protocol machine."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.pipes: dict[Pipe, None] = {}  # insertion-ordered set
        ctx.set_send_capacity(UNBOUNDED, UNBOUNDED)  # a bus never waits for a peer

    def add_pipe(self, pipe: Pipe) -> None:
        self.pipes[pipe] = None

    def remove_pipe(self, pipe: Pipe) -> None:
        self.pipes.pop(pipe, None)

    def deliver_with_pipe_id(self, pipe: Pipe, msgs: list[bytes]) -> None:
        word = pipe_word(pipe.id)
        self.ctx.deliver([Message(body, word) for body in msgs], pipe.recv_priority)

    def send_to_all_but_sender(self, item: Item) -> None:
        header = header_of(item)
        sender = WORD.unpack_from(header)[0] if len(header) >= 4 else None
        self._broadcast(body_of(item), sender)

    def _broadcast(self, body: bytes, skip_id: int | None) -> None:
        """Send ``body`` to every pipe that can take it, except the pipe ``skip_id``."""
        missed = 0
        for pipe in self.pipes:
            if pipe.id == skip_id:
                continue
            if pipe.free:
                pipe.cmd_send(body)
            else:
                missed += 1
        if missed:
            self.ctx.stats.count(DROPPED_PIPE_FULL, missed)


class Bus(BusFSM, BusRaw):
    """Cooked BUS protocol machine: the raw one, without pipe ids in or out."""

    def send_to_all(self, item: Item) -> None:
        self._broadcast(body_of(item), None)
