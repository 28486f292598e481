"""REQ, raw and cooked (tables: machines ``req_raw`` and ``req`` in protocols.yaml).

Theory of operation
-------------------
The work is split between the caller's thread and the I/O thread (core/policy.py):

- ``ReqPolicy`` (facade, cooked only) owns what the user can see: it picks the request
  id (random start, +1 per request, WIRE.md), wraps the body as
  ``Message(body, header=id_word)``, drops older replies still queued for the user, makes
  ``recv()`` a ``BadState`` while no request is outstanding, and lets through only the
  reply that carries the outstanding id.
- ``Req`` (I/O thread) owns what the wire sees: it sends the one outstanding request to
  one pipe, resends the very same bytes every ``resend_interval`` (possibly to another
  pipe), resends at once when the pipe that carried it dies, and keeps the request while
  no pipe can take it. A reply is the id word followed by the body; anything whose first
  four bytes are not the outstanding id word is dropped and counted (``dropped_stale``).

``ReqRaw`` keeps no state: the user's header goes out as given, round-robin, and a reply's
header (the words up to and including the first with the high bit) comes back split off.

Pipe choice (both): load balancing as PUSH (protocols/_balance.py): round-robin over the
pipes that can take a message, preferring the best ``send_priority`` [seen in nng: 0,1,0,1].

Extra fields:

- those of the load balancer (_balance.py); its ``backlog`` is used by the raw REQ only;
- ``request`` (``(header, body)``): ``sent`` and ``waiting`` only, None in ``idle``;
- ``carrier`` (the pipe the request last went to) and ``_timer`` (the resend timer):
  ``sent`` only, cleared on leaving it.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from scaproust._generated.req import ReqFSM
from scaproust._generated.req_raw import ReqRawFSM
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.policy import Policy
from scaproust.core.stats import (
    DROPPED_MALFORMED,
    DROPPED_REJECTED,
    DROPPED_STALE,
    PURGED_STALE,
    REQUESTS_RESENT,
)
from scaproust.errors import BadState
from scaproust.protocols._backtrace import split_stacks
from scaproust.protocols._balance import LoadBalancer
from scaproust.protocols._headers import (
    ID_MASK,
    id_word,
)

if TYPE_CHECKING:
    from scaproust.core.channel import Channel
    from scaproust.core.context import Context
    from scaproust.core.interfaces import Timer
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.pipe import Pipe
    from scaproust.core.stats import Stats


log = logging.getLogger("scaproust.protocol")

#: A cooked reply starts with the 4-byte id word (WIRE.md, "REQ").
ID_SIZE = 4


class ReqRaw(ReqRawFSM, LoadBalancer):
    """Raw REQ protocol machine; also the pipe handling of the cooked one."""

    def _transmit(self, pipe: Pipe, item: Item) -> None:
        # The header (the user's, or the cooked REQ's id word) goes out with the body.
        pipe.cmd_send(body_of(item), header_of(item))

    def _reject(self, pipe: Pipe, err: str, behind: int = 0) -> None:
        """Close ``pipe`` for a malformed reply; the ``behind`` messages that came after
        it in the same read die with the pipe, counted as rejected."""
        log.debug("pipe %d closed: %s", pipe.id, err)
        self.ctx.stats.count(DROPPED_MALFORMED)
        self.ctx.stats.count(DROPPED_REJECTED, behind)
        self._forget(pipe)
        self.ctx.reject_pipe(pipe)

    # ------------------------------------------------------------------ receiving (raw)

    def deliver_replies(self, pipe: Pipe, msgs: list[bytes]) -> None:
        if pipe not in self.pipes:
            self.ctx.stats.count(DROPPED_REJECTED, len(msgs))
            return
        out, malformed = split_stacks(self.ctx, pipe, msgs)
        if malformed is not None:
            self._forget(pipe)
            self.ctx.reject_pipe(pipe)
        if out:
            self.ctx.deliver(out, pipe.recv_priority)


class Req(ReqFSM, ReqRaw):
    """Cooked REQ protocol machine: one outstanding request, resent until answered."""

    def __init__(self, ctx: Context) -> None:
        ReqRaw.__init__(self, ctx)
        self.request: tuple[bytes, bytes] | None = None
        self.carrier: Pipe | None = None
        self._timer: Timer | None = None

    # Typed as Optional, ``request`` is set in ``sent`` and ``waiting``, where the table
    # fires the methods that read it (marked below), and the guards of every row that
    # sends (pipe_has_room, our_pipe_has_room, other_pipe_has_room, can_send) leave a pipe
    # that ``_pick`` finds: mypy is told so rather than a check added at run time.

    # ------------------------------------------------------------------ guards

    def pipe_has_room(self, pipe: Pipe) -> bool:
        return bool(pipe.free)

    def our_pipe_has_room(self, pipe: Pipe) -> bool:
        # A pipe closed for a malformed reply may still report room until the loop
        # removes it: it is no longer ours to send on.
        return bool(pipe.free) and pipe in self.pipes

    def other_pipe_has_room(self, pipe: Pipe) -> bool:
        return any(p.free for p in self.pipes if p is not pipe)

    def can_send(self, *args: object) -> bool:
        # *args: a guard of cmd_send (item) and of evt_timeout (nothing); it needs neither.
        return any(p.free for p in self.pipes)

    def is_carrier(self, pipe: Pipe) -> bool:
        return pipe is self.carrier

    def has_reply(self, pipe: Pipe, msgs: list[bytes]) -> bool:
        if pipe not in self.pipes:
            return False
        word = self.request[0]  # type: ignore[index]  # sent, waiting
        for payload in msgs:
            if len(payload) < ID_SIZE:
                return False  # the pipe gets closed: nothing after this counts
            if payload[:ID_SIZE] == word:
                return True
        return False

    # ------------------------------------------------------------------ the request

    def take_request(self, item: Item) -> None:
        # A bare body has no id, so no reply can ever match it (the policy adds one).
        self.request = (header_of(item), body_of(item))

    def send_request(self, *args: object) -> None:
        # *args: an action of evt_pipe_added and evt_pipe_ready (pipe) and of cmd_send
        # (item), and called by resend_request with nothing; the request is self.request.
        if self._timer is not None:
            self._timer.cancel()  # a new request, or a resend: one timer at a time
        pipe = self._pick()
        header, body = self.request  # type: ignore[misc]  # set by take_request
        pipe.cmd_send(body, header)  # type: ignore[union-attr]  # the row's guard
        self.carrier = pipe
        self._timer = self.ctx.call_later(self.ctx.options.resend_interval, self._on_resend_timer)

    def resend_request(self, *args: object) -> None:
        # *args: an action of evt_pipe_removed (pipe) and of evt_timeout (nothing).
        self.ctx.stats.count(REQUESTS_RESENT)
        self.send_request()

    def _on_resend_timer(self) -> None:
        self._timer = None
        self.evt_timeout()

    def stop_resend_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.carrier = None

    def drop_request(self) -> None:
        self.request = None

    # ------------------------------------------------------------------ replies

    def deliver_reply(self, pipe: Pipe, msgs: list[bytes]) -> None:
        word = self.request[0]  # type: ignore[index]  # sent, waiting
        self.request = None
        reply = None
        stale = 0
        for index, payload in enumerate(msgs):
            if len(payload) < ID_SIZE:
                self._reject(pipe, f"a {len(payload)}-byte reply has no request id",
                             len(msgs) - index - 1)
                break
            if reply is None and payload[:ID_SIZE] == word:
                reply = Message(payload[ID_SIZE:], word)
            else:
                stale += 1
        if stale:
            self.ctx.stats.count(DROPPED_STALE, stale)
        self.ctx.deliver([reply], pipe.recv_priority)  # type: ignore[list-item]  # has_reply

    def drop_replies(self, pipe: Pipe, msgs: list[bytes]) -> None:
        if pipe not in self.pipes:
            self.ctx.stats.count(DROPPED_REJECTED, len(msgs))
            return
        stale = 0
        for index, payload in enumerate(msgs):
            if len(payload) < ID_SIZE:
                self._reject(pipe, f"a {len(payload)}-byte reply has no request id",
                             len(msgs) - index - 1)
                break
            stale += 1
        if stale:
            self.ctx.stats.count(DROPPED_STALE, stale)


class ReqPolicy(Policy):
    """The user-visible state of a cooked REQ: request ids and whether one is outstanding.

    ``current`` is the id word of the outstanding request, None when there is none (before
    the first send, and once its reply was handed over).
    """

    plain_recv = False  # a reply must match the outstanding request

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        self._next_id = random.getrandbits(31)  # random start, +1 per request (WIRE.md)
        self.current: bytes | None = None

    def outgoing(self, item: Item) -> Item:
        with self.lock:
            word = id_word(self._next_id)
            self._next_id = (self._next_id + 1) & ID_MASK
        return Message(body_of(item), word)

    def sent(self, item: Item) -> None:
        # Only now is this the outstanding request: a send that timed out left the previous
        # one in place, in the backend too. Replies queued for the user belong to older
        # requests now (the new one's reply, if already there, stays).
        with self.lock:
            # What outgoing returned: a Message.
            self.current = word = item.header  # type: ignore[union-attr]
            if not self.channel.inbox:
                return  # nothing queued (the usual case): nothing can be stale
            stale = self.channel.purge_inbox(
                keep=lambda got: type(got) is not bytes and got.header == word)  # type: ignore[union-attr]
        self.stats.count_from_caller(PURGED_STALE, stale)

    def recv_wait(self, deadline: float | None) -> float | None:
        with self.lock:
            if self.current is None:
                raise BadState("a REQ socket receives a reply only after send()ing a request")
        return super().recv_wait(deadline)

    def incoming(self, item: Item) -> Item | None:
        with self.lock:
            stale = header_of(item) != self.current
            if not stale:
                self.current = None
        if stale:  # a reply to an older request
            self.stats.count_from_caller(PURGED_STALE)
            return None
        return item
