"""The shared harness of the stateful model tests: a socket without I/O, and the reference
pieces every model is made of.

One protocol machine is driven as its socket would drive it, but in memory and in the
test's thread (the sans-IO layer: no sockets, no threads, a fake clock):

- the world: ``ModelPipe``s (tests/protocols/fakes.py's ``FakePipe``, with settable
  ``free`` slots and send/recv priorities) that come and go, fill up and drain
  (``free`` changed, then ``evt_pipe_ready``), and deliver frames (``evt_pipe_recv``);
- the user: ``user_send`` does what ``Socket.send(block=False)`` does (the facade policy's
  ``outgoing``, the channel's ``put``, the policy's ``sent``); ``drain`` hands what was
  queued to the machine (``cmd_send``), as ``SocketCore._drain_outbox`` does; ``user_recv``
  does what ``Socket.recv(block=False)`` does (``recv_wait``, the channel's ``get``, the
  policy's ``incoming``, until something is handed over);
- the context: tests/protocols/fakes.py's ``RecordingContext`` (every call recorded), whose
  deliveries also go to a real ``Channel`` and whose send capacity goes through a real
  ``Context`` into that channel's credit: so "send blocks" is what a user would see;
- the loop: ``FakeLoop`` and its ``FakeClock``; a pipe the machine rejects is closed and
  removed only when the ``run_loop`` rule runs (the real context defers it with
  ``call_soon``), so frames may still arrive from it in between.

Each protocol's test module pairs a ``ProtocolHarness`` subclass (rules: what can happen)
with a ``Reference`` subclass (the model: what must be seen). After every step the harness
hands the model a ``Step`` (what the machine did: sends in order with their time, items
delivered, pipes rejected) and the model consumes it with ``expect_*``; anything left over
fails the step. Invariants then compare the send credit, the pending timers and the
machine's state (which must be one of its table's states in protocols.yaml).

The models are written from docs/WIRE.md and the tables' docs in protocols.yaml,
never from the protocol modules: nothing in a ``Reference`` imports ``scaproust.protocols``
(the wire words, the backtrace split and round-robin fairness are re-derived here).
"""

from __future__ import annotations

import functools
import os
import struct
from collections import deque
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from protocols.fakes import FakePipe, RecordingContext

from codegen.schema import load as load_spec
from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.context import Context
from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.errors import BadState, Timeout, WouldBlock

from . import conftest as _profiles  # noqa: F401  (registers the profiles, also outside pytest)

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------ settings

#: ``HYPOTHESIS_PROFILE=deep`` selects the deep profile; unset (or ``default``) the fast one
#: (both registered in tests/models/conftest.py).
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default") or "default"
MODEL_SETTINGS = settings.get_profile("models-default" if PROFILE == "default" else PROFILE)


def model_test(machine: type[RuleBasedStateMachine]):
    """The pytest class that runs ``machine`` under the selected profile."""
    case = machine.TestCase
    case.settings = MODEL_SETTINGS
    return case


# ------------------------------------------------------------------------------ the tables

_SPEC = load_spec(ROOT / "protocols.yaml", src_root=ROOT / "src")


def table_states(machine: str) -> frozenset[str]:
    """The states protocols.yaml gives ``machine`` (its own, or those of the one it extends)."""
    return frozenset(_SPEC.machines[machine].states)


# ------------------------------------------------------------------------------ wire facts
# Re-derived from WIRE.md ("Request / reply header", "PAIR v1"): not imported.

MSB = 0x80000000
BIG_WORD = struct.Struct(">I")


def word(value: int) -> bytes:
    """A 32-bit big-endian word."""
    return BIG_WORD.pack(value)


def hop(pipe_id: int) -> bytes:
    """The hop word of a pipe: its id, most significant bit clear."""
    return word(pipe_id & 0x7FFFFFFF)


def request_id(n: int) -> bytes:
    """The bottom-of-stack word: a request or survey id, most significant bit set."""
    return word(MSB | (n & 0x7FFFFFFF))


