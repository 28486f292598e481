"""REP protocol machines (protocols.yaml, machines ``rep_raw`` and ``rep``) and the cooked
REP's facade policy, driven with events and a recording context.

What REP must do (WIRE.md, "Request / reply header" and "REP" [seen]): split each
request's backtrace (words up to and including the first with the high bit; at most ``ttl``
of them, 8 pass and 9 are dropped silently, the pipe stays; malformed closes the pipe),
hand it over under the id of the pipe it came from, and send the reply back on that pipe
with the backtrace unchanged; a reply for a pipe that is gone is discarded and send still
succeeds; send never blocks.

Test list (both machines): delivery with pipe word + backtrace; multi-hop backtrace;
priority; ttl (default and option); malformed closes the pipe and forgets it; routing
the reply; pipe gone, full, header missing; credit unbounded from the start; close.
Policy: BadState without a request, body only to the user, backtrace on the reply, a new
recv abandons the unanswered request.
"""

from __future__ import annotations

import logging

import pytest

from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.core.stats import Stats
from scaproust.errors import BadState, Closed
from scaproust.fsm.errors import MachineError
from scaproust.protocols._headers import id_word, pipe_word
from scaproust.protocols.rep import Rep, RepContextPolicy, RepPolicy, RepRaw

from .fakes import FakePipe, Interleaved, RecordingContext, sent_through

ID = id_word(0x1234)


@pytest.fixture
def ctx() -> RecordingContext:
    ctx = RecordingContext()
    ctx.options = Options("rep")
    return ctx


@pytest.fixture(params=[RepRaw, Rep], ids=["raw", "cooked"])
def rep(request, ctx):
    return request.param(ctx)


def add_pipe(rep, free: int = 5, **kw) -> FakePipe:
    pipe = FakePipe(free=free, **kw)
    rep.evt_pipe_added(pipe)
    return pipe


def hops(n: int) -> bytes:
    """A backtrace of ``n`` words: ``n - 1`` hops, then the request id."""
    return b"".join(pipe_word(100 + k) for k in range(n - 1)) + ID


# ---------------------------------------------------------------- receiving


def test_rep_delivers_the_request_under_its_pipe_id_and_backtrace(rep, ctx):
    pipe = add_pipe(rep, recv_priority=5)

    rep.evt_pipe_recv(pipe, [ID + b"question"])

    assert ctx.delivered == [Message(b"question", pipe_word(pipe.id) + ID)]
    assert ctx.priorities == [5]


def test_rep_keeps_every_hop_of_the_backtrace(rep, ctx):
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [pipe_word(7) + pipe_word(9) + ID + b"via two devices"])

    assert ctx.delivered == [Message(b"via two devices", pipe_word(pipe.id) + pipe_word(7) + pipe_word(9) + ID)]


@pytest.mark.parametrize("hop", [0x01800000, 0x7FFFFFFF, 0x00000080])
def test_a_request_alone_in_its_read_keeps_its_hop_whatever_the_hops_bits(rep, ctx, hop):
    # A lone request whose backtrace is its id alone takes a shorter path: one with a hop
    # (the high bit of its first byte clear, any other bit set) must not.
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [pipe_word(hop) + ID + b"via a device"])

    assert ctx.delivered == [Message(b"via a device", pipe_word(pipe.id) + pipe_word(hop) + ID)]


@pytest.mark.parametrize("payload", [b"\x80\x00\x00", b"\x80", b""],
                         ids=["partial-word", "one-byte", "empty"])
def test_a_malformed_request_alone_in_its_read_closes_the_pipe(rep, ctx, payload):
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [payload])

    assert ctx.delivered == [] and ctx.rejected == [pipe]
    assert ctx.stats.snapshot() == {"dropped_malformed": 1}


def test_rep_delivers_an_empty_request_body(rep, ctx):
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [ID])

    assert ctx.delivered == [Message(b"", pipe_word(pipe.id) + ID)]


def test_rep_passes_eight_words_and_drops_nine_silently_keeping_the_pipe(rep, ctx):
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [hops(9) + b"nine", hops(8) + b"eight"])

    assert ctx.delivered == [Message(b"eight", pipe_word(pipe.id) + hops(8))]
    assert ctx.stats["dropped_ttl"] == 1
    assert ctx.rejected == []


def test_rep_follows_the_ttl_option(rep, ctx):
    pipe = add_pipe(rep)
    ctx.options.set("ttl", 2)

    rep.evt_pipe_recv(pipe, [hops(3) + b"three", hops(2) + b"two"])

    assert [m.body for m in ctx.delivered] == [b"two"]
    assert ctx.stats["dropped_ttl"] == 1


