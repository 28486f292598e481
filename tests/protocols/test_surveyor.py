"""SURVEYOR protocol machines (protocols.yaml, machines ``surveyor_raw`` and ``surveyor``) and
the cooked socket's facade policy, driven with events, a recording context and a fake clock.

What SURVEYOR must do (WIRE.md, "SURVEYOR" and "Request / reply header"):
- a survey goes to every connected respondent that can take it; a pipe that cannot misses
  it (counted); send never blocks;
- raw: no ids, no deadline; the user's header goes out as it is; a response is split after
  its first word with the most significant bit set and delivered with that header;
- cooked: ids start random and go +1 per survey, as an id word on the wire; responses to
  the current survey are delivered until the deadline (``survey_deadline``, 1 s by
  default); responses to an older survey, and late ones, are dropped and counted; a new
  survey cancels the old one;
- a malformed response (no id word, a partial word) closes its pipe; more than ``ttl``
  words are dropped and counted;
- the user sees ``sp.BadState`` on a recv before any survey or after its deadline, and
  ``sp.Timeout`` on a recv still waiting when the deadline passes.
"""

from __future__ import annotations

import os

import pytest

import scaproust as sp
from scaproust._generated import surveyor as surveyor_gen
from scaproust._generated import surveyor_raw as surveyor_raw_gen
from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.options import Options
from scaproust.fsm.errors import MachineError
from scaproust.protocols import surveyor as surveyor_module
from scaproust.protocols._headers import id_word, pipe_word
from scaproust.protocols.surveyor import Surveyor, SurveyorPolicy, SurveyorRaw

from .fakes import FakeClock, FakePipe, RecordingContext, sent_through

DEADLINE = 0.5
ID = id_word(0x1234)
OLD_ID = id_word(0x1233)


@pytest.fixture
def ctx(loop) -> RecordingContext:
    ctx = RecordingContext(loop)
    ctx.options = Options("surveyor", survey_deadline=DEADLINE)
    return ctx


@pytest.fixture
def raw(ctx) -> SurveyorRaw:
    return SurveyorRaw(ctx)


@pytest.fixture
def cooked(ctx) -> Surveyor:
    return Surveyor(ctx)


def survey(body: bytes = b"survey", word: bytes = ID) -> sp.Message:
    """A survey as the cooked socket's policy hands it over: the id word as its header."""
    return sp.Message(body, word)


def with_pipes(machine, *pipes):
    for pipe in pipes:
        machine.evt_pipe_added(pipe)
    return pipes


# ---------------------------------------------------------------------------- both machines


def test_the_surveyor_machines_run_on_the_backend_the_environment_names():
    via_transitions = os.environ.get("SCAPROUST_FSM", "compiled").strip().lower() == "transitions"

    assert issubclass(SurveyorRaw, surveyor_raw_gen.SurveyorRawTransitions if via_transitions
                      else surveyor_raw_gen.SurveyorRawCompiled)
    assert issubclass(Surveyor, surveyor_gen.SurveyorTransitions if via_transitions
                      else surveyor_gen.SurveyorCompiled)


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_surveyor_grants_unbounded_send_credit_so_send_never_blocks(kind, ctx):
    kind(ctx)

    assert ctx.capacities == [UNBOUNDED]
    assert ctx.byte_capacities == [UNBOUNDED]


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_survey_goes_to_every_pipe(kind, ctx):
    machine = kind(ctx)
    p0, p1, p2 = with_pipes(machine, FakePipe(), FakePipe(), FakePipe())

    machine.cmd_send(survey(b"who is there?"))

    for pipe in (p0, p1, p2):
        assert pipe.sent == [(b"who is there?", ID)]


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_pipe_that_cannot_take_a_survey_misses_it_and_is_counted(kind, ctx):
    machine = kind(ctx)
    full, ready = with_pipes(machine, FakePipe(free=0), FakePipe(free=1))

    machine.cmd_send(survey())

    assert full.sent == [] and ready.sent == [(b"survey", ID)]
    assert ctx.stats["dropped_pipe_full"] == 1
    # It misses that survey only: the next one goes to it once it has room again.
    full.free = 1
    machine.evt_pipe_ready(full)
    machine.cmd_send(survey(b"again", OLD_ID))
    assert full.sent == [(b"again", OLD_ID)]


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_removed_pipe_gets_no_more_surveys(kind, ctx):
    machine = kind(ctx)
    gone, stays = with_pipes(machine, FakePipe(free=5), FakePipe(free=5))

    machine.evt_pipe_removed(gone)
    machine.cmd_send(survey())

    assert gone.sent == [] and stays.sent == [(b"survey", ID)]


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_surveyor_with_no_pipe_accepts_a_survey_and_sends_it_nowhere(kind, ctx):
    machine = kind(ctx)

    machine.cmd_send(survey())

    assert ctx.stats.snapshot() == {}


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_pipe_readiness_sends_nothing_and_changes_no_credit(kind, ctx):
    machine = kind(ctx)
    (pipe,) = with_pipes(machine, FakePipe(free=0))
    ctx.clear()

    pipe.free = 3
    machine.evt_pipe_ready(pipe)

    assert pipe.sent == [] and ctx.calls == []


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
@pytest.mark.parametrize("payload", [b"", b"\x80\x00", pipe_word(1) + pipe_word(2)],
                         ids=["empty", "partial-word", "no-id-word"])
