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
- ``carrier`` (the pipe the request last went to) and ``resend`` (the resend deadline,
  protocols/_resend.py): ``sent`` only, cleared on leaving it.
- ``contexts`` (the open ``ReqContext``s), ``by_id`` (each outstanding context request's
  id word: its context) and ``queue`` (the contexts whose request waits for a pipe with
  room, first come first served).

Contexts (``sock.context()``, machine ``req_ctx``)
---------------------------------------------------
Each context is a ``ReqContext`` in the I/O thread, with its own request, carrier and
resend timer, and its own receive queue (a channel of its own, filled through a
``core.context.Context`` of its own); its caller-side half is ``ReqContextPolicy``, which
draws id words from the socket's ``ReqPolicy``, so the ids of the socket and of all its
contexts never collide and a reply's first word names the one request it answers. The
socket's own request (the default context) keeps its path, untouched: a pipe that comes or
gets room serves it first, then the waiting contexts in order. A pipe takes a context's
request only while it has room (``pipe.free``); requests that find none wait in ``queue``.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from typing import TYPE_CHECKING

from scaproust._generated.req import ReqFSM
from scaproust._generated.req_ctx import ReqCtxFSM
from scaproust._generated.req_raw import ReqRawFSM
from scaproust.core.guard import facade_call
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.policy import ContextPolicy, Policy
from scaproust.core.stats import (
    DROPPED_CLOSED,
    DROPPED_MALFORMED,
    DROPPED_REJECTED,
    DROPPED_STALE,
    PURGED_STALE,
    REQUESTS_RESENT,
)
from scaproust.errors import BadState, Closed
from scaproust.protocols._backtrace import split_stacks
from scaproust.protocols._balance import LoadBalancer
from scaproust.protocols._headers import END_OF_STACK, ID_MASK, WORD
from scaproust.protocols._resend import ResendTimer

if TYPE_CHECKING:
    from scaproust.core.channel import Channel
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.pipe import Pipe
    from scaproust.core.stats import Stats


log = logging.getLogger("scaproust.protocol")