@pytest.mark.parametrize("payload", [pipe_word(1) + pipe_word(2), b"\x80\x00\x00", b""],
                         ids=["no-request-id", "partial-word", "empty"])
def test_rep_closes_a_pipe_that_sends_a_malformed_request(rep, ctx, caplog, payload):
    caplog.set_level(logging.DEBUG, logger="scaproust.protocol")
    pipe = add_pipe(rep)

    rep.evt_pipe_recv(pipe, [ID + b"good", payload, ID + b"after"])

    assert ctx.delivered == [Message(b"good", pipe_word(pipe.id) + ID)]
    assert ctx.rejected == [pipe]
    assert ctx.stats["dropped_malformed"] == 1
    assert ctx.stats["dropped_rejected"] == 1  # the one behind it, in the same read
    assert "malformed backtrace" in caplog.text
    # Nothing more from it, nothing more to it.
    rep.evt_pipe_recv(pipe, [ID + b"later"])
    rep.cmd_send(Message(b"reply", pipe_word(pipe.id) + ID))
    assert len(ctx.delivered) == 1
    assert pipe.sent == []
    rep.evt_pipe_removed(pipe)
    assert rep.pipes == {}


def test_messages_from_a_pipe_closed_for_a_malformed_backtrace_are_dropped_and_counted(rep, ctx):
    bad = FakePipe(free=5)
    rep.evt_pipe_added(bad)
    rep.evt_pipe_recv(bad, [pipe_word(1)])  # no id word: malformed, the pipe is closed
    assert ctx.rejected == [bad]

    rep.evt_pipe_recv(bad, [ID + b"late", ID + b"later"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_rejected"] == 2


# ---------------------------------------------------------------- replying


def test_rep_sends_the_reply_on_the_pipe_named_by_the_first_word(rep):
    p0, p1 = add_pipe(rep), add_pipe(rep)

    rep.cmd_send(Message(b"answer", pipe_word(p1.id) + pipe_word(7) + ID))

    assert p1.sent == [(b"answer", pipe_word(7) + ID)]
    assert p0.sent == []


def test_rep_echoes_the_backtrace_it_received_byte_for_byte(rep, ctx):
    pipe = add_pipe(rep)
    backtrace = pipe_word(3) + pipe_word(4) + ID
    rep.evt_pipe_recv(pipe, [backtrace + b"question"])
    (request,) = ctx.delivered

    rep.cmd_send(Message(b"answer", request.header))

    assert pipe.sent == [(b"answer", backtrace)]


def test_it_answers_one_request_after_another_on_the_same_pipe(rep, ctx):
    pipe = FakePipe(free=5)
    rep.evt_pipe_added(pipe)

    for n in range(3):
        rep.evt_pipe_recv(pipe, [ID + b"q%d" % n])
        (request,) = ctx.delivered[-1:]
        rep.cmd_send(Message(b"a%d" % n, request.header))

    assert rep.state == "open"
    assert pipe.sent == [(b"a0", ID), (b"a1", ID), (b"a2", ID)]


def test_an_answer_whose_header_is_only_the_pipe_word_goes_to_that_pipe_bare(rep, ctx):
    pipe = FakePipe(free=5)
    rep.evt_pipe_added(pipe)

    rep.cmd_send(Message(b"bare", pipe_word(pipe.id)))

    assert pipe.sent == [(b"bare", b"")]
    assert ctx.stats["dropped_no_route"] == 0


def test_rep_discards_a_reply_for_a_pipe_that_is_gone(rep, ctx):
    pipe = add_pipe(rep)
    rep.evt_pipe_removed(pipe)

    rep.cmd_send(Message(b"answer", pipe_word(pipe.id) + ID))

    assert pipe.sent == []
    assert ctx.stats["dropped_no_route"] == 1


def test_rep_drops_a_reply_for_a_full_pipe_and_counts_it(rep, ctx):
    pipe = add_pipe(rep, free=0)

    rep.cmd_send(Message(b"answer", pipe_word(pipe.id) + ID))

    assert pipe.sent == []
    assert ctx.stats["dropped_pipe_full"] == 1


@pytest.mark.parametrize("item", [b"no header", Message(b"short header", b"\x00\x01")],
                         ids=["bytes", "partial-word"])
def test_rep_drops_a_reply_without_a_pipe_word(rep, ctx, item):
    pipe = add_pipe(rep)

    rep.cmd_send(item)

    assert pipe.sent == []
    assert ctx.stats["dropped_no_route"] == 1


def test_rep_never_blocks_a_send(ctx):
    RepRaw(ctx)

    assert ctx.capacities == [UNBOUNDED]
    assert ctx.byte_capacities == [UNBOUNDED]


def test_rep_pipe_events_change_no_credit(rep, ctx):
    ctx.clear()
    pipe = add_pipe(rep)
    rep.evt_pipe_ready(pipe)
    rep.evt_pipe_removed(pipe)

    assert ctx.calls == []


def test_rep_close_twice_is_harmless_and_closed_refuses_sends(rep):
    rep.cmd_close()
    rep.cmd_close()

    assert rep.state == "closed"
    with pytest.raises(MachineError, match="Can't trigger event cmd_send from state closed!"):
        rep.cmd_send(Message(b"late", pipe_word(1) + ID))


# ---------------------------------------------------------------- the facade policy


@pytest.fixture
def policy() -> RepPolicy:
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    return RepPolicy(channel, Options("rep"))


def test_rep_send_without_a_request_is_a_bad_state(policy):
    with pytest.raises(BadState):
        sent_through(policy, b"unasked")


def test_the_policy_gives_the_user_the_body_and_puts_the_backtrace_on_the_reply(policy):
    header = pipe_word(5) + ID

    assert policy.incoming(Message(b"question", header)) == Message(b"question", header)
    assert sent_through(policy, b"answer") == Message(b"answer", header)


def test_a_second_reply_to_the_same_request_is_a_bad_state(policy):
    policy.incoming(Message(b"question", pipe_word(5) + ID))
    sent_through(policy, b"answer")

    with pytest.raises(BadState):
        sent_through(policy, b"again")


def test_a_new_recv_abandons_the_unanswered_request(policy):
    policy.incoming(Message(b"first", pipe_word(5) + id_word(1)))
    policy.incoming(Message(b"second", pipe_word(6) + id_word(2)))

    assert sent_through(policy, b"answer") == Message(b"answer", pipe_word(6) + id_word(2))


def test_the_policy_ignores_a_header_the_user_puts_on_the_reply(policy):
    policy.incoming(Message(b"question", pipe_word(5) + ID))

    assert sent_through(policy, Message(b"answer", b"forged")) == Message(b"answer", pipe_word(5) + ID)


def test_a_request_received_while_the_answer_to_the_one_before_is_sent_stays_pending(policy):
    # No lock: the answer's sent() reads the pending list and clears that very list; the
    # request another thread receives in between came with a list of its own.
    first, second = pipe_word(5) + id_word(1), pipe_word(6) + id_word(2)
    policy.incoming(Message(b"first", first))
    answer = policy.outgoing(b"answer")
    policy.pending = Interleaved(
        policy.pending, lambda: policy.incoming(Message(b"second", second)))

    policy.sent(answer)

    assert sent_through(policy, b"next answer") == Message(b"next answer", second)


def test_the_policy_drops_an_item_without_backtrace(policy):
    assert policy.incoming(b"headerless") is None
    with pytest.raises(BadState):
        sent_through(policy, b"answer")


def test_the_rep_machines_run_on_the_backend_the_environment_names():
    import os

    from scaproust._generated import rep as rep_gen
    from scaproust._generated import rep_raw as rep_raw_gen

    via_transitions = os.environ.get("SCAPROUST_FSM", "compiled").strip().lower() == "transitions"
    assert issubclass(Rep, rep_gen.RepTransitions if via_transitions else rep_gen.RepCompiled)
    assert issubclass(RepRaw, rep_raw_gen.RepRawTransitions if via_transitions else rep_raw_gen.RepRawCompiled)


def test_a_malformed_request_last_in_its_read_counts_nothing_as_rejected(rep, ctx):
    # Nothing came behind it: no dropped_rejected counter appears, not even at zero.
    pipe = add_pipe(rep)
    rep.evt_pipe_recv(pipe, [ID + b"good", b"\x80\x00"])
    assert ctx.rejected == [pipe]
    assert ctx.stats.snapshot() == {"dropped_malformed": 1}


# ---------------------------------------------------------------- a context's policy (rep_ctx)
# The caller-side half of sock.context() on a cooked REP: its machine (rep_ctx) under the
# policy's lock, over the socket's channel. The facade calls begin_recv, take,
# incoming_for, end_recv for a receive and outgoing, then sent for a send; another thread
# may run a send, a receive or close() on the same context between any two of them.


def request(body: bytes, n: int) -> Message:
    return Message(body, pipe_word(n) + id_word(n))


@pytest.fixture
def ctx_policy() -> RepContextPolicy:
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    return RepContextPolicy(channel, Options("rep"), Stats())


def received_by(policy: RepContextPolicy, item: Message) -> object:
    """One receive of the facade's, the request ``item`` taken off the channel."""
    token = policy.begin_recv()
    try:
        return policy.incoming_for(item, token)
    finally:
        policy.end_recv()


def test_a_reply_that_completes_after_a_new_recv_disturbs_neither_that_recv_nor_its_answer(
        ctx_policy):
    # One thread's send queues the reply to request 1 (outgoing) while another's recv
    # abandons request 1 and takes request 2; the first send's `sent` comes last.
    assert received_by(ctx_policy, request(b"q1", 1)) == request(b"q1", 1)
    reply1 = ctx_policy.outgoing(b"a1")
    assert reply1 == Message(b"a1", pipe_word(1) + id_word(1))
    token = ctx_policy.begin_recv()  # abandons request 1: the context receives again

    ctx_policy.sent(reply1)  # the late reply to request 1 changes nothing
    assert ctx_policy.machine.state == "receiving"
    assert ctx_policy.incoming_for(request(b"q2", 2), token) == request(b"q2", 2)
    ctx_policy.end_recv()
    ctx_policy.sent(reply1)  # nor while the context answers request 2

    assert ctx_policy.machine.state == "answering"
    assert sent_through(ctx_policy, b"a2") == Message(b"a2", pipe_word(2) + id_word(2))
    assert ctx_policy.machine.state == "idle"


def test_a_second_send_of_the_same_answer_completing_leaves_the_context_ready_to_receive(
        ctx_policy):
    # Two threads send on the context while it answers: both are accepted (outgoing), the
    # first `sent` ends the request, the second finds the context idle and leaves it so.
    received_by(ctx_policy, request(b"q", 1))
    first, second = ctx_policy.outgoing(b"a"), ctx_policy.outgoing(b"b")
    ctx_policy.sent(first)
    ctx_policy.sent(second)

    assert ctx_policy.machine.state == "idle"
    assert received_by(ctx_policy, request(b"next", 2)) == request(b"next", 2)
    assert ctx_policy.outgoing(b"c") == Message(b"c", pipe_word(2) + id_word(2))


def test_a_second_recv_refused_leaves_the_first_one_waiting_for_its_request(ctx_policy):
    token = ctx_policy.begin_recv()
    with pytest.raises(BadState, match="a receive already waits on this REP context"):
        ctx_policy.begin_recv()

    assert ctx_policy.machine.state == "receiving"
    assert ctx_policy.incoming_for(request(b"q", 3), token) == request(b"q", 3)
    ctx_policy.end_recv()
    assert sent_through(ctx_policy, b"a") == Message(b"a", pipe_word(3) + id_word(3))


def test_a_closed_context_refuses_a_recv_before_taking_anything(ctx_policy):
    ctx_policy.channel.push_many([request(b"for the socket", 1)])
    ctx_policy.close()

    assert ctx_policy.closed
    with pytest.raises(Closed, match="^context is closed$"):
        ctx_policy.begin_recv()
    with pytest.raises(Closed, match="^context is closed$"):
        ctx_policy.take(0)
    assert ctx_policy.channel.take() == request(b"for the socket", 1)  # still queued
    assert ctx_policy.stats.snapshot() == {}


def test_a_request_taken_as_the_context_closes_is_dropped_and_counted(ctx_policy):
    # The recv took the request off the channel; close() ran before incoming_for.
    token = ctx_policy.begin_recv()
    ctx_policy.close()

    assert ctx_policy.incoming_for(request(b"q", 1), token) is None
    ctx_policy.end_recv()
    assert ctx_policy.stats.snapshot() == {"dropped_closed": 1}
    with pytest.raises(Closed, match="^context is closed$"):
        ctx_policy.outgoing(b"a")


def test_a_reply_whose_send_completes_after_the_context_closed_is_harmless(ctx_policy):
    received_by(ctx_policy, request(b"q", 1))
    reply = ctx_policy.outgoing(b"a")
    ctx_policy.close()

    ctx_policy.sent(reply)  # the reply was queued before the close: it goes out
    assert ctx_policy.machine.state == "closed"
    with pytest.raises(Closed, match="^context is closed$"):
        ctx_policy.outgoing(b"again")
