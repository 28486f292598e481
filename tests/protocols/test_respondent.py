"""RESPONDENT protocol machines (protocols.yaml, machines ``respondent_raw`` and
``respondent``) and the cooked socket's facade policy, driven with events and a recording
context.

What RESPONDENT must do (WIRE.md, "RESPONDENT", "REP" and "Request / reply header"):
- a survey's words up to and including the survey id (the backtrace) are kept as its
  header, under the id of the pipe it came on: ``Message(body, pipe_word + backtrace)``;
- more than ``ttl`` words (8 by default, counting the id): dropped silently, counted, the
  pipe stays; malformed (no id word, a partial word): the pipe is closed;
- a response pops the pipe id from its header and goes to that pipe with the rest of the
  header, byte-identical; a pipe that is gone loses it and send still succeeds; send never
  blocks;
- cooked (the policy): send without a survey is ``sp.BadState``; the user sends a body and
  the survey's header goes with it; a new recv abandons an unanswered survey.
"""

from __future__ import annotations

import os

import pytest

import scaproust as sp
from scaproust._generated import respondent as respondent_gen
from scaproust._generated import respondent_raw as respondent_raw_gen
from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.options import Options
from scaproust.fsm.errors import MachineError
from scaproust.protocols._headers import id_word, pipe_word
from scaproust.protocols.respondent import Respondent, RespondentPolicy, RespondentRaw

from .fakes import FakePipe, RecordingContext, sent_through

ID = id_word(0x2A)


@pytest.fixture
def ctx() -> RecordingContext:
    ctx = RecordingContext()
    ctx.options = Options("respondent")
    return ctx


@pytest.fixture(params=[RespondentRaw, Respondent], ids=["raw", "cooked"])
def machine(request, ctx):
    """The raw and the cooked machine share one table: every test runs on both."""
    return request.param(ctx)


def added(machine, pipe):
    machine.evt_pipe_added(pipe)
    return pipe


def test_the_respondent_machines_run_on_the_backend_the_environment_names():
    via_transitions = os.environ.get("SCAPROUST_FSM", "compiled").strip().lower() == "transitions"

    assert issubclass(RespondentRaw, respondent_raw_gen.RespondentRawTransitions if via_transitions
                      else respondent_raw_gen.RespondentRawCompiled)
    assert issubclass(Respondent, respondent_gen.RespondentTransitions if via_transitions
                      else respondent_gen.RespondentCompiled)


def test_a_respondent_grants_unbounded_send_credit_so_send_never_blocks(machine, ctx):
    assert ctx.capacities == [UNBOUNDED]
    assert ctx.byte_capacities == [UNBOUNDED]


# ---------------------------------------------------------------------------- receiving


def test_a_survey_is_delivered_with_the_pipe_id_on_top_of_its_backtrace(machine, ctx):
    pipe = added(machine, FakePipe(recv_priority=4))

    machine.evt_pipe_recv(pipe, [ID + b"how many?", pipe_word(7) + ID + b"via a device", ID])

    hop = pipe_word(pipe.id)
    assert ctx.delivered == [
        sp.Message(b"how many?", hop + ID),
        sp.Message(b"via a device", hop + pipe_word(7) + ID),
        sp.Message(b"", hop + ID),
    ]
    assert ctx.priorities == [4]


def test_a_body_that_starts_with_id_like_bytes_stays_in_the_body(machine, ctx):
    pipe = added(machine, FakePipe())

    machine.evt_pipe_recv(pipe, [ID + id_word(99) + b"x"])

    assert ctx.delivered == [sp.Message(id_word(99) + b"x", pipe_word(pipe.id) + ID)]


def test_eight_words_pass_and_nine_are_dropped_silently_and_counted(machine, ctx):
    pipe = added(machine, FakePipe())
    seven_hops = b"".join(pipe_word(n) for n in range(1, 8))

    machine.evt_pipe_recv(pipe, [seven_hops + ID + b"eight", pipe_word(99) + seven_hops + ID + b"nine"])

    assert [m.body for m in ctx.delivered] == [b"eight"]
    assert ctx.stats["dropped_ttl"] == 1
    assert ctx.rejected == []


def test_the_ttl_option_sets_the_depth_allowed(machine, ctx):
    ctx.options.ttl = 1
    pipe = added(machine, FakePipe())

    machine.evt_pipe_recv(pipe, [ID + b"one", pipe_word(1) + ID + b"two"])

    assert [m.body for m in ctx.delivered] == [b"one"]
    assert ctx.stats["dropped_ttl"] == 1


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x01", pipe_word(1) + pipe_word(2) + b"\x80"],
                         ids=["empty", "partial-word", "no-id-word"])
def test_a_malformed_survey_closes_its_pipe(machine, ctx, payload):
    pipe = added(machine, FakePipe())

    machine.evt_pipe_recv(pipe, [ID + b"good", payload, ID + b"after the bad one"])

    assert ctx.rejected == [pipe]
    assert [m.body for m in ctx.delivered] == [b"good"]
    assert ctx.stats["dropped_malformed"] == 1