#: A cooked reply starts with the 4-byte id word (WIRE.md, "REQ").
ID_SIZE = 4
#: What a REQ context's receive raises when a new send() on the context replaced its request.
_CANCELLED = "the request was cancelled by a new send() on this context"


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
        out, malformed = split_stacks(self.ctx, pipe, msgs, limit_hops=False)
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
        self.resend = ResendTimer(ctx, self._on_resend_timer)
        # In opening order (a dict as an ordered set): the same events, the same sends.
        self.contexts: dict[ReqContext, None] = {}
        self.by_id: dict[bytes, ReqContext] = {}
        self.queue: deque[ReqContext] = deque()
        #: True while a pipe event serves or reroutes the contexts' requests: their sends
        #: leave the credit to the row's grant_capacity, which comes once all are placed.
        self.placing = False

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
        # A loop, not any() over a generator: this guard runs for every request.
        for pipe in self.pipes:
            if pipe.free:
                return True
        return False

    def is_carrier(self, pipe: Pipe) -> bool:
        return pipe is self.carrier

    def has_reply(self, pipe: Pipe, msgs: list[bytes]) -> bool:
        if pipe not in self.pipes:
            return False
        word = self.request[0]  # type: ignore[index]  # sent, waiting
        if len(msgs) == 1:
            # The usual reply, alone in its read: the loop below for one message, without
            # its steps (a short payload's first bytes are shorter than the word).
            return msgs[0][:ID_SIZE] == word
        for payload in msgs:
            if len(payload) < ID_SIZE:
                return False  # the pipe gets closed: nothing after this counts
            if payload[:ID_SIZE] == word:
                return True
        return False

    # ------------------------------------------------------------------ the request

    def take_request(self, item: Item) -> None:
        # A bare body has no id, so no reply can ever match it (the policy adds one).
        # (header_of and body_of, inline: the path of every request.)
        self.request = (b"", item) if isinstance(item, bytes) else (item.header, item.body)

    def send_request(self, *args: object) -> None:
        # *args: an action of evt_pipe_added and evt_pipe_ready (pipe) and of cmd_send
        # (item), and called by resend_request with nothing; the request is self.request.
        pipe = self._pick()
        header, body = self.request  # type: ignore[misc]  # set by take_request
        pipe.cmd_send(body, header)  # type: ignore[union-attr]  # the row's guard
        self.carrier = pipe
        self.resend.start()  # a new request, or a resend: the deadline moves on

    def resend_request(self, *args: object) -> None:
        # *args: an action of evt_pipe_removed (pipe) and of evt_timeout (nothing).
        self.ctx.stats.count(REQUESTS_RESENT)
        self.send_request()

    def _on_resend_timer(self) -> None:
        self.evt_timeout()

    def stop_resend_timer(self) -> None:
        # The deadline cleared in place (no method of ResendTimer's for it): this runs
        # between every reply's arrival and recv() returning.
        self.resend.due = None
        self.carrier = None

    def drop_request(self) -> None:
        # The socket closes: its loop timer goes too, not left to lapse.
        self.request = None
        self.resend.cancel()

    # ------------------------------------------------------------------ replies

    def deliver_reply(self, pipe: Pipe, msgs: list[bytes]) -> None:
        word = self.request[0]  # type: ignore[index]  # sent, waiting
        self.request = None
        if len(msgs) == 1:
            # The usual reply, alone in its read: has_reply found it carries the id. The
            # loop below, for one message, without its steps (a twentieth of a receive).
            self.ctx.deliver([Message(msgs[0][ID_SIZE:], word)], pipe.recv_priority)
            return
        reply = None
        stale = 0
        for index, payload in enumerate(msgs):
            if len(payload) < ID_SIZE:
                self._reject(pipe, f"a {len(payload)}-byte reply has no request id",
                             len(msgs) - index - 1)
                break
            if reply is None and payload[:ID_SIZE] == word:
                reply = Message(payload[ID_SIZE:], word)
            elif not self._to_context(payload):
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
            if not self._to_context(payload):
                stale += 1
        if stale:
            self.ctx.stats.count(DROPPED_STALE, stale)

    # ------------------------------------------------------------------ contexts

    @facade_call
    def open_context(self, ctx: Context) -> ReqContext:
        """A new context whose replies go through ``ctx`` (its own receive queue)."""
        if self.state == "closed":
            raise Closed("socket is closed")
        context = ReqContext(ctx, self)
        self.contexts[context] = None
        return context

    def _to_context(self, payload: bytes) -> bool:
        """Hand a reply to the context whose outstanding request it answers, if any."""
        if not self.by_id:
            return False  # no context request outstanding (the usual case)
        context = self.by_id.get(payload[:ID_SIZE])
        if context is None:
            return False
        context.evt_reply(Message(payload[ID_SIZE:], payload[:ID_SIZE]))
        return True

    def serve_contexts(self, pipe: Pipe) -> None:
        # pipe: the one that came or got room; the waiting requests go, first come first
        # served, to any pipes with room (each leaves the queue on leaving ``queued``).
        queue = self.queue
        self.placing = True
        try:
            while queue:
                target = self._pick()
                if target is None:
                    return
                queue[0].evt_pipe_offered(target)
        finally:
            self.placing = False

    def reroute_contexts(self, pipe: Pipe) -> None:
        if self.contexts:
            self.placing = True
            try:
                for context in [c for c in self.contexts if c.carrier is pipe]:
                    context.evt_carrier_gone()
            finally:
                self.placing = False

    def close_contexts(self) -> None:
        for context in list(self.contexts):
            context.cmd_close()