def test_a_surveyor_closes_a_pipe_that_sends_a_malformed_response(kind, ctx, payload):
    machine = kind(ctx)
    (pipe,) = with_pipes(machine, FakePipe())
    machine.cmd_send(survey())

    machine.evt_pipe_recv(pipe, [ID + b"good", payload, ID + b"after the bad one"])

    assert ctx.rejected == [pipe]
    assert ctx.delivered == [sp.Message(b"good", ID)]  # what came before still counts
    assert ctx.stats["dropped_malformed"] == 1


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_response_deeper_than_the_ttl_comes_back_and_the_pipe_stays(kind, ctx):
    # The hops were counted on the survey's way out (each RESPONDENT's ttl), as nng does;
    # a device's raw SURVEYOR that dropped deep responses lost those of every survey that
    # had just passed. The cooked one's header is then no survey id: stale.
    ctx.options.ttl = 2
    machine = kind(ctx)
    (pipe,) = with_pipes(machine, FakePipe())
    machine.cmd_send(survey())

    machine.evt_pipe_recv(pipe, [pipe_word(1) + pipe_word(2) + ID + b"deep", ID + b"flat"])

    deep = sp.Message(b"deep", pipe_word(1) + pipe_word(2) + ID)
    if kind is SurveyorRaw:
        assert ctx.delivered == [deep, sp.Message(b"flat", ID)]
    else:
        assert ctx.delivered == [sp.Message(b"flat", ID)]
        assert ctx.stats["dropped_stale"] == 1
    assert "dropped_ttl" not in ctx.stats.snapshot()
    assert ctx.rejected == []


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_response_is_delivered_with_the_receiving_pipes_priority(kind, ctx):
    machine = kind(ctx)
    (pipe,) = with_pipes(machine, FakePipe(recv_priority=3))
    machine.cmd_send(survey())

    machine.evt_pipe_recv(pipe, [ID + b"x"])

    assert ctx.priorities == [3]


@pytest.mark.parametrize("kind", [SurveyorRaw, Surveyor])
def test_a_closed_surveyor_can_be_closed_again_but_takes_no_survey(kind, ctx):
    machine = kind(ctx)
    machine.cmd_close()
    machine.cmd_close()

    assert machine.state == "closed"
    with pytest.raises(MachineError):
        machine.cmd_send(survey())


