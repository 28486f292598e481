"""Contexts against independent models, several at once (protocols.yaml: ``req_ctx``,
``rep_ctx``, ``respondent_ctx``).

REQ contexts (``ReqContextModel``): the cooked ``Req`` machine with contexts opened and
closed at random, pipes that come, go and get room, a peer that answers any request it got
(old ones, twice, in any order), and a fake clock for the resend timers. The model is
written from the issue and the tables' docs, not from protocols/req.py:
- every request on the wire carries the id word of the current request of an open context,
  with that request's body (a replaced, answered or closed request never goes out again);
- a reply is delivered once, to the context whose current request it answers, with the
  peer's body; any other reply (to a replaced, answered or closed request) is dropped and
  counted as ``dropped_stale``; nothing is delivered to a closed context;
- an open context with a request outstanding is either waiting in the socket's queue or
  has it on a pipe that is still there, with a resend deadline at most ``resend_interval``
  ahead and one loop timer armed at or before it (the deadline is kept lazily:
  protocols/_resend.py); a context with no request has no deadline (a timer armed for an
  earlier one may still lapse), a closed one no timer either;
- after a pipe comes or gets room, no request waits while a pipe has room (the queue is
  served at once).

SURVEYOR contexts (``SurveyorContextModel``): the cooked ``Surveyor`` with contexts
opened, surveying and closed at random, respondents answering any survey they got, and a
fake clock. The model: each survey goes once to every pipe with room; a response reaches
the context whose current survey it answers while its deadline (sent at + its
``survey_deadline``) is ahead, once per response, and nothing else reaches a context;
every other response is dropped and counted by the socket (late or stale).

SUB contexts (``SubContextModel``): the cooked ``Sub`` with contexts opened, subscribing,
unsubscribing, reading and closed at random, each with a small queue of its own. The
model: a message goes to every open context with a topic it starts with, and to the
socket if one of the socket's topics matches; a full context queue loses its oldest
(``prefer_new``) or the new message, for that context only; a message nobody takes counts
once as unmatched; a closed context gets nothing.

REP and RESPONDENT contexts (``RepContextModel``): the contexts' policies over a real
channel (the socket's receive queue, filled as the machine would), each context receiving
(non-blocking), answering and closing at random, the socket's own policy too. The model: a
FIFO of requests; whoever receives takes the head; a context answers only the request it
holds (else ``BadState``), once, with that request's header; a receive abandons an
unanswered request; a closed context refuses everything with ``Closed`` and takes nothing.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from protocols.fakes import FakeLoop, FakePipe, QueueingContext, RecordingContext

from scaproust.core.channel import Channel
from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.errors import BadState, Closed, WouldBlock
from scaproust.protocols.rep import RepContextPolicy, RepPolicy
from scaproust.protocols.req import Req
from scaproust.protocols.respondent import RespondentContextPolicy
from scaproust.protocols.sub import Sub
from scaproust.protocols.surveyor import Surveyor

from ._harness import model_test, request_id, table_states, word

RESEND = 1.0


def seam(loop: FakeLoop) -> RecordingContext:
    ctx = RecordingContext(loop)
    ctx.options = Options("req", resend_interval=RESEND)
    return ctx


class ReqContextModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = FakeLoop()
        self.sock_seam = seam(self.loop)
        self.req = Req(self.sock_seam)
        self.pipes: list[FakePipe] = []
        self.contexts: list = []  # (machine, seam), in opening order
        self.closed: set[int] = set()  # indexes of closed contexts
        # The model: each context's current request (id word, body) or None.
        self.current: dict[int, tuple[bytes, bytes] | None] = {}
        self.next_id = 1
        self.got: dict[FakePipe, list[tuple[bytes, bytes]]] = {}  # what each peer received
        self.checked: dict[FakePipe, int] = {}  # sends already checked, per pipe
        self.expected_stale = 0
        self.delivered: dict[int, int] = {}  # deliveries each context had when it closed

    # ------------------------------------------------------------------ the world

    @rule(free=st.integers(0, 3))
    def add_pipe(self, free: int) -> None:
        pipe = FakePipe(free=free)
        self.pipes.append(pipe)
        self.got[pipe] = []
        self.checked[pipe] = 0
        self.req.evt_pipe_added(pipe)
        self._after_room()

    @precondition(lambda self: self.pipes)
    @rule(data=st.data())
    def remove_pipe(self, data: st.DataObject) -> None:
        pipe = data.draw(st.sampled_from(self.pipes))
        self._check_sends()
        self.pipes.remove(pipe)
        self.req.evt_pipe_removed(pipe)

    @precondition(lambda self: self.pipes)
    @rule(data=st.data(), more=st.integers(1, 3))
    def pipe_gets_room(self, data: st.DataObject, more: int) -> None:
        pipe = data.draw(st.sampled_from(self.pipes))
        pipe.free += more
        self.req.evt_pipe_ready(pipe)
        self._after_room()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        self.loop.advance(seconds)

    @precondition(lambda self: any(self.got[p] for p in self.pipes))
    @rule(data=st.data())
    def peer_replies(self, data: st.DataObject) -> None:
        self._check_sends()
        pipe = data.draw(st.sampled_from([p for p in self.pipes if self.got[p]]))
        word_, body = data.draw(st.sampled_from(self.got[pipe]))
        owner = next((i for i, cur in self.current.items()
                      if cur is not None and cur[0] == word_ and i not in self.closed), None)
        before = [len(s.delivered) for _, s in self.contexts]
        self.req.evt_pipe_recv(pipe, [word_ + b"re:" + body])
        after = [len(s.delivered) for _, s in self.contexts]
        changed = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a != b]
        if owner is None:
            assert changed == [], f"a reply to {word_!r} (no current request) was delivered"
            self.expected_stale += 1
        else:
            assert changed == [owner], f"the reply to {word_!r} went to {changed}, not {owner}"
            _, owner_seam = self.contexts[owner]
            assert owner_seam.delivered[-1] == Message(b"re:" + body, word_)
            self.current[owner] = None

    # ------------------------------------------------------------------ the users

    @precondition(lambda self: len(self.contexts) < 5)
    @rule()
    def open_context(self) -> None:
        machine_seam = seam(self.loop)
        machine = self.req.open_context(machine_seam)
        self.current[len(self.contexts)] = None
        self.contexts.append((machine, machine_seam))

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data(), body=st.binary(max_size=3))
    def context_sends(self, data: st.DataObject, body: bytes) -> None:
        index = data.draw(st.sampled_from(self._open()))
        word_ = request_id(self.next_id)  # one pool for every context
        self.next_id += 1
        self.contexts[index][0].cmd_send(Message(body, word_))
        self.current[index] = (word_, body)
        self._after_room()

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data())
    def close_context(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(self._open()))
        self._check_sends()
        self.contexts[index][0].cmd_close()
        self.closed.add(index)
        self.current[index] = None
        self.delivered[index] = len(self.contexts[index][1].delivered)

    # ------------------------------------------------------------------ checks

    def _open(self) -> list[int]:
        return [i for i in range(len(self.contexts)) if i not in self.closed]

    def _check_sends(self) -> None:
        """Every request that went out since the last check was the current request of an
        open context (checked before anything can change what is current)."""
        for pipe in list(self.got):
            for body, header in pipe.sent[self.checked[pipe]:]:
                owners = [i for i, cur in self.current.items()
                          if cur == (header, body) and i not in self.closed]
                assert owners, f"{pipe.name} got {header!r} {body!r}: no open context's request"
                self.got[pipe].append((header, body))
            self.checked[pipe] = len(pipe.sent)

    def _after_room(self) -> None:
        self._check_sends()
        if self.req.queue:
            assert not any(p.free for p in self.pipes), "a request waits while a pipe has room"

    @invariant()
    def sends_are_current(self) -> None:
        self._check_sends()

    @invariant()
    def outstanding_requests_are_queued_or_on_a_live_pipe(self) -> None:
        pending = self.loop.pending_timers()
        # Each context's resend deadline arms loop timers through its ResendTimer.
        timers = {id(t.fn.__self__): t for t in pending}
        assert len(pending) == len(timers), "two timers for one deadline"
        now = self.loop.time()
        for index, (machine, _) in enumerate(self.contexts):
            assert machine.state in table_states("req_ctx")
            cur = self.current[index]
            resend = machine.resend
            if index in self.closed:
                assert machine.state == "closed"
                assert id(resend) not in timers, "a closed context has a timer"
                continue
            if cur is None:
                assert machine.state == "idle", f"context {index} is {machine.state}"
                assert resend.due is None, "an answered request still has a deadline"
            elif machine.state == "queued":
                assert machine in self.req.queue
                assert resend.due is None, "a queued request has a deadline"
            else:
                assert machine.state == "sent", f"context {index} is {machine.state}"
                assert machine.carrier in self.pipes, "its request is on a pipe that went"
                assert resend.due is not None and now < resend.due <= now + RESEND
                timer = timers.get(id(resend))
                assert timer is not None, "a sent request without its resend timer"
                assert timer.when <= resend.due, "its timer fires after the deadline"

    @invariant()
    def nothing_reaches_a_closed_context_and_stale_replies_are_counted(self) -> None:
        stale = self.sock_seam.calls.count(("stats.count", "dropped_stale", 1))
        assert stale == self.expected_stale
        for index in self.closed:
            _, closed_seam = self.contexts[index]
            assert len(closed_seam.delivered) == self.delivered[index], \
                "delivered to a closed context"


TestReqContexts = model_test(ReqContextModel)


# ====================================================================== SURVEYOR


class SurveyorContextModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = FakeLoop()
        self.sock_seam = RecordingContext(self.loop)
        self.sock_seam.options = Options("surveyor")
        self.surveyor = Surveyor(self.sock_seam)
        self.pipes = [FakePipe(free=3) for _ in range(2)]
        for pipe in self.pipes:
            self.surveyor.evt_pipe_added(pipe)
        self.contexts: list = []
        self.closed: set[int] = set()
        self.current: dict[int, tuple[bytes, float] | None] = {}  # id word, deadline
        self.expected: dict[int, list[Message]] = {}
        self.heard: list[tuple[FakePipe, bytes, bytes]] = []  # what respondents got
        self.next_id = 1
        self.dropped = 0

    @precondition(lambda self: len(self.contexts) < 4)
    @rule(deadline=st.sampled_from([0.5, 1.0, 2.0]))
    def open_context(self, deadline: float) -> None:
        seam_ = RecordingContext(self.loop)
        seam_.options = Options("surveyor", survey_deadline=deadline)
        self.current[len(self.contexts)] = None
        self.expected[len(self.contexts)] = []
        self.contexts.append((self.surveyor.open_context(seam_), seam_))

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data(), body=st.binary(max_size=2))
    def context_surveys(self, data: st.DataObject, body: bytes) -> None:
        index = data.draw(st.sampled_from(
            [i for i in range(len(self.contexts)) if i not in self.closed]))
        machine, seam_ = self.contexts[index]
        word_ = request_id(self.next_id)
        self.next_id += 1
        before = [len(p.sent) for p in self.pipes]
        room = [bool(p.free) for p in self.pipes]
        calls = len(seam_.calls)
        machine.cmd_send(Message(body, word_))
        for pipe, count, had_room in zip(self.pipes, before, room, strict=True):
            if had_room:
                assert pipe.sent[count:] == [(body, word_)], "a survey not sent to a pipe"
                self.heard.append((pipe, word_, body))
            else:
                assert pipe.sent[count:] == [], "a survey sent to a full pipe"
        counted = [c for c in seam_.calls[calls:] if c[:2] == ("stats.count", "dropped_pipe_full")]
        missed = room.count(False)
        assert counted == ([("stats.count", "dropped_pipe_full", missed)] if missed else [])
        self.current[index] = (word_, self.loop.time() + seam_.options.survey_deadline)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0]))
    def advance(self, seconds: float) -> None:
        self.loop.advance(seconds)

    @rule(index=st.integers(0, 1), free=st.integers(1, 3))
    def pipe_drains(self, index: int, free: int) -> None:
        pipe = self.pipes[index]
        pipe.free = free
        self.surveyor.evt_pipe_ready(pipe)

    @precondition(lambda self: self.heard)
    @rule(data=st.data())
    def respondent_answers(self, data: st.DataObject) -> None:
        pipe, word_, body = data.draw(st.sampled_from(self.heard))
        now = self.loop.time()
        owner = next((i for i, cur in self.current.items() if i not in self.closed
                      and cur is not None and cur[0] == word_ and now < cur[1]), None)
        self.surveyor.evt_pipe_recv(pipe, [word_ + b"re:" + body])
        if owner is None:
            self.dropped += 1
        else:
            self.expected[owner].append(Message(b"re:" + body, word_))

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data())
    def close_context(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(
            [i for i in range(len(self.contexts)) if i not in self.closed]))
        self.contexts[index][0].cmd_close()
        self.closed.add(index)

    @invariant()
    def responses_reach_their_context_only(self) -> None:
        for index, (machine, seam_) in enumerate(self.contexts):
            assert machine.state in table_states("surveyor_ctx")
            assert seam_.delivered == self.expected[index]
            cur = self.current[index]
            surveying = (index not in self.closed and cur is not None
                         and self.loop.time() < cur[1])
            assert machine.state == ("closed" if index in self.closed
                                     else "surveying" if surveying else "idle")
        counted = sum(n for name, key, n in (c for c in self.sock_seam.calls
                                             if c[0] == "stats.count")
                      if key in ("dropped_late", "dropped_stale"))
        assert counted == self.dropped
        assert self.sock_seam.delivered == []


TestSurveyorContexts = model_test(SurveyorContextModel)


# ====================================================================== SUB

TOPICS = st.sampled_from([b"", b"a", b"ab", b"b"])


class SubContextModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = FakeLoop()
        self.sock_seam = QueueingContext(self.loop, 1 << 20)
        self.sub = Sub(self.sock_seam)
        self.pipe = FakePipe()
        self.sub.evt_pipe_added(self.pipe)
        self.contexts: list = []
        self.closed: set[int] = set()
        self.topics: dict[int, set[bytes]] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.limits: dict[int, tuple[int, bool]] = {}
        self.sock_topics: set[bytes] = set()
        self.sock_queue: list[bytes] = []
        self.unmatched = 0
        self.full = 0

    def _open(self) -> list[int]:
        return [i for i in range(len(self.contexts)) if i not in self.closed]

    @precondition(lambda self: len(self.contexts) < 4)
    @rule(limit=st.integers(1, 3), prefer_new=st.booleans())
    def open_context(self, limit: int, prefer_new: bool) -> None:
        seam_ = QueueingContext(self.loop, limit)
        machine = self.sub.open_context(seam_)
        machine.prefer_new = prefer_new
        index = len(self.contexts)
        self.contexts.append((machine, seam_))
        self.topics[index], self.queues[index] = set(), []
        self.limits[index] = (limit, prefer_new)

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data(), topic=TOPICS)
    def context_subscribes(self, data: st.DataObject, topic: bytes) -> None:
        index = data.draw(st.sampled_from(self._open()))
        self.contexts[index][0].cmd_subscribe(topic)
        self.topics[index].add(topic)

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data(), topic=TOPICS)
    def context_unsubscribes(self, data: st.DataObject, topic: bytes) -> None:
        index = data.draw(st.sampled_from(self._open()))
        machine = self.contexts[index][0]
        if topic in self.topics[index]:
            machine.cmd_unsubscribe(topic)
            self.topics[index].discard(topic)
        else:
            try:
                machine.cmd_unsubscribe(topic)
            except ValueError:
                return
            raise AssertionError("unsubscribing an unknown topic was accepted")

    @rule(topic=TOPICS)
    def socket_subscribes(self, topic: bytes) -> None:
        self.sub.cmd_subscribe(topic)
        self.sock_topics.add(topic)

    @rule(body=st.sampled_from([b"", b"a", b"ab", b"abc", b"b", b"c"]))
    def message_arrives(self, body: bytes) -> None:
        taken = False
        for index in self._open():
            if any(body.startswith(t) for t in self.topics[index]):
                taken = True
                queue, (limit, prefer_new) = self.queues[index], self.limits[index]
                if len(queue) >= limit:
                    self.full += 1
                    if not prefer_new:
                        continue
                    queue.pop(0)
                queue.append(body)
        if any(body.startswith(t) for t in self.sock_topics):
            self.sock_queue.append(body)
        elif not taken:
            self.unmatched += 1
        self.sub.evt_pipe_recv(self.pipe, [body])

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data())
    def context_reads(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(self._open()))
        queue = self.contexts[index][1].queue
        if queue:
            assert queue.pop(0) == self.queues[index].pop(0)

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data())
    def close_context(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(self._open()))
        self.contexts[index][0].cmd_close()
        self.closed.add(index)

    @invariant()
    def every_queue_is_what_the_model_says(self) -> None:
        for index, (machine, seam_) in enumerate(self.contexts):
            assert machine.state in table_states("sub_ctx")
            assert seam_.queue == self.queues[index], f"context {index}"
            if index in self.closed:
                assert machine.state == "closed"
            else:
                assert machine.state == ("subscribed" if self.topics[index] else "unsubscribed")
        assert self.sock_seam.queue == self.sock_queue
        counts = [c for c in self.sock_seam.calls if c[0] == "stats.count"]
        assert sum(c[2] for c in counts if c[1] == "dropped_unmatched") == self.unmatched
        full = sum(c[2] for _, seam_ in self.contexts for c in seam_.calls
                   if c[:2] == ("stats.count", "dropped_context_full"))
        assert full == self.full


TestSubContexts = model_test(SubContextModel)


# ====================================================================== REP, RESPONDENT


def rep_header(pipe: int, n: int) -> bytes:
    return word(pipe) + request_id(n)


class RepContextModel(RuleBasedStateMachine):
    context_policy: type[RepContextPolicy] = RepContextPolicy

    def __init__(self) -> None:
        super().__init__()
        self.options = Options()
        self.channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
        self.socket_policy = RepPolicy(self.channel, self.options)
        self.contexts: list[RepContextPolicy] = []
        # The model: requests waiting (FIFO), what each receiver holds, what was answered.
        self.waiting: list[Message] = []
        self.holds: dict[int, Message | None] = {}
        self.closed: set[int] = set()
        self.answered: set[bytes] = set()
        self.n = 0

    @rule(pipe=st.integers(1, 3), body=st.binary(max_size=2))
    def request_arrives(self, pipe: int, body: bytes) -> None:
        self.n += 1
        msg = Message(body, rep_header(pipe, self.n))
        self.channel.push_many([msg])
        self.waiting.append(msg)

    @precondition(lambda self: len(self.contexts) < 4)
    @rule()
    def open_context(self) -> None:
        self.holds[len(self.contexts)] = None
        self.contexts.append(self.context_policy(self.channel, self.options, None,
                                                 self.socket_policy))

    @precondition(lambda self: self.contexts)
    @rule(data=st.data())
    def context_receives(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.contexts) - 1))
        policy = self.contexts[index]
        try:
            policy.begin_recv()
            try:
                got = policy.incoming_for(policy.take(0), None)
            finally:
                policy.end_recv()
        except Closed:
            assert index in self.closed, "an open context refused to receive"
            return
        except WouldBlock:
            assert index not in self.closed and not self.waiting
            self.holds[index] = None  # the receive abandoned what it held
            return
        assert index not in self.closed, "a closed context received"
        expected = self.waiting.pop(0)
        assert got == expected, f"context {index} got {got!r}, expected {expected!r}"
        self.holds[index] = expected

    @precondition(lambda self: self.contexts)
    @rule(data=st.data(), body=st.binary(max_size=2))
    def context_answers(self, data: st.DataObject, body: bytes) -> None:
        index = data.draw(st.integers(0, len(self.contexts) - 1))
        policy = self.contexts[index]
        held = self.holds[index]
        try:
            item = policy.outgoing(body)
        except Closed:
            assert index in self.closed
            return
        except BadState:
            assert index not in self.closed and held is None
            return
        assert index not in self.closed and held is not None
        assert item == Message(body, held.header), "the reply does not go where it must"
        assert held.header not in self.answered, "a request answered twice"
        policy.sent(item)
        self.answered.add(held.header)
        self.holds[index] = None

    @rule()
    def socket_receives(self) -> None:
        try:
            got = self.socket_policy.incoming(self.channel.get(0))
        except WouldBlock:
            assert not self.waiting
            return
        assert got == self.waiting.pop(0)

    @precondition(lambda self: len(self.contexts) > len(self.closed))
    @rule(data=st.data())
    def close_context(self, data: st.DataObject) -> None:
        index = data.draw(st.sampled_from(
            [i for i in range(len(self.contexts)) if i not in self.closed]))
        self.contexts[index].close()
        self.closed.add(index)
        self.holds[index] = None

    @invariant()
    def machines_are_in_their_table(self) -> None:
        for index, policy in enumerate(self.contexts):
            state = policy.machine.state
            assert state in table_states("rep_ctx")
            if index in self.closed:
                assert state == "closed"
            else:
                assert state == ("answering" if self.holds[index] is not None else "idle")
        assert len(self.channel.inbox) == len(self.waiting)


class RespondentContextModel(RepContextModel):
    context_policy = RespondentContextPolicy


TestRepContexts = model_test(RepContextModel)
TestRespondentContexts = model_test(RespondentContextModel)