class ReqContext(ReqCtxFSM):
    """One context of a cooked REQ socket, in the I/O thread (machine ``req_ctx``).

    Fields: ``request`` (``(id word, body)``, None in ``idle``), ``carrier`` and ``resend``
    (``sent`` only, as the socket's own), ``parent`` (the socket's ``Req``), ``ctx`` (its
    own ``core.context.Context``: its receive queue, the socket's counters and loop, its
    own options, so its own ``resend_interval``).
    """

    def __init__(self, ctx: Context, parent: Req) -> None:
        self.ctx = ctx
        self.parent = parent
        self.request: tuple[bytes, bytes] | None = None
        self.carrier: Pipe | None = None
        self.resend = ResendTimer(ctx, self._on_resend_timer)
        self._on_wire = False  # the request went to a pipe at least once

    def __repr__(self) -> str:
        return f"<ReqContext {self.state}>"

    # ------------------------------------------------------------------ guards

    def can_send_now(self, *args: object) -> bool:
        # *args: a guard of cmd_send (item) and of the timer and carrier events (nothing).
        # Requests waiting before this one go first (FIFO).
        parent = self.parent
        return not parent.queue and any(p.free for p in parent.pipes)

    # ------------------------------------------------------------------ actions

    def take_request(self, item: Item) -> None:
        # The policy's item: Message(body, id word). A new request replaces the old one,
        # whose id no longer names this context: its late reply is dropped as stale.
        by_id = self.parent.by_id
        if self.request is not None and by_id.get(self.request[0]) is self:
            del by_id[self.request[0]]
        word = header_of(item)
        self.request = (word, body_of(item))
        self._on_wire = False
        by_id[word] = self

    def send_request(self, item: Item) -> None:
        self._send(self.parent._pick())

    def send_on_pipe(self, pipe: Pipe) -> None:
        self._send(pipe)

    def resend_request(self) -> None:
        self.ctx.stats.count(REQUESTS_RESENT)
        self._send(self.parent._pick())

    def _send(self, pipe: Pipe | None) -> None:
        word, body = self.request  # type: ignore[misc]  # set by take_request
        pipe.cmd_send(body, word)  # type: ignore[union-attr]  # can_send_now, or offered
        self.carrier = pipe
        self._on_wire = True
        # It took a slot of the socket's pipe: the socket's credit says so at once. Not
        # while a pipe event places several contexts' requests: restated after each, the
        # credit would offer for a moment the slot the next one takes, and a send()
        # blocked for credit could be accepted in between; that event's grant_capacity
        # comes once every request is placed.
        if not self.parent.placing:
            self.parent.grant_capacity()
        self.resend.start()  # a new request, or a resend: the deadline moves on

    def join_queue(self, *args: object) -> None:
        # *args: an action of cmd_send (item) and of the timer and carrier events
        # (nothing). Already waiting (a new request replaces a queued one): keep its turn.
        if self not in self.parent.queue:
            self.parent.queue.append(self)

    def leave_queue(self) -> None:
        try:
            self.parent.queue.remove(self)
        except ValueError:
            pass

    def _on_resend_timer(self) -> None:
        self.evt_timeout()

    def stop_resend_timer(self) -> None:
        # The deadline cleared in place (no method of ResendTimer's for it): this runs
        # between every reply's arrival and recv() returning.
        self.resend.due = None
        self.carrier = None

    def deliver_reply(self, msg: Message) -> None:
        # The socket routes here only a reply carrying this context's outstanding id.
        self.parent.by_id.pop(msg.header, None)
        self.request = None
        self.ctx.deliver([msg])

    def release(self) -> None:
        parent = self.parent
        if self.request is not None:
            if parent.by_id.get(self.request[0]) is self:
                del parent.by_id[self.request[0]]
            if not self._on_wire:
                self.ctx.stats.count(DROPPED_CLOSED)  # it never found a pipe
        self.request = None
        self.resend.cancel()  # the context closes: its loop timer goes too
        parent.contexts.pop(self, None)

    def drop_closed(self, item: Item) -> None:
        self.ctx.stats.count(DROPPED_CLOSED)


#: ``ReqPolicy.outstanding`` when no request is: never written (``incoming`` writes only
#: into a list holding the id word its reply carries, and a word is bytes).
_NO_REQUEST: list[bytes | None] = [None]


class ReqPolicy(Policy):
    """The user-visible state of a cooked REQ: request ids and whether one is outstanding.

    ``outstanding`` holds the id word of the outstanding request, or None when there is
    none (before the first send, and once its reply was handed over): a one-item list, a
    new one for each request (``sent``). A reply's receive (``incoming``) reads the list,
    compares and clears that same list without a lock: a request sent meanwhile in another
    thread came with a list of its own, which the reply to the one before never clears. A
    lock section was 0.2 µs of every reply's receive, between its arrival and ``recv()``
    returning. ``sent`` needs none either: sends are one at a time (``send_lock``).
    """

    plain_recv = False  # a reply must match the outstanding request

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        # Random start, +1 per request (WIRE.md), the low 31 bits with the high bit set, as
        # the 4-byte word itself: each next() is one step of the interpreter in C (no
        # lock, whatever threads send at once, and no Python arithmetic per request).
        self._words = map(WORD.pack, map(END_OF_STACK.__or__, map(
            ID_MASK.__and__, itertools.count(random.getrandbits(31)))))
        self.outstanding = _NO_REQUEST

    @property
    def current(self) -> bytes | None:
        """The id word of the outstanding request, None when there is none."""
        return self.outstanding[0]

    def outgoing(self, item: Item) -> Item:
        body = item if isinstance(item, bytes) else item.body  # body_of, inline
        return Message(body, next(self._words))  # id_word's step, drawn ready-made

    def sent(self, item: Item) -> None:
        # Only now is this the outstanding request: a send that timed out left the previous
        # one in place, in the backend too. Replies queued for the user belong to older
        # requests now (the new one's reply, if already there, stays). No lock of its own:
        # sends are one at a time (send_lock, core/policy.py), and the one write is atomic.
        word = item.header  # type: ignore[union-attr]  # what outgoing returned: a Message
        self.outstanding = [word]
        if not self.channel.inbox.count:
            return  # nothing queued (the usual case): nothing can be stale
        stale = self.channel.purge_inbox(
            keep=lambda got: type(got) is not bytes and got.header == word)  # type: ignore[union-attr]
        if stale:
            self.stats.count_from_caller(PURGED_STALE, stale)

    def recv_wait(self, deadline: float | None) -> float | None:
        # One read, no lock: a send racing this recv makes it see either request.
        if self.outstanding[0] is None:
            raise BadState("a REQ socket receives a reply only after send()ing a request")
        return Policy.recv_wait(self, deadline)  # no super(): a tenth of a µs

    def incoming(self, item: Item) -> Item | None:
        outstanding = self.outstanding
        if (b"" if isinstance(item, bytes) else item.header) != outstanding[0]:
            self.stats.count_from_caller(PURGED_STALE)  # a reply to an older request
            return None
        outstanding[0] = None  # answered (a newer request has a list of its own)
        return item