@pytest.mark.parametrize("machine", [SurveyorRaw, Surveyor])
def test_responses_from_a_pipe_closed_for_a_malformed_response_are_dropped_and_counted(
        ctx, machine):
    surveyor = machine(ctx)
    bad = FakePipe()
    surveyor.evt_pipe_added(bad)
    surveyor.cmd_send(sp.Message(b"q", ID))
    surveyor.evt_pipe_recv(bad, [b"\x80\x00"])  # a partial word: the pipe is closed
    assert ctx.rejected == [bad]

    surveyor.evt_pipe_recv(bad, [ID + b"late", ID + b"later"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_rejected"] == 2


# ---------------------------------------------------------------------------- raw


def test_a_raw_surveyor_sends_the_users_header_as_it_is(raw):
    (pipe,) = with_pipes(raw, FakePipe(free=3))

    raw.cmd_send(sp.Message(b"body", pipe_word(9) + id_word(77)))
    raw.cmd_send(b"no header at all")

    assert pipe.sent == [(b"body", pipe_word(9) + id_word(77)), (b"no header at all", b"")]


def test_a_raw_surveyor_delivers_every_response_split_after_its_first_id_word(raw, ctx):
    (pipe,) = with_pipes(raw, FakePipe())

    raw.evt_pipe_recv(pipe, [id_word(5) + b"five", pipe_word(3) + id_word(6) + id_word(7) + b"x",
                             id_word(8)])

    assert ctx.delivered == [
        sp.Message(b"five", id_word(5)),
        sp.Message(id_word(7) + b"x", pipe_word(3) + id_word(6)),
        sp.Message(b"", id_word(8)),
    ]


def test_a_raw_surveyor_has_no_deadline_and_delivers_any_id(raw, ctx, loop):
    (pipe,) = with_pipes(raw, FakePipe())
    raw.cmd_send(survey())
    loop.advance(3600)

    raw.evt_pipe_recv(pipe, [OLD_ID + b"old", ID + b"new"])

    assert loop.pending_timers() == []
    assert ctx.delivered == [sp.Message(b"old", OLD_ID), sp.Message(b"new", ID)]
    assert raw.state == "open"


# ---------------------------------------------------------------------------- cooked


def test_a_survey_starts_the_deadline_of_the_survey_deadline_option(cooked, ctx, loop):
    ctx.options.survey_deadline = 0.25

    cooked.cmd_send(survey())

    assert cooked.state == "surveying" and cooked.survey == ID
    (timer,) = loop.pending_timers()
    assert timer.when == loop.time() + 0.25


def test_responses_to_the_current_survey_are_delivered_with_its_id_word(cooked, ctx):
    p0, p1 = with_pipes(cooked, FakePipe(), FakePipe())
    cooked.cmd_send(survey())

    cooked.evt_pipe_recv(p0, [ID + b"from p0"])
    cooked.evt_pipe_recv(p1, [ID + b"from p1", ID + b""])

    assert ctx.delivered == [sp.Message(b"from p0", ID), sp.Message(b"from p1", ID),
                             sp.Message(b"", ID)]


def test_responses_to_an_older_survey_are_dropped_and_counted(cooked, ctx):
    (pipe,) = with_pipes(cooked, FakePipe(free=2))
    cooked.cmd_send(survey(word=OLD_ID))
    cooked.cmd_send(survey(word=ID))

    cooked.evt_pipe_recv(pipe, [OLD_ID + b"stale", ID + b"fresh", pipe_word(4) + ID + b"hop"])

    assert ctx.delivered == [sp.Message(b"fresh", ID)]
    assert ctx.stats["dropped_stale"] == 2


def test_at_the_deadline_the_survey_ends_and_later_responses_are_dropped(cooked, ctx, loop):
    (pipe,) = with_pipes(cooked, FakePipe())
    cooked.cmd_send(survey())

    loop.advance(DEADLINE - 0.01)
    cooked.evt_pipe_recv(pipe, [ID + b"just in time"])
    loop.advance(0.01)
    cooked.evt_pipe_recv(pipe, [ID + b"late", ID + b"later"])

    assert cooked.state == "idle" and cooked.survey is None
    assert ctx.delivered == [sp.Message(b"just in time", ID)]
    assert ctx.stats["dropped_late"] == 2
    assert ctx.rejected == []


def test_a_response_before_any_survey_is_late(cooked, ctx):
    (pipe,) = with_pipes(cooked, FakePipe())

    cooked.evt_pipe_recv(pipe, [ID + b"unasked"])

    assert ctx.delivered == [] and ctx.stats["dropped_late"] == 1


def test_a_new_survey_cancels_the_old_one_and_restarts_the_deadline(cooked, ctx, loop):
    (pipe,) = with_pipes(cooked, FakePipe(free=2))
    cooked.cmd_send(survey(word=OLD_ID))
    first = loop.pending_timers()

    loop.advance(0.3)
    cooked.cmd_send(survey(word=ID))
    loop.advance(DEADLINE - 0.1)  # past the first survey's deadline, not the second's

    assert first[0].cancelled
    assert cooked.state == "surveying" and cooked.survey == ID
    cooked.evt_pipe_recv(pipe, [ID + b"fresh"])
    assert ctx.delivered == [sp.Message(b"fresh", ID)]
    loop.advance(0.1)
    assert cooked.state == "idle"
    assert loop.pending_timers() == []


def test_a_survey_after_the_deadline_starts_a_new_one(cooked, ctx, loop):
    (pipe,) = with_pipes(cooked, FakePipe(free=2))
    cooked.cmd_send(survey(word=OLD_ID))
    loop.advance(DEADLINE)

    cooked.cmd_send(survey(b"second", ID))
    cooked.evt_pipe_recv(pipe, [ID + b"answer"])

    assert pipe.sent[-1] == (b"second", ID)
    assert cooked.state == "surveying"
    assert ctx.delivered == [sp.Message(b"answer", ID)]


def test_a_pipe_added_during_a_survey_does_not_get_it(cooked):
    cooked.cmd_send(survey())
    (late,) = with_pipes(cooked, FakePipe())

    assert late.sent == []


def test_closing_during_a_survey_cancels_its_deadline(cooked, loop):
    cooked.cmd_send(survey())

    cooked.cmd_close()

    assert cooked.state == "closed" and cooked.survey is None
    assert loop.pending_timers() == []
    loop.advance(10 * DEADLINE)  # nothing fires into the closed machine


@pytest.mark.parametrize("after_a_survey", [False, True], ids=["before", "after-deadline"])
def test_pipes_coming_going_and_getting_ready_leave_an_idle_surveyor_idle(
        cooked, ctx, loop, after_a_survey):
    first, second = FakePipe(), FakePipe()
    cooked.evt_pipe_added(first)
    if after_a_survey:
        cooked.cmd_send(sp.Message(b"q", ID))
        loop.advance(DEADLINE)

    cooked.evt_pipe_added(second)
    cooked.evt_pipe_ready(second)
    cooked.evt_pipe_removed(first)

    assert cooked.state == "idle"
    cooked.evt_pipe_recv(second, [ID + b"late"])
    assert ctx.delivered == []
    assert ctx.stats["dropped_late"] == 1


def test_responses_all_to_the_current_survey_count_no_drop(cooked, ctx):
    pipe = FakePipe()
    cooked.evt_pipe_added(pipe)
    cooked.cmd_send(sp.Message(b"q", ID))

    cooked.evt_pipe_recv(pipe, [ID + b"yes", ID + b"no"])

    assert ctx.delivered == [sp.Message(b"yes", ID), sp.Message(b"no", ID)]
    assert "dropped_stale" not in ctx.stats.snapshot()


# ---------------------------------------------------------------------------- the facade policy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> Channel:
    return Channel(wake_backend=lambda: None, resume_reading=lambda: None)


@pytest.fixture
def policy(channel, clock, monkeypatch) -> SurveyorPolicy:
    monkeypatch.setattr(SurveyorPolicy, "clock", staticmethod(clock))
    return SurveyorPolicy(channel, Options("surveyor", survey_deadline=DEADLINE))


def test_survey_ids_start_where_the_random_generator_says_and_go_up_by_one(channel, monkeypatch):
    asked = []

    def getrandbits(bits):
        asked.append(bits)
        return 0x7FFFFFFE

    monkeypatch.setattr(surveyor_module.random, "getrandbits", getrandbits)
    policy = SurveyorPolicy(channel, Options("surveyor"))

    words = [sent_through(policy, b"q").header for _ in range(3)]

    assert asked == [31]
    assert words == [id_word(0x7FFFFFFE), id_word(0x7FFFFFFF), id_word(0)]  # 31 bits, wrapping


def test_two_surveyors_start_from_different_ids(channel):
    # Random starts: two sockets (or two runs) do not reuse each other's ids. 1 in 2**31
    # that they collide by chance; three in a row is beyond possible.
    starts = {SurveyorPolicy(channel, Options("surveyor")).outgoing(b"q").header for _ in range(3)}
    assert len(starts) > 1


def test_a_cooked_survey_carries_the_body_and_the_id_word_but_not_a_users_header(policy):
    plain = sent_through(policy, b"plain")
    with_header = sent_through(policy, sp.Message(b"body", b"ignored header"))

    assert plain.body == b"plain" and len(plain.header) == 4 and plain.header[0] & 0x80
    assert with_header == sp.Message(b"body", id_word(int.from_bytes(plain.header, "big") + 1))


def test_recv_before_any_survey_is_a_state_error(policy):
    with pytest.raises(sp.BadState):
        policy.recv_wait(None)


def test_recv_waits_at_most_until_the_survey_deadline(policy, clock):
    sent_through(policy, b"q")
    clock.advance(0.2)

    assert policy.recv_wait(None) == pytest.approx(DEADLINE - 0.2)
    assert policy.recv_wait(clock() + 10) == pytest.approx(DEADLINE - 0.2)
    assert policy.recv_wait(clock() + 0.1) == pytest.approx(0.1)  # the caller's is sooner
    assert policy.recv_wait(clock() - 1) == 0.0


def test_recv_after_the_deadline_is_a_state_error_until_the_next_survey(policy, clock):
    sent_through(policy, b"first")
    clock.advance(DEADLINE)

    with pytest.raises(sp.BadState):
        policy.recv_wait(None)
    with pytest.raises(sp.BadState):
        policy.recv_wait(clock() + 10)
    sent_through(policy, b"second")
    assert policy.recv_wait(None) == pytest.approx(DEADLINE)


def test_a_receive_waiting_through_a_survey_carries_over_to_the_next_until_its_deadline(
        policy, clock):
    # What a receive asks once its wait, capped at its survey's deadline, timed out
    # (Policy.renewed): whether another thread sent a survey since it looked at the epoch,
    # one still open. Then it waits on, until that survey's deadline.
    sent_through(policy, b"first")
    epoch = policy.epoch
    assert not policy.renewed(epoch)  # no survey since: the wait is over
    clock.advance(0.5)
    deadline = clock() + DEADLINE
    sent_through(policy, b"second")  # another thread's, meanwhile

    assert policy.renewed(epoch)
    assert not policy.renewed(policy.epoch)  # a receive that began after it
    clock.now = deadline - 0.001
    assert policy.renewed(epoch)
    clock.now = deadline  # the second survey is over too
    assert not policy.renewed(epoch)


def test_the_deadline_follows_the_option_at_the_time_of_the_survey(policy, clock):
    policy.options.survey_deadline = 2.0
    sent_through(policy, b"q")
    policy.options.survey_deadline = 0.1  # applies to the next survey

    assert policy.recv_wait(None) == pytest.approx(2.0)


def test_a_new_survey_throws_away_the_responses_not_yet_received(policy, channel):
    old = sent_through(policy, b"old").header
    channel.push_many([sp.Message(b"r1", old), sp.Message(b"r2", old)])

    sent_through(policy, b"new")

    assert len(channel.inbox) == 0 and channel.inbox_bytes == 0


def test_the_policy_passes_a_response_to_the_current_survey(policy):
    word = sent_through(policy, b"q").header
    response = sp.Message(b"yes", word)

    assert policy.incoming(response) is response


def test_the_policy_drops_a_response_to_an_older_survey(policy):
    old = sent_through(policy, b"old").header
    sent_through(policy, b"new")

    assert policy.incoming(sp.Message(b"stale", old)) is None
    assert policy.stats.snapshot() == {"purged_stale": 1}


def test_a_new_survey_purges_responses_not_yet_taken_and_counts_them(policy, channel):
    old = sent_through(policy, b"old").header
    channel.push_many([sp.Message(b"r1", old), sp.Message(b"r2", old)])

    new = sent_through(policy, b"new").header
    channel.push_many([sp.Message(b"r3", new)])

    assert channel.get(0) == sp.Message(b"r3", new)
    assert policy.stats.snapshot() == {"purged_stale": 2}


def test_a_response_to_the_new_survey_already_queued_when_it_is_sent_is_kept(policy, channel):
    old = sent_through(policy, b"one").header
    new = policy.outgoing(b"two")
    channel.push_many([sp.Message(b"stale", old), sp.Message(b"fresh", new.header)])

    policy.sent(new)

    assert list(channel.inbox.drain()) == [sp.Message(b"fresh", new.header)]


def test_a_recv_that_drops_a_stale_response_after_the_deadline_times_out(policy, clock):
    # The recv was waiting when the deadline passed: Timeout, not BadState (the next recv
    # gets BadState from recv_wait).
    old = sent_through(policy, b"old").header
    sent_through(policy, b"new")
    clock.advance(DEADLINE)

    with pytest.raises(sp.Timeout):
        policy.incoming(sp.Message(b"stale", old))
    assert policy.stats.snapshot() == {"purged_stale": 1}
    with pytest.raises(sp.BadState):
        policy.recv_wait(None)
