"""SURVEYOR: ask every respondent at once, collect the answers until a deadline (tables:
machines ``surveyor_raw`` and ``surveyor`` in protocols.yaml).

Theory of operation
-------------------
Raw (``SurveyorRaw``, one working state ``open``): no ids, no deadline, no state of its
own. Each message the user sends (an ``sp.Message`` whose header the user wrote, normally
one survey-id word) goes to every pipe that can take it now; a pipe that cannot misses it,
counted as ``dropped_pipe_full`` (WIRE.md, "SURVEYOR": nng and nanomsg do the same). So send
never blocks: the send credit is ``UNBOUNDED`` from the start. A response's header is its
words up to and including the first with the most significant bit set (the survey id); it
is delivered as ``Message(body, header)``. A response with no such word is malformed and
closes its pipe (nng's choice, WIRE.md). Any depth comes back, as in nng: the hops were
counted on the survey's way out (``ttl`` applies where surveys arrive, WIRE.md R8).

Cooked (``Surveyor``, states ``idle`` / ``surveying``): its policy, ``SurveyorPolicy``
numbers the surveys (a random start, +1 each) and hands each over as
``Message(body, header=id_word(id))``. The machine broadcasts it like the raw one, keeps
that id word as ``survey`` and starts the deadline timer (the ``survey_deadline`` option,
1 s by default as in nng and nanomsg); a new survey cancels the old one's timer and takes
its place. While ``surveying``, responses carrying the current id word are delivered as
``Message(body, header=id word)``; others answer an older survey and are dropped
(``dropped_stale``). At the deadline (``evt_deadline``) the machine is back in ``idle``,
where every response is late and dropped (``dropped_late``).

The user-visible half is ``SurveyorPolicy`` (core/policy.py explains policies), which
runs in the caller's thread and keeps its own copy of the id and the deadline, so that a
recv needs no round trip to the I/O thread: recv before any survey, or after the deadline,
raises ``sp.BadState``; a recv still waiting when the deadline passes raises
``sp.Timeout``; a new survey throws away every response not yet received.

Extra fields and when they are valid: ``pipes`` (active pipes in arrival order, always);
``survey`` (the current id word, ``surveying`` only, None otherwise); ``_timer`` (the
deadline timer, ``surveying`` only); ``contexts`` (the open ``SurveyorContext``s) and
``by_id`` (the id word of each context's running survey: that context).

Contexts (``sock.context()``, machine ``surveyor_ctx``): each runs its own survey, with an
id from the socket's pool (``SurveyorContextPolicy`` draws it from the socket's policy) and
its own deadline timer; it broadcasts on the socket's pipes, and the socket hands it the
responses that carry its id (``_to_contexts``) before its own survey sees what is left.
Its receive queue is a channel of its own (core/user_context.py); its caller-side half is
the socket's policy, one per context.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

from scaproust._generated.surveyor import SurveyorFSM
from scaproust._generated.surveyor_ctx import SurveyorCtxFSM
from scaproust._generated.surveyor_raw import SurveyorRawFSM
from scaproust.core.channel import UNBOUNDED
from scaproust.core.guard import facade_call
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.policy import ContextPolicy, Policy
from scaproust.core.stats import (
    DROPPED_CLOSED,
    DROPPED_LATE,
    DROPPED_PIPE_FULL,
    DROPPED_REJECTED,
    DROPPED_STALE,
    PURGED_STALE,
)
from scaproust.errors import BadState, Closed, Timeout
from scaproust.protocols._backtrace import split_stacks
from scaproust.protocols._base import ProtocolBase
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


def _broadcast(ctx: Context, pipes: list[Pipe], item: Item) -> None:
    """Send ``item`` to every pipe that can take it now; count those that miss it."""
    body, header = body_of(item), header_of(item)
    missed = 0
    for pipe in pipes:
        if pipe.free:
            pipe.cmd_send(body, header)
        else:
            missed += 1
    if missed:
        ctx.stats.count(DROPPED_PIPE_FULL, missed)


class SurveyorRaw(SurveyorRawFSM, ProtocolBase):
    """Raw SURVEYOR protocol machine (also the base of the cooked one)."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.pipes: list[Pipe] = []
        # A survey never waits for a pipe (one that cannot take it misses it): the credit
        # is granted once and never runs out.
        ctx.set_send_capacity(UNBOUNDED, UNBOUNDED)

    def add_pipe(self, pipe: Pipe) -> None:
        self.pipes.append(pipe)

    def remove_pipe(self, pipe: Pipe) -> None:
        if pipe in self.pipes:
            self.pipes.remove(pipe)

    def broadcast(self, item: Item) -> None:
        _broadcast(self.ctx, self.pipes, item)

    def deliver_responses(self, pipe: Pipe, msgs: list[bytes]) -> None:
        items = self._parse(pipe, msgs)
        if items:
            self.ctx.deliver(items, pipe.recv_priority)

    def _parse(self, pipe: Pipe, msgs: list[bytes]) -> list[Message]:
        if pipe not in self.pipes:
            self.ctx.stats.count(DROPPED_REJECTED, len(msgs))  # closing: malformed earlier
            return []
        items, malformed = split_stacks(self.ctx, pipe, msgs, limit_hops=False)
        if malformed is not None:
            self.remove_pipe(pipe)  # no more surveys to it while the loop closes it
            self.ctx.reject_pipe(pipe)
        return items