def split_reference(payload: bytes, ttl: int):
    """Classify a request/response payload the way WIRE.md says a REP reads one.

    Returns ``("ok", backtrace, body)`` (the words up to and including the first with the
    most significant bit, at most ``ttl`` of them), ``("ttl",)`` (dropped, the pipe
    stays: 8 pass, 9 are dropped) or ``("malformed",)`` (fewer than 4 bytes left before an
    id word: the pipe is closed). A REQ and a SURVEYOR read a reply or a response with
    255 for ``ttl``: as deep as any request or survey could go (WIRE.md R8)."""
    count, offset = 0, 0
    while True:
        count += 1
        if count > ttl:
            return ("ttl",)
        if len(payload) - offset < 4:
            return ("malformed",)
        (value,) = BIG_WORD.unpack_from(payload, offset)
        offset += 4
        if value & MSB:
            return ("ok", payload[:offset], payload[offset:])


def body_of(item) -> bytes:
    return item if type(item) is bytes else item.body


# ------------------------------------------------------------------------------ the world


class ModelPipe(FakePipe):
    """A ``FakePipe`` whose sends go to the harness's journal with the clock's time."""

    def __init__(self, *, journal: list, clock, **kw):
        super().__init__(**kw)
        self.initial_free = self.free  # what the model starts from (sends change ``free``)
        self._model_journal = journal
        self._clock = clock

    def cmd_send(self, body, header=b"") -> None:
        super().cmd_send(body, header)  # fails the test on a pipe with no free slot
        self._model_journal.append((self, bytes(body), bytes(header), self._clock()))


class ModelContext(RecordingContext):
    """``RecordingContext`` that also feeds a real channel: deliveries go to its inbox (the
    user's receive queue), send capacity becomes its credit through a real ``Context``.
    ``log`` lists deliveries ``("deliver", item, priority)`` (one per item) and rejections
    ``("reject", pipe)`` in order, for the steps."""

    def __init__(self, options: Options, on_reject) -> None:
        super().__init__()
        self.options = options
        self.channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
        self.real = Context(loop=self.loop, channel=self.channel, stats=self.stats,
                            pipes_of_socket=lambda: (), options=options)
        self.log: list[tuple] = []
        self._on_reject = on_reject

    def deliver(self, items, priority: int = 8) -> None:
        items = list(items)
        super().deliver(items, priority)
        self.log.extend(("deliver", item, priority) for item in items)
        self.channel.push_many(items, priority)

    def set_send_capacity(self, capacity: int, nbytes: int | None = None) -> None:
        super().set_send_capacity(capacity, nbytes)
        self.real.set_send_capacity(capacity, UNBOUNDED if nbytes is None else nbytes)

    def reject_pipe(self, pipe) -> None:
        super().reject_pipe(pipe)
        self.log.append(("reject", pipe))
        self._on_reject(pipe)