def test_messages_from_a_pipe_closed_for_a_malformed_backtrace_are_dropped_and_counted(
        machine, ctx):
    bad = FakePipe(free=5)
    machine.evt_pipe_added(bad)
    machine.evt_pipe_recv(bad, [pipe_word(1)])  # no id word: malformed, the pipe is closed
    assert ctx.rejected == [bad]

    machine.evt_pipe_recv(bad, [ID + b"late", ID + b"later"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_rejected"] == 2


# ---------------------------------------------------------------------------- sending


def test_a_response_goes_back_on_the_pipe_its_survey_came_from_with_the_backtrace(machine, ctx):
    p0, p1 = added(machine, FakePipe()), added(machine, FakePipe())
    machine.evt_pipe_recv(p1, [pipe_word(7) + ID + b"question"])
    (received,) = ctx.delivered

    machine.cmd_send(sp.Message(b"answer", received.header))

    assert p0.sent == []
    assert p1.sent == [(b"answer", pipe_word(7) + ID)]  # the stack as it came, byte for byte


def test_it_answers_one_request_after_another_on_the_same_pipe(machine, ctx):
    pipe = FakePipe(free=5)
    machine.evt_pipe_added(pipe)

    for n in range(3):
        machine.evt_pipe_recv(pipe, [ID + b"q%d" % n])
        (request,) = ctx.delivered[-1:]
        machine.cmd_send(sp.Message(b"a%d" % n, request.header))

    assert machine.state == "open"
    assert pipe.sent == [(b"a0", ID), (b"a1", ID), (b"a2", ID)]


def test_an_answer_whose_header_is_only_the_pipe_word_goes_to_that_pipe_bare(machine, ctx):
    pipe = FakePipe(free=5)
    machine.evt_pipe_added(pipe)

    machine.cmd_send(sp.Message(b"bare", pipe_word(pipe.id)))

    assert pipe.sent == [(b"bare", b"")]
    assert ctx.stats["dropped_no_route"] == 0


def test_a_response_for_a_pipe_that_is_gone_is_discarded_and_counted(machine, ctx):
    pipe = added(machine, FakePipe())
    machine.evt_pipe_recv(pipe, [ID + b"question"])
    machine.evt_pipe_removed(pipe)

    machine.cmd_send(sp.Message(b"answer", ctx.delivered[0].header))

    assert pipe.sent == []
    assert ctx.stats["dropped_no_route"] == 1


def test_removing_a_pipe_nobody_added_changes_nothing(machine, ctx):
    pipe = added(machine, FakePipe())
    machine.evt_pipe_removed(FakePipe())

    machine.cmd_send(sp.Message(b"answer", pipe_word(pipe.id) + ID))

    assert pipe.sent == [(b"answer", ID)]


def test_a_response_to_a_pipe_with_no_room_is_dropped_and_counted(machine, ctx):
    pipe = added(machine, FakePipe(free=0))

    machine.cmd_send(sp.Message(b"answer", pipe_word(pipe.id) + ID))

    assert pipe.sent == []
    assert ctx.stats["dropped_pipe_full"] == 1


@pytest.mark.parametrize("item", [b"no header", sp.Message(b"x", b"\x00\x01"), sp.Message(b"x", ID + ID)],
                         ids=["bytes", "partial-word", "id-word-on-top"])
def test_a_response_without_a_pipe_id_on_top_is_dropped_and_counted(machine, ctx, item):
    pipe = added(machine, FakePipe())

    machine.cmd_send(item)

    assert pipe.sent == []
    assert ctx.stats["dropped_no_route"] == 1


def test_pipe_readiness_sends_nothing(machine, ctx):
    pipe = added(machine, FakePipe(free=0))
    ctx.clear()

    pipe.free = 2
    machine.evt_pipe_ready(pipe)

    assert pipe.sent == [] and ctx.calls == []


def test_a_closed_respondent_can_be_closed_again_but_takes_no_response(machine):
    machine.cmd_close()
    machine.cmd_close()

    assert machine.state == "closed"
    with pytest.raises(MachineError):
        machine.cmd_send(sp.Message(b"x", pipe_word(1) + ID))


# ---------------------------------------------------------------------------- the facade policy


@pytest.fixture
def policy() -> RespondentPolicy:
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    return RespondentPolicy(channel, Options("respondent"))


def test_a_cooked_send_without_a_survey_is_a_state_error(policy):
    with pytest.raises(sp.BadState):
        sent_through(policy, b"answer")


def test_a_cooked_response_carries_the_surveys_header_once(policy):
    header = pipe_word(3) + ID
    policy.recv_wait(None)
    policy.incoming(sp.Message(b"question", header))

    assert sent_through(policy, b"answer") == sp.Message(b"answer", header)
    with pytest.raises(sp.BadState):
        sent_through(policy, b"a second answer")


def test_a_cooked_response_ignores_a_users_header(policy):
    policy.recv_wait(None)
    policy.incoming(sp.Message(b"question", pipe_word(3) + ID))

    assert sent_through(policy, sp.Message(b"answer", b"mine")).header == pipe_word(3) + ID


def test_a_new_recv_abandons_the_unanswered_survey(policy):
    policy.recv_wait(None)
    policy.incoming(sp.Message(b"first", pipe_word(3) + ID))

    policy.recv_wait(None)  # a recv starts (and, say, times out)

    with pytest.raises(sp.BadState):
        sent_through(policy, b"answer to the first")


def test_the_latest_survey_received_is_the_one_answered(policy):
    policy.recv_wait(None)
    policy.incoming(sp.Message(b"first", pipe_word(3) + id_word(1)))
    policy.recv_wait(None)
    policy.incoming(sp.Message(b"second", pipe_word(4) + id_word(2)))

    assert sent_through(policy, b"answer").header == pipe_word(4) + id_word(2)
