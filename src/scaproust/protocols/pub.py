"""PUB: broadcast every message to every SUB (table: machine ``pub``, raw and cooked).

Theory of operation: PUB has no header and no user-visible state, so raw and cooked PUB
are one machine with one working state, like nng's pub0 (whose raw variant shares the
cooked code). Each message goes to every active pipe that can take it now; a pipe whose
queue is full (``pipe.free`` is 0: 512 buffers or 4 MiB queued, core/pipe.py) misses that
message, counted once per pipe in ``dropped_slow_subscriber``. So a slow subscriber costs
at most its pipe's bounded queue, never the publisher's memory, and send() never blocks:
the send credit is ``UNBOUNDED`` (2**60 messages and bytes), stated once at creation
because it never changes (at 10 GB/s the bytes would last over three years). A message
published while no SUB is connected goes nowhere (``dropped_no_subscriber``). A burst the
I/O thread drains goes to each pipe in one event (``publish_many``): each pipe gets and
misses exactly what it would one message at a time.

A SUB never writes, not even its subscriptions: filtering is the subscriber's job, and
nanomsg's PUB aborts its whole process on incoming data [seen] (WIRE.md, "PUB"). Data
arriving here is a protocol violation: like nng, we close that pipe, with one warning per
pipe and the messages counted in ``dropped_unexpected``.

Extra fields: ``pipes`` (active pipes we publish to, in arrival order), ``_rejected``
(pipes closed for sending data, out of ``pipes`` until their removal: each is logged once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scaproust._generated.pub import PubFSM
from scaproust.core.channel import UNBOUNDED
from scaproust.core.message import body_of
from scaproust.core.pipe import JOIN_MAX, Publication
from scaproust.core.stats import (
    DROPPED_NO_SUBSCRIBER,
    DROPPED_SLOW_SUBSCRIBER,
    DROPPED_UNEXPECTED,
    PIPES_REJECTED,
)
from scaproust.protocols._base import ProtocolBase

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe

log = logging.getLogger("scaproust.protocol")


class Pub(PubFSM, ProtocolBase):
    """PUB protocol machine (raw and cooked)."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.pipes: list[Pipe] = []
        self._rejected: set[Pipe] = set()
        ctx.set_send_capacity(UNBOUNDED, UNBOUNDED)  # never blocks, whatever the pipes do

    def add_pipe(self, pipe: Pipe) -> None:
        self.pipes.append(pipe)

    def remove_pipe(self, pipe: Pipe) -> None:
        if pipe in self._rejected:
            self._rejected.discard(pipe)  # left ``pipes`` when it was rejected
        else:
            self.pipes.remove(pipe)

    def send_to_all(self, item: Item) -> None:
        pipes = self.pipes
        if not pipes:
            self.ctx.stats.count(DROPPED_NO_SUBSCRIBER)
            return
        body = body_of(item)  # PUB has no header: a Message's header is not sent (as PUSH)
        missed = 0
        for pipe in pipes:
            if pipe.free:
                pipe.cmd_publish(body)  # the same frame for every pipe of one framing
            else:
                missed += 1
        if missed:
            self.ctx.stats.count(DROPPED_SLOW_SUBSCRIBER, missed)

    def publish_many(self, items: list[Item]) -> None:
        # A batch drained by the I/O thread (SocketCore._drain_outbox): one event per pipe
        # for all of it, each frame built once per framing (Publication). What each pipe
        # has no room for, it misses, as one message at a time would. A body too large to
        # join goes message by message (its frame is two buffers).
        pipes = self.pipes
        if not pipes:
            self.ctx.stats.count(DROPPED_NO_SUBSCRIBER, len(items))
            return
        bodies = [body_of(item) for item in items]
        if max(map(len, bodies)) > JOIN_MAX:
            for item in items:
                self.send_to_all(item)
            return
        batch = Publication(bodies)
        missed = 0
        for pipe in pipes:
            if pipe.free:
                pipe.cmd_publish_many(batch)
            else:
                missed += len(bodies)
        missed += batch.missed
        if missed:
            self.ctx.stats.count(DROPPED_SLOW_SUBSCRIBER, missed)

    def reject_sender(self, pipe: Pipe, msgs: list[bytes]) -> None:
        self.ctx.stats.count(DROPPED_UNEXPECTED, len(msgs))
        if pipe in self._rejected:
            return  # already closing: more frames from the same read
        self._rejected.add(pipe)
        if pipe in self.pipes:
            self.pipes.remove(pipe)  # publish nothing more to it while it closes
        self.ctx.stats.count(PIPES_REJECTED)
        log.warning("pipe %d closed: a SUB peer sent %d message(s) to this PUB; subscribers "
                    "must never write (nng closes such a pipe, nanomsg aborts)",
                    pipe.id, len(msgs))
        self.ctx.reject_pipe(pipe)