class Step:
    """What the machine did in one step; the model takes it apart with ``expect_*``."""

    def __init__(self, what: str, sends: list, log: list) -> None:
        self.what = what
        self.sends = sends
        self.delivered = [(entry[1], entry[2]) for entry in log if entry[0] == "deliver"]
        self.rejected = [entry[1] for entry in log if entry[0] == "reject"]

    def _where(self) -> str:
        return f"during {self.what}"

    def expect_send(self, allowed, body: bytes, header: bytes = b"", at: float | None = None):
        """The next send goes to one of ``allowed`` with exactly this body and header
        (and at time ``at``); returns the pipe."""
        assert self.sends, (f"expected {body!r} (header {header!r}) sent to one of "
                            f"{sorted_names(allowed)}, nothing (more) was, {self._where()}")
        pipe, got_body, got_header, when = self.sends.pop(0)
        assert pipe in allowed, (f"{got_body!r} went to {pipe.name}, expected one of "
                                 f"{sorted_names(allowed)} {self._where()}")
        assert (got_body, got_header) == (body, header), (
            f"{pipe.name} got {got_body!r} with header {got_header!r}, expected {body!r} "
            f"with header {header!r} {self._where()}")
        if at is not None:
            assert when == at, f"sent at t={when}, expected t={at} {self._where()}"
        return pipe

    def expect_broadcast(self, pipes, body: bytes, header: bytes = b"") -> None:
        """The next ``len(pipes)`` sends put the message on each of ``pipes`` once."""
        got = set()
        for _ in range(len(pipes)):
            pipe = self.expect_send(set(pipes) - got, body, header)
            got.add(pipe)

    def expect_deliver(self, item, priority: int) -> None:
        assert self.delivered, f"expected {item!r} delivered, nothing (more) was, {self._where()}"
        got = self.delivered.pop(0)
        assert got == (item, priority), (
            f"delivered {got[0]!r} at priority {got[1]}, expected {item!r} at priority "
            f"{priority} {self._where()}")

    def expect_reject(self, pipe) -> None:
        assert self.rejected, f"expected {pipe.name} closed, it was not {self._where()}"
        got = self.rejected.pop(0)
        assert got is pipe, f"closed {got.name}, expected {pipe.name} closed {self._where()}"

    def finish(self) -> None:
        assert not self.sends, (f"unexpected sends {self._where()}: "
                                f"{[(p.name, b, h) for p, b, h, _ in self.sends]}")
        assert not self.delivered, f"unexpected deliveries {self._where()}: {self.delivered}"
        assert not self.rejected, (f"unexpected pipes closed {self._where()}: "
                                   f"{[p.name for p in self.rejected]}")


def sorted_names(pipes) -> list[str]:
    return sorted(p.name for p in pipes)


# ------------------------------------------------------------------------------ reference pieces


class UserInbox:
    """The user's receive queue as WIRE.md and nanomsg's NN_RCVPRIO describe it: a message
    from a better (lower) recv priority first, arrival order within a priority."""

    def __init__(self) -> None:
        self.queues: dict[int, deque] = {}

    def push(self, item, priority: int) -> None:
        self.queues.setdefault(priority, deque()).append(item)

    def pop(self):
        for priority in sorted(self.queues):
            if self.queues[priority]:
                return self.queues[priority].popleft()
        return None

    def clear(self) -> None:
        self.queues.clear()

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())


class RoundRobin:
    """Round-robin fairness, stated without a cursor: a pipe is never chosen twice while
    another pipe, a candidate at every choice since (its first choice included), was
    never chosen. Candidates are the pipes of the best send priority that have room."""

    def __init__(self) -> None:
        self.owed: dict = {}  # pipe -> pipes that must be chosen before it is chosen again

    def chose(self, pipe, candidates) -> None:
        candidates = set(candidates)
        for owed in self.owed.values():
            owed &= candidates
        skipped = self.owed.get(pipe, set())
        assert not skipped, (f"round robin: {pipe.name} chosen again before "
                             f"{sorted_names(skipped)}, a candidate every time since")
        for owed in self.owed.values():
            owed.discard(pipe)
        self.owed[pipe] = candidates - {pipe}

    def forget(self, pipe) -> None:
        self.owed.pop(pipe, None)
        for owed in self.owed.values():
            owed.discard(pipe)