class Surveyor(SurveyorFSM, SurveyorRaw):
    """Cooked SURVEYOR protocol machine: the current survey and its deadline."""

    def __init__(self, ctx: Context) -> None:
        SurveyorRaw.__init__(self, ctx)
        self.survey: bytes | None = None
        self._timer: Timer | None = None
        # In opening order (a dict as an ordered set): the same events, the same sends.
        self.contexts: dict[SurveyorContext, None] = {}
        self.by_id: dict[bytes, SurveyorContext] = {}

    def take_survey(self, item: Item) -> None:
        # The cooked policy's Message, its header the survey id (SurveyorPolicy.outgoing).
        self.survey = item.header  # type: ignore[union-attr]

    def start_deadline(self, item: Item) -> None:
        self._timer = self.ctx.call_later(self.ctx.options.survey_deadline, self._on_deadline)

    def cancel_deadline(self, *args: object) -> None:
        # *args: on_exit of surveying (nothing) and an action of cmd_send (item).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        self.evt_deadline()

    def forget_survey(self) -> None:
        self.survey = None

    def deliver_current(self, pipe: Pipe, msgs: list[bytes]) -> None:
        items = self._to_contexts(pipe, self._parse(pipe, msgs))
        current = [item for item in items if item.header == self.survey]
        if len(current) < len(items):
            self.ctx.stats.count(DROPPED_STALE, len(items) - len(current))
        if current:
            self.ctx.deliver(current, pipe.recv_priority)

    def drop_late(self, pipe: Pipe, msgs: list[bytes]) -> None:
        # Parsed all the same: a malformed response closes its pipe whenever it comes.
        self.ctx.stats.count(DROPPED_LATE, len(self._to_contexts(pipe, self._parse(pipe, msgs))))

    # ------------------------------------------------------------------ contexts

    @facade_call
    def open_context(self, ctx: Context) -> SurveyorContext:
        """A new context whose responses go through ``ctx`` (its own receive queue)."""
        if self.state == "closed":
            raise Closed("socket is closed")
        context = SurveyorContext(ctx, self)
        self.contexts[context] = None
        return context

    def _to_contexts(self, pipe: Pipe, items: list[Message]) -> list[Message]:
        """Hand each response to the context whose running survey it answers; return the
        others, for the socket's own survey."""
        by_id = self.by_id
        if not by_id:
            return items  # no context surveying (the usual case)
        rest = []
        for item in items:
            context = by_id.get(item.header)
            if context is None:
                rest.append(item)
            else:
                context.evt_response(pipe, item)
        return rest

    def close_contexts(self) -> None:
        for context in list(self.contexts):
            context.cmd_close()


