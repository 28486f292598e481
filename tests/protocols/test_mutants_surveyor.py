"""More of the cooked SURVEYOR (protocols.yaml, machine ``surveyor``; protocols/surveyor.py)
and its policy: pipes coming and going do not start a survey, a response to the current
survey counts no drop, and a response already queued for a new survey is kept (written to
kill the mutants of ``make mutate`` that survived test_surveyor.py).
"""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust.core.channel import Channel
from scaproust.core.options import Options
from scaproust.protocols.surveyor import Surveyor, SurveyorPolicy, SurveyorRaw

from .fakes import FakeClock, FakePipe, sent_through

# The fixtures and constants of test_surveyor.py (pytest finds imported fixtures).
from .test_surveyor import DEADLINE, ID, cooked, ctx, loop  # noqa: F401


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


def test_a_response_to_the_new_survey_already_queued_when_it_is_sent_is_kept(monkeypatch):
    monkeypatch.setattr(SurveyorPolicy, "clock", staticmethod(FakeClock()))
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    policy = SurveyorPolicy(channel, Options("surveyor", survey_deadline=DEADLINE))
    old = sent_through(policy, b"one").header
    new = policy.outgoing(b"two")
    channel.push_many([sp.Message(b"stale", old), sp.Message(b"fresh", new.header)])

    policy.sent(new)

    assert list(channel.inbox.drain()) == [sp.Message(b"fresh", new.header)]


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