class Reference:
    """What every model tracks about pipes; a protocol's model overrides the hooks.

    ``order``: attached pipes in arrival order; ``free``: the model's count of each one's
    free slots; ``closing``: pipes the machine must have closed (still attached until the
    loop runs). ``bounded``: send() may block, with ``capacity()`` the number of messages the
    protocol can take now; otherwise send() never blocks.
    """

    bounded = False
    #: False for PULL and SUB: the facade refuses send() before the machine is involved
    #: (NotSupported), and the machine states no capacity.
    sends = True

    def __init__(self, harness: ProtocolHarness) -> None:
        self.h = harness
        self.options = harness.options  # read as the machine reads them: at each use
        self.order: list = []
        self.free: dict = {}
        self.closing: set = set()
        self.inbox = UserInbox()

    # ---------------------------------------------------------------- helpers

    @property
    def ttl(self) -> int:
        return self.options.ttl

    def usable(self) -> list:
        """Attached pipes that are not being closed."""
        return [p for p in self.order if p not in self.closing]

    def with_room(self) -> list:
        return [p for p in self.usable() if self.free[p] > 0]

    def best(self) -> set:
        """Pipes that may take the next message when one pipe gets it: those with room of
        the best (lowest) send priority."""
        room = self.with_room()
        if not room:
            return set()
        top = min(p.send_priority for p in room)
        return {p for p in room if p.send_priority == top}

    def send(self, step: Step, allowed, body: bytes, header: bytes = b"", at=None):
        pipe = step.expect_send(allowed, body, header, at)
        self.free[pipe] -= 1
        return pipe

    def broadcast(self, step: Step, body: bytes, header: bytes = b"") -> None:
        pipes = self.with_room()
        step.expect_broadcast(pipes, body, header)
        for pipe in pipes:
            self.free[pipe] -= 1

    def deliver(self, step: Step, item, pipe) -> None:
        step.expect_deliver(item, pipe.recv_priority)
        self.inbox.push(item, pipe.recv_priority)

    def reject(self, step: Step, pipe) -> None:
        step.expect_reject(pipe)
        self.closing.add(pipe)

    # ---------------------------------------------------------------- hooks

    def added(self, pipe, step: Step) -> None:
        self.order.append(pipe)
        self.free[pipe] = pipe.initial_free

    def removed(self, pipe, step: Step) -> None:
        self.order.remove(pipe)
        del self.free[pipe]
        self.closing.discard(pipe)

    def readied(self, pipe, step: Step) -> None:
        """``pipe``'s free slots changed (``self.free`` already says how many)."""

    def received(self, pipe, payloads: list[bytes], step: Step) -> None:
        raise NotImplementedError

    def drained(self, item, step: Step) -> None:
        raise NotImplementedError

    def advanced(self, until: float, step: Step) -> None:
        """The clock moved to ``until``; timers due by then must have fired."""

    def closed(self, step: Step) -> None:
        """cmd_close: nothing is sent, nothing delivered."""

    def refuses(self, data):
        """The exception class the user's send of ``data`` must raise whatever the credit
        (a cooked policy's ``BadState``), or None."""
        return None

    def accepted(self, item) -> None:
        """The socket took ``item`` (what the policy made of the user's data)."""

    def recv(self, got) -> None:
        """The user's non-blocking recv returned ``got``: ``("item", x)`` or
        ``("error", ExceptionClass)``; check it and update the model."""
        expected = self.inbox.pop()
        if expected is None:
            assert got == ("error", WouldBlock), f"recv got {got}, expected nothing (WouldBlock)"
        else:
            assert got == ("item", expected), f"recv got {got}, expected {expected!r}"

    def capacity(self) -> int:
        raise NotImplementedError

    def timers(self) -> list[float]:
        """When the pending timers are due (sorted)."""
        return []

    def check(self) -> None:
        """Extra invariants of the model, after every step."""


