"""SURVEYOR contexts in the I/O thread (protocols.yaml, machine ``surveyor_ctx``, and the
rows of ``surveyor`` that route to them), with recording contexts and a fake clock.

What a SURVEYOR context must do (the issue, nng's survey0 contexts): its own survey with
its own id (from the socket's pool) and its own deadline (its ``survey_deadline``), sent
to every pipe that can take it; responses carrying its id reach it until the deadline;
after it, or once a new survey replaced it, they are dropped by the socket as late or
stale; closing it, or its socket, ends its survey.
"""

from __future__ import annotations

import pytest

from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.protocols._headers import id_word
from scaproust.protocols.surveyor import Surveyor

from .fakes import FakeLoop, FakePipe, RecordingContext

A_ID, B_ID, OWN_ID = id_word(21), id_word(22), id_word(23)


def recording(loop: FakeLoop, deadline: float = 1.0) -> RecordingContext:
    return RecordingContext(loop, Options("surveyor", survey_deadline=deadline))


@pytest.fixture
def sock_ctx(loop) -> RecordingContext:
    return recording(loop)


@pytest.fixture
def surveyor(sock_ctx) -> Surveyor:
    return Surveyor(sock_ctx)


def test_each_context_surveys_every_pipe_and_gets_its_own_responses(surveyor, loop, sock_ctx):
    p1, p2, full = FakePipe(free=5), FakePipe(free=5), FakePipe(free=0)
    for pipe in (p1, p2, full):
        surveyor.evt_pipe_added(pipe)
    a_seam, b_seam = recording(loop), recording(loop)
    a, b = surveyor.open_context(a_seam), surveyor.open_context(b_seam)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    surveyor.cmd_send(Message(b"own", OWN_ID))
    assert p1.sent == p2.sent == [(b"qa", A_ID), (b"qb", B_ID), (b"own", OWN_ID)]
    assert ("stats.count", "dropped_pipe_full", 1) in a_seam.calls  # the full pipe missed it

    surveyor.evt_pipe_recv(p1, [B_ID + b"rb1", OWN_ID + b"rown", A_ID + b"ra"])
    surveyor.evt_pipe_recv(p2, [B_ID + b"rb2"])
    assert a_seam.delivered == [Message(b"ra", A_ID)]
    assert b_seam.delivered == [Message(b"rb1", B_ID), Message(b"rb2", B_ID)]
    assert sock_ctx.delivered == [Message(b"rown", OWN_ID)]


def test_each_context_has_its_own_deadline_and_late_responses_are_dropped(surveyor, loop,
                                                                         sock_ctx):
    pipe = FakePipe(free=5)
    surveyor.evt_pipe_added(pipe)
    fast_seam, slow_seam = recording(loop, 0.5), recording(loop, 2.0)
    fast, slow = surveyor.open_context(fast_seam), surveyor.open_context(slow_seam)
    fast.cmd_send(Message(b"f", A_ID))
    slow.cmd_send(Message(b"s", B_ID))
    loop.advance(0.5)
    assert (fast.state, slow.state) == ("idle", "surveying")
    surveyor.evt_pipe_recv(pipe, [A_ID + b"late", B_ID + b"in time"])
    assert fast_seam.delivered == []
    assert slow_seam.delivered == [Message(b"in time", B_ID)]
    assert ("stats.count", "dropped_late", 1) in sock_ctx.calls  # the socket is idle
    loop.advance(1.5)
    assert slow.state == "idle" and surveyor.by_id == {}
    assert loop.pending_timers() == []


def test_a_new_survey_replaces_the_old_one_and_its_responses(surveyor, loop, sock_ctx):
    pipe = FakePipe(free=5)
    surveyor.evt_pipe_added(pipe)
    seam = recording(loop)
    ctx = surveyor.open_context(seam)
    ctx.cmd_send(Message(b"one", A_ID))
    loop.advance(0.75)
    ctx.cmd_send(Message(b"two", B_ID))
    assert surveyor.by_id == {B_ID: ctx}
    loop.advance(0.75)
    assert ctx.state == "surveying"  # the second survey's own deadline: 1 s from its send
    surveyor.evt_pipe_recv(pipe, [A_ID + b"old", B_ID + b"new"])
    assert seam.delivered == [Message(b"new", B_ID)]
    assert ("stats.count", "dropped_late", 1) in sock_ctx.calls
    assert len(loop.pending_timers()) == 1


def test_closing_a_context_or_the_socket_ends_its_survey(surveyor, loop, sock_ctx):
    pipe = FakePipe(free=5)
    surveyor.evt_pipe_added(pipe)
    a_seam, b_seam = recording(loop), recording(loop)
    a, b = surveyor.open_context(a_seam), surveyor.open_context(b_seam)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    a.cmd_close()
    surveyor.evt_pipe_recv(pipe, [A_ID + b"for a closed context"])
    assert a_seam.delivered == []
    assert list(surveyor.contexts) == [b]
    a.cmd_send(Message(b"raced", A_ID))
    assert ("stats.count", "dropped_closed", 1) in a_seam.calls
    assert pipe.bodies == [b"qa", b"qb"]
    surveyor.cmd_close()
    assert b.state == "closed" and surveyor.contexts == {} and surveyor.by_id == {}
    assert loop.pending_timers() == []


def test_a_survey_ending_leaves_alone_the_other_context_that_now_uses_its_id(surveyor, loop):
    # Ids come from the socket's pool, 31 bits that wrap: a context's survey can get the
    # id of another's still running. The id is the newer survey's from then on; the end of
    # the older one (its deadline, or its context closing) must not unregister it.
    pipe = FakePipe(free=5)
    surveyor.evt_pipe_added(pipe)
    seams = [recording(loop, 0.5), recording(loop, 2.0), recording(loop, 2.0)]
    by_deadline, by_close, new = (surveyor.open_context(seam) for seam in seams)
    for context in (by_deadline, by_close, new):
        context.cmd_send(Message(b"q", A_ID))
    assert surveyor.by_id == {A_ID: new}

    loop.advance(0.5)  # the deadline of by_deadline's survey
    by_close.cmd_close()
    surveyor.evt_pipe_recv(pipe, [A_ID + b"r"])

    assert (by_deadline.state, by_close.state, new.state) == ("idle", "closed", "surveying")
    assert surveyor.by_id == {A_ID: new}
    assert seams[2].delivered == [Message(b"r", A_ID)]
    assert seams[0].delivered == seams[1].delivered == []