class ReqContextPolicy(ContextPolicy, ReqPolicy):
    """The caller-side state of one REQ context: as ``ReqPolicy`` (the outstanding id,
    replies to older requests dropped), with ids from the socket's policy (one pool for
    the socket and all its contexts), and a new request cancelling a receive that waits
    for the old one (as nng's contexts do)."""

    own_machine = True

    def __init__(self, channel: Channel, options: Options, stats: Stats | None = None,
                 parent: Policy | None = None) -> None:
        ContextPolicy.__init__(self, channel, options, stats, parent)  # ReqPolicy's too
        #: The receives waiting, by the request id each waits for (its token), and the ids
        #: a new request cancelled: their receives raise BadState (``take``), and a
        #: receive begun for one does at once, until the last of them is over.
        self.waiting: dict[bytes, int] = {}
        self.cancelled: set[bytes] = set()
        #: The id of the request being sent: its reply may come before ``sent``.
        self.sending: bytes | None = None

    def outgoing(self, item: Item) -> Item:
        assert self.parent is not None  # a context is made by its socket, with its policy
        msg = self.parent.outgoing(item)
        # The receives waiting for the old request end now, before the new one can go
        # out. A cancellation queued as an item after the send could go to another
        # receive (the waiting one then waited for ever), and the new reply, coming before
        # the send returned, went to the waiting receive, stale to it (lost).
        with self.lock:
            self.sending = msg.header  # type: ignore[union-attr]  # a Message, with its id
            old = self.current
            cancel = old is not None and old in self.waiting
            if cancel:
                self.cancelled.add(old)  # type: ignore[arg-type]  # not None: tested
        if cancel:
            self.channel.kick()  # the waiting receives look again (take's stop)
        return msg

    def begin_recv(self) -> object:
        with self.lock:
            current = self.current
            if current is None:
                raise BadState("a REQ context receives a reply only after send()ing a request")
            if current in self.cancelled:
                raise BadState(_CANCELLED)
            self.waiting[current] = self.waiting.get(current, 0) + 1
            return current

    def end_recv(self, token: object = None) -> None:
        with self.lock:
            left = self.waiting[token] - 1  # type: ignore[index]  # begin_recv's token
            if left:
                self.waiting[token] = left  # type: ignore[index]
            else:
                del self.waiting[token]  # type: ignore[arg-type]
                self.cancelled.discard(token)

    def take(self, wait: float | None, token: object = None) -> Item:
        cancelled = self.cancelled
        try:
            return self.channel.get_unless(wait, lambda: token in cancelled)
        except Closed:
            if token in cancelled and not (self.closed or self.channel.closed):
                raise BadState(_CANCELLED) from None
            raise

    def incoming_for(self, item: Item, token: object) -> Item | None:
        header = b"" if isinstance(item, bytes) else item.header
        if header != token and header == self.sending and header != self.current:
            # The reply to the request being sent, come before its send() returned: not
            # this receive's (it waits for the request that one replaces), and not stale.
            self.channel.put_back(item)
            raise BadState(_CANCELLED)
        return self.incoming(item)