class BacktraceReference(Reference):
    """REP and RESPONDENT, raw and cooked (WIRE.md, "Request / reply header", "REP",
    "RESPONDENT": RESPONDENT is REP echoing the survey's stack).

    - A request is split at its first word with the most significant bit: at most ``ttl``
      words pass (8 pass, 9 are dropped, the pipe stays); a payload with fewer than 4 bytes
      left before such a word is malformed and closes its pipe, and nothing more from that
      pipe counts. What passes is handed over as ``Message(body, hop(pipe) + backtrace)``
      (the raw socket's pipe id word on top), fair-queued by recv priority.
    - A reply's first header word names the pipe; the rest of the header goes back on that
      pipe, byte-identical, with the body. A pipe that is gone, closing or full, or a header
      that names no pipe: the reply is dropped and send still succeeds. Never blocks,
      never sends anything else.
    - Cooked (the facade policy): the user sees bodies; a reply answers the request last
      received, exactly once (a second send, or a send before any recv, is ``BadState``);
      a new recv abandons an unanswered request, even if it gets nothing.
    """

    def __init__(self, harness, cooked: bool) -> None:
        super().__init__(harness)
        self.cooked = cooked
        self.pending: bytes | None = None  # cooked: the header of the request to answer
        self.headers: list[bytes] = []  # every header the user received (raw replies)

    def received(self, pipe, payloads, step) -> None:
        if pipe in self.closing:
            return  # closed for a malformed request: nothing more from it counts
        for payload in payloads:
            verdict = split_reference(payload, self.ttl)
            if verdict[0] == "malformed":
                self.reject(step, pipe)
                return
            if verdict[0] == "ok":
                self.deliver(step, Message(verdict[2], hop(pipe.id) + verdict[1]), pipe)

    def route(self, header: bytes):
        """The pipe a reply with ``header`` goes back on, or None (dropped)."""
        if len(header) < 4:
            return None
        (first,) = BIG_WORD.unpack_from(header)
        if first & MSB:
            return None
        for pipe in self.usable():
            if pipe.id == first and self.free[pipe] > 0:
                return pipe
        return None

    def drained(self, item, step) -> None:
        header = b"" if type(item) is bytes else item.header
        pipe = self.route(header)
        if pipe is not None:
            self.send(step, {pipe}, body_of(item), header[4:])

    def refuses(self, data):
        if self.cooked and self.pending is None:
            return BadState
        return None

    def accepted(self, item) -> None:
        if self.cooked:
            assert item.header == self.pending, (
                f"the reply carries {item.header!r}, not the request's backtrace {self.pending!r}")
            self.pending = None

    def recv(self, got) -> None:
        if self.cooked:
            self.pending = None  # a new recv abandons the request not answered
        super().recv(got)
        if got[0] == "item":
            self.headers.append(got[1].header)
            if self.cooked:
                self.pending = got[1].header


# ------------------------------------------------------------------------------ the harness

pipes = Bundle("pipes")
PRIORITIES = st.sampled_from([8, 8, 1, 16])


def live(rule_function):
    """The rule does nothing once the socket is closed. (Not a precondition: with most
    rules disabled, Hypothesis retries its rule draws and gives up on many runs.)"""

    @functools.wraps(rule_function)
    def run_while_open(self, *args, **kwargs):
        if not self.is_closed:
            rule_function(self, *args, **kwargs)

    return run_while_open


#: The socket may close only in the last third of a run: closing is the end of the story,
#: and a run that closed at its third step would have tested little.
CLOSE_AFTER = MODEL_SETTINGS.stateful_step_count * 2 // 3


