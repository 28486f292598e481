"""More of REP and RESPONDENT, raw and cooked (protocols.yaml, machines ``rep_raw``, ``rep``,
``respondent_raw``, ``respondent``; protocols/_backtrace.py): each keeps answering, a
message from a pipe closed for a malformed backtrace is counted, and a header of just the
pipe word is routed (written to kill the mutants of ``make mutate`` that survived
test_rep.py and test_respondent.py).
"""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust.core.options import Options
from scaproust.protocols._headers import id_word, pipe_word
from scaproust.protocols.rep import Rep, RepRaw
from scaproust.protocols.respondent import Respondent, RespondentRaw

from .fakes import FakePipe, RecordingContext

ID = id_word(0x2A)


@pytest.fixture(params=[(RepRaw, "rep"), (Rep, "rep"), (RespondentRaw, "respondent"),
                        (Respondent, "respondent")],
                ids=["rep_raw", "rep", "respondent_raw", "respondent"])
def machine(request):
    cls, protocol = request.param
    ctx = RecordingContext()
    ctx.options = Options(protocol)
    return cls(ctx)


@pytest.fixture
def ctx(machine) -> RecordingContext:
    return machine.ctx


def test_it_answers_one_request_after_another_on_the_same_pipe(machine, ctx):
    pipe = FakePipe(free=5)
    machine.evt_pipe_added(pipe)

    for n in range(3):
        machine.evt_pipe_recv(pipe, [ID + b"q%d" % n])
        (request,) = ctx.delivered[-1:]
        machine.cmd_send(sp.Message(b"a%d" % n, request.header))

    assert machine.state == "open"
    assert pipe.sent == [(b"a0", ID), (b"a1", ID), (b"a2", ID)]


def test_messages_from_a_pipe_closed_for_a_malformed_backtrace_are_dropped_and_counted(
        machine, ctx):
    bad = FakePipe(free=5)
    machine.evt_pipe_added(bad)
    machine.evt_pipe_recv(bad, [pipe_word(1)])  # no id word: malformed, the pipe is closed
    assert ctx.rejected == [bad]

    machine.evt_pipe_recv(bad, [ID + b"late", ID + b"later"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_rejected"] == 2


def test_an_answer_whose_header_is_only_the_pipe_word_goes_to_that_pipe_bare(machine, ctx):
    pipe = FakePipe(free=5)
    machine.evt_pipe_added(pipe)

    machine.cmd_send(sp.Message(b"bare", pipe_word(pipe.id)))

    assert pipe.sent == [(b"bare", b"")]
    assert ctx.stats["dropped_no_route"] == 0