class SurveyorContext(SurveyorCtxFSM):
    """One context of a cooked SURVEYOR, in the I/O thread (machine ``surveyor_ctx``).

    Fields: ``survey`` (its running survey's id word, ``surveying`` only), ``_timer`` (its
    deadline, ``surveying`` only), ``parent`` (the socket's ``Surveyor``: its pipes and
    ``by_id``), ``ctx`` (its own ``core.context.Context``: its queue, its options).
    """

    def __init__(self, ctx: Context, parent: Surveyor) -> None:
        self.ctx = ctx
        self.parent = parent
        self.survey: bytes | None = None
        self._timer: Timer | None = None

    def __repr__(self) -> str:
        return f"<SurveyorContext {self.state}>"

    def take_survey(self, item: Item) -> None:
        self.survey = word = header_of(item)  # the policy's id word
        self.parent.by_id[word] = self

    def broadcast(self, item: Item) -> None:
        _broadcast(self.ctx, self.parent.pipes, item)

    def start_deadline(self, item: Item) -> None:
        self._timer = self.ctx.call_later(self.ctx.options.survey_deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        self.evt_deadline()

    def cancel_deadline(self, *args: object) -> None:
        # *args: on_exit of surveying (nothing) and an action of cmd_send (item).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def forget_survey(self, *args: object) -> None:
        # *args: on_exit of surveying (nothing) and an action of cmd_send (item).
        by_id = self.parent.by_id
        if self.survey is not None and by_id.get(self.survey) is self:
            del by_id[self.survey]
        self.survey = None

    def release(self) -> None:
        self.parent.contexts.pop(self, None)

    def deliver_response(self, pipe: Pipe, msg: Message) -> None:
        self.ctx.deliver([msg], pipe.recv_priority)

    def drop_closed(self, item: Item) -> None:
        self.ctx.stats.count(DROPPED_CLOSED)


class SurveyorPolicy(Policy):
    """What a cooked SURVEYOR checks in the caller's thread: the survey id and deadline."""

    plain_recv = False  # answers count only for the current survey, before its deadline

    #: The policy's clock (tests substitute a fake one); the facade's waits use the same.
    clock = staticmethod(time.monotonic)

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        # Ids start random and go +1 per survey, like a REQ's (WIRE.md).
        self._next_id = random.getrandbits(31)
        self._word: bytes | None = None  # the current survey's id word
        self._deadline: float | None = None  # when its responses stop counting
        #: The id word of the survey being sent (from ``outgoing`` on): its responses may
        #: come before ``sent`` makes it the current one.
        self._sending: bytes | None = None

    def _next_word(self) -> bytes:
        """The next survey id word of this policy's pool."""
        with self.lock:
            word = id_word(self._next_id)
            self._next_id = (self._next_id + 1) & ID_MASK
        return word

    def outgoing(self, item: Item) -> Item:
        return self._survey(item, self._next_word())

    def _survey(self, item: Item, word: bytes) -> Message:
        with self.lock:
            self._sending = word
        return Message(body_of(item), word)

    def sent(self, item: Item) -> None:
        # The survey was accepted: it is the current one now. The old one is cancelled and
        # its responses are stale (a response to the new one, if already there, stays).
        with self.lock:
            # What outgoing returned: a Message.
            self._word = word = item.header  # type: ignore[union-attr]
            self._deadline = self.clock() + self.options.survey_deadline
            self.epoch += 1  # receives waiting through the old survey carry over (renewed)
            stale = self.channel.purge_inbox(
                keep=lambda got: type(got) is not bytes and got.header == word)  # type: ignore[union-attr]
        self.stats.count_from_caller(PURGED_STALE, stale)

    def recv_wait(self, deadline: float | None) -> float | None:
        with self.lock:
            survey_deadline = self._deadline
        if survey_deadline is None:
            raise BadState("a surveyor receives responses to a survey: send one first")
        now = self.clock()
        left = survey_deadline - now
        if left <= 0:
            raise BadState("the survey's deadline has passed: send a new survey to receive again")
        if deadline is None:
            return left
        # When the survey's deadline ends the wait, the channel raises Timeout.
        return max(0.0, min(left, deadline - now))

    def renewed(self, epoch: int) -> bool:
        # A receive waiting when another thread sent a new survey was capped at the old
        # one's deadline: it carries over to the new survey, until that one's deadline.
        with self.lock:
            survey_deadline = self._deadline
        return (self.epoch != epoch and survey_deadline is not None
                and self.clock() < survey_deadline)

    def incoming(self, item: Item) -> Item | None:
        header = header_of(item)
        with self.lock:
            word, sending, survey_deadline = self._word, self._sending, self._deadline
        if header == word or header == sending:
            # The current survey's, or the one being sent, answered before its send()
            # returned: the receives waiting now carry over to it (as they do once it is
            # sent), so its response is theirs, not stale.
            return item
        # A response to an older survey, received before the new one purged it: drop it.
        # If the deadline passed meanwhile, this recv was pending at the deadline.
        self.stats.count_from_caller(PURGED_STALE)
        if survey_deadline is None or self.clock() >= survey_deadline:
            raise Timeout("recv timed out: the survey's deadline passed")
        return None


class SurveyorContextPolicy(ContextPolicy, SurveyorPolicy):
    """The caller-side state of one SURVEYOR context: the socket's policy (its survey id,
    its deadline, recv refused before a survey or after the deadline), with ids from the
    socket's policy (one pool for the socket and its contexts) and the context's own
    ``survey_deadline``."""

    own_machine = True

    def outgoing(self, item: Item) -> Item:
        parent = self.parent
        assert isinstance(parent, SurveyorPolicy)  # made by its socket, with its policy
        return self._survey(item, parent._next_word())