class ProtocolHarness(RuleBasedStateMachine):
    """Drives one protocol machine; subclasses set the class attributes and add the rules
    that depend on the protocol (frames to deliver, what the user sends)."""

    #: protocols.yaml machine name, Options protocol name, the machine and policy classes.
    TABLE: str
    PROTOCOL: str
    MACHINE: type
    POLICY: type | None = None
    MODEL: type[Reference]
    OPTIONS: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.journal: list = []
        self.options = Options(self.PROTOCOL, **self.OPTIONS)
        self.ctx = ModelContext(self.options, self._rejected_by_machine)
        self.loop = self.ctx.loop
        self.clock = self.loop.clock
        self.channel = self.ctx.channel
        self.policy = None
        if self.POLICY is not None:
            self.policy = self.POLICY(self.channel, self.options)
            self.policy.clock = self.clock  # SurveyorPolicy's clock: the fake one
        self.attached: list = []  # pipes the machine was told about and not yet removed
        self.to_close: list = []  # pipes it rejected, closed when the loop runs
        self.is_closed = False
        self.steps = 0
        self.serial = 0
        self.proto = self.MACHINE(self.ctx)
        self.model = self.MODEL(self)
        self.finish_step("creation", lambda step: None)

    # ---------------------------------------------------------------- stepping

    def _rejected_by_machine(self, pipe) -> None:
        if pipe not in self.to_close:
            self.to_close.append(pipe)

    def fire(self, what: str, event, *args) -> Step:
        """Run one input through the machine; return what it did."""
        event(*args)
        return self.collect(what)

    def collect(self, what: str) -> Step:
        step = Step(what, self.journal[:], self.ctx.log[:])
        self.journal.clear()
        self.ctx.log.clear()
        return step

    def finish_step(self, what: str, model_hook, *args) -> None:
        step = self.collect(what)
        model_hook(*args, step) if args else model_hook(step)
        step.finish()

    def body(self, prefix: bytes = b"m") -> bytes:
        """A body never used before in this run: every message can be told apart."""
        self.serial += 1
        return b"%s%d" % (prefix, self.serial)

    # ---------------------------------------------------------------- the user's side

    def user_send(self, data, drain: bool = True) -> None:
        """``Socket.send(data, block=False)``, then (by default) the I/O thread drains."""
        model = self.model
        expected = model.refuses(data)
        if expected is None and model.bounded and model.capacity() <= len(self.channel.outbox):
            expected = WouldBlock
        outcome = item = None
        try:
            item = self.policy.outgoing(data) if self.policy is not None else data
            self.channel.put(item, 0)
        except (BadState, WouldBlock) as err:
            outcome = type(err)
        if self.to_close and model.bounded and {outcome, expected} == {None, WouldBlock}:
            expected = outcome  # credit is not exact until the loop closes them (check_credit)
        assert outcome == expected, (
            f"send({data!r}) raised {outcome and outcome.__name__}, the model expected "
            f"{expected and expected.__name__}")
        if outcome is None:
            if self.policy is not None:
                self.policy.sent(item)
            model.accepted(item)
        if drain:
            self.drain()

    def drain(self, batched: bool = False) -> None:
        """``SocketCore._drain_outbox``: what the user queued goes to the machine; with
        ``batched``, as the I/O thread hands a batch to a machine that takes one
        (``cmd_send_many``): one step, in which the model sees each message drained in
        turn."""
        batch = self.channel.take_outbox()
        real = self.ctx.real
        if batched and "cmd_send_many" in self.proto.EVENTS and len(batch) > 1:
            items = list(batch)
            real.outstanding -= len(items)
            real.outstanding_bytes -= sum(map(len, items))
            self.proto.cmd_send_many(items)
            # One event per pipe may put the sends of different pipes in another order than
            # message by message (PUB: all of one pipe's, then the next pipe's). No peer can
            # see that order (each pipe is its own connection): the model reads the sends
            # in message order, each pipe's own order kept (a stable sort).
            turn = {bytes(item.body if isinstance(item, Message) else item): n
                    for n, item in enumerate(items)}
            for pipe in {sent[0] for sent in self.journal}:
                order = [turn.get(sent[1], -1) for sent in self.journal if sent[0] is pipe]
                assert order == sorted(order), f"{pipe.name} got a batch out of order"
            self.journal.sort(key=lambda sent: turn.get(sent[1], -1))
            self.finish_step(f"cmd_send_many({items!r})", self._drained_all, items)
            real.refill()
            return
        for item in batch:
            real.outstanding -= 1
            real.outstanding_bytes -= len(item)
            self.proto.cmd_send(item)
            self.finish_step(f"cmd_send({item!r})", self.model.drained, item)
        real.refill()

    def _drained_all(self, items, step) -> None:
        for item in items:
            self.model.drained(item, step)

    def user_recv(self) -> None:
        """``Socket.recv_msg(block=False)``: the policy may refuse, or drop what it gets."""
        policy = self.policy
        try:
            while True:
                if policy is not None:
                    policy.recv_wait(None)
                item = self.channel.get(0)
                if policy is not None:
                    item = policy.incoming(item)
                    if item is None:
                        continue
                got = ("item", item)
                break
        except (BadState, WouldBlock, Timeout) as err:
            got = ("error", type(err))
        self.model.recv(got)

    # ---------------------------------------------------------------- rules: pipes and time

    @rule(target=pipes, free=st.integers(0, 3), send_priority=PRIORITIES,
          recv_priority=PRIORITIES)
    def add_pipe(self, free, send_priority, recv_priority):
        if self.is_closed:
            return multiple()
        pipe = ModelPipe(journal=self.journal, clock=self.clock, free=free,
                         send_priority=send_priority, recv_priority=recv_priority)
        self.attached.append(pipe)
        self.proto.evt_pipe_added(pipe)
        self.finish_step(f"evt_pipe_added({pipe.name})", self.model.added, pipe)
        return pipe

    @rule(pipe=consumes(pipes))
    @live
    def remove_pipe(self, pipe):
        self._remove(pipe)

    def _remove(self, pipe) -> None:
        if pipe not in self.attached:
            return  # already closed by the machine and removed by the loop
        self.attached.remove(pipe)
        if pipe in self.to_close:
            self.to_close.remove(pipe)
        self.proto.evt_pipe_removed(pipe)
        self.finish_step(f"evt_pipe_removed({pipe.name})", self.model.removed, pipe)

    @rule(pipe=pipes, slots=st.integers(1, 3))
    @live
    def make_ready(self, pipe, slots):
        """The pipe flushed some output: it has more room. (Also a pipe the machine
        rejected: its flush may come in the same loop pass, before its close.)"""
        if pipe in self.attached:
            pipe.free += slots
            self.model.free[pipe] += slots
            self.proto.evt_pipe_ready(pipe)
            self.finish_step(f"evt_pipe_ready({pipe.name})", self.model.readied, pipe)

    @rule(pipe=pipes)
    @live
    def make_busy(self, pipe):
        """The pipe's queue is full."""
        if pipe in self.attached:
            pipe.free = 0
            self.model.free[pipe] = 0
            self.proto.evt_pipe_ready(pipe)
            self.finish_step(f"evt_pipe_ready({pipe.name})", self.model.readied, pipe)

    @rule()
    @precondition(lambda self: self.to_close)
    def run_loop(self):
        """The loop runs what the context deferred: pipes the machine rejected close and
        are removed."""
        for pipe in list(self.to_close):
            pipe.cmd_close()
            self._remove(pipe)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5]))
    def advance(self, seconds):
        until = self.clock() + seconds
        self.loop.advance(seconds)
        self.finish_step(f"advance({seconds}) to t={until}", self.model.advanced, until)

    @rule(batched=st.booleans())
    @live
    def drain_queued(self, batched=False):
        self.drain(batched)

    @rule()
    @precondition(lambda self: not self.is_closed and self.steps > CLOSE_AFTER)
    def close(self):
        """The socket closes (only in the last third of a run): its pipes go first, then
        the machine is closed (twice is harmless)."""
        for pipe in list(self.attached):
            self._remove(pipe)
        self.drain()
        self.proto.cmd_close()
        self.proto.cmd_close()
        self.is_closed = True
        self.finish_step("cmd_close", self.model.closed)

    # ---------------------------------------------------------------- invariants
    # One @invariant, so that a printed failing run shows one line per step for it.

    @invariant()
    def model_agrees(self):
        self.steps += 1
        self.check_state()
        self.check_credit()
        self.check_timers()
        self.model.check()

    def check_state(self) -> None:
        """The machine is in one of its table's states; closed exactly once closed."""
        states = table_states(self.TABLE)
        assert self.proto.state in states, f"state {self.proto.state!r} not in {sorted(states)}"
        assert (self.proto.state == "closed") == self.is_closed

    def check_credit(self) -> None:
        """What the user may send without blocking is what the protocol can take.

        Not checked while a pipe the machine rejected waits for the loop to close it: the
        machine restates its capacity when the pipe is removed, in the same loop pass, so
        that window is never seen by a user's send (it is queued behind the close)."""
        if self.is_closed or not self.model.sends or self.to_close:
            return
        credit, queued = self.channel.credit, len(self.channel.outbox)
        if self.model.bounded:
            expected = max(0, self.model.capacity() - queued)
            assert credit == expected, (
                f"send credit {credit}, expected {expected} (the protocol can take "
                f"{self.model.capacity()} now, {queued} queued)")
        else:
            assert self.ctx.capacities and min(self.ctx.capacities) >= UNBOUNDED, (
                f"a protocol that never blocks stated capacities {self.ctx.capacities}")
            assert credit > 0

    def check_timers(self) -> None:
        pending = self.deadlines()
        assert pending == self.model.timers(), (
            f"pending timers at {pending}, expected {self.model.timers()}")

    def deadlines(self) -> list[float]:
        """When the machine's timed actions are due (sorted): its pending loop timers,
        unless it keeps a deadline of its own (the REQ's resend, protocols/_resend.py)."""
        return sorted(t.when for t in self.loop.pending_timers())


class TtlOption(RuleBasedStateMachine):
    """Mixin: the ``ttl`` option (1..255, 8 by default) is drawn once, first."""

    @initialize(ttl=st.sampled_from([8, 8, 1, 2, 255]))
    def set_ttl(self, ttl):
        self.options.set("ttl", ttl)


# ------------------------------------------------------------------------------ REP and RESPONDENT

BODIES = st.binary(max_size=3)
#: Backtraced payloads (requests, surveys, replies): well-formed with 0..9 hops, or any bytes at all.
BACKTRACED = st.one_of(
    st.builds(lambda hops, n, body: b"".join(hop(h) for h in range(1, hops + 1))
              + request_id(n) + body, st.integers(0, 9), st.integers(0, 3), BODIES),
    st.binary(max_size=10),
)


class CookedBacktrace(BacktraceReference):
    def __init__(self, harness) -> None:
        super().__init__(harness, cooked=True)


class RawBacktrace(BacktraceReference):
    def __init__(self, harness) -> None:
        super().__init__(harness, cooked=False)


class AnsweringMachine(TtlOption, ProtocolHarness):
    """Rules shared by REP and RESPONDENT, raw and cooked."""

    @rule(pipe=pipes, payloads=st.lists(BACKTRACED, min_size=1, max_size=3))
    @live
    def deliver(self, pipe, payloads):
        """Requests arrive: 0 to 9 hops, or any bytes (deep, malformed, partial words)."""
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)

    @rule()
    @live
    def recv(self):
        self.user_recv()


class CookedAnswering(AnsweringMachine):
    @rule(queued=st.booleans())
    @live
    def reply(self, queued):
        """The user answers (BadState with no request to answer)."""
        self.user_send(self.body(b"a"), drain=not queued)


class RawAnswering(AnsweringMachine):
    @rule(pick=st.integers(0, 7), queued=st.booleans())
    @live
    def reply(self, pick, queued):
        """The user answers one of the requests received (any, in any order, twice)."""
        headers = self.model.headers
        header = headers[pick % len(headers)] if headers else hop(1) + request_id(1)
        self.user_send(Message(self.body(b"a"), header), drain=not queued)

    @rule(header=st.sampled_from([b"", b"\x00\x01", request_id(4), hop(0x7FFF0000) + request_id(4)]))
    @live
    def reply_nowhere(self, header):
        """A reply whose header names no pipe: dropped, send succeeds."""
        self.user_send(Message(self.body(b"a"), header))


