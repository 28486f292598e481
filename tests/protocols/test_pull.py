"""PULL protocol machine (protocols.yaml, machine ``pull``), driven with events and a
recording context.

What PULL must do (WIRE.md, "PULL"): fair-queue messages from every PUSH, each pipe's
messages in the order they arrived, and drop nothing. It never sends, so it never sets a
send capacity. (Strict alternation between pipes is not asserted: nng does not promise it.)
"""

from __future__ import annotations

import pytest

from scaproust.fsm.errors import MachineError
from scaproust.protocols.pull import Pull

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def pull(ctx) -> Pull:
    return Pull(ctx)


def test_pull_delivers_messages_in_the_order_they_arrive(pull, ctx):
    p0 = FakePipe()
    pull.evt_pipe_added(p0)

    pull.evt_pipe_recv(p0, [b"1", b"2", b"3"])
    pull.evt_pipe_recv(p0, [b"4"])

    assert ctx.calls == [("deliver", [b"1", b"2", b"3"]), ("deliver", [b"4"])]


def test_pull_delivers_from_every_pipe_and_discards_nothing(pull, ctx):
    p0, p1 = FakePipe(), FakePipe()
    pull.evt_pipe_added(p0)
    pull.evt_pipe_added(p1)

    pull.evt_pipe_recv(p0, [b"a1", b"a2"])
    pull.evt_pipe_recv(p1, [b"b1"])
    pull.evt_pipe_recv(p0, [b"a3"])
    pull.evt_pipe_recv(p1, [b""])  # zero-length messages are legal (WIRE.md)

    assert ctx.delivered == [b"a1", b"a2", b"b1", b"a3", b""]
    assert ctx.stats.snapshot() == {}


def test_pull_keeps_delivering_from_a_pipe_it_was_never_told_about(pull, ctx):
    pull.evt_pipe_recv(FakePipe(), [b"x"])

    assert ctx.delivered == [b"x"]


def test_pull_does_nothing_when_pipes_come_go_or_become_ready(pull, ctx):
    p0 = FakePipe(free=5)

    pull.evt_pipe_added(p0)
    pull.evt_pipe_ready(p0)
    pull.evt_pipe_removed(p0)

    assert pull.state == "open"
    assert ctx.calls == []
    assert p0.sent == []


def test_pull_close_is_final_and_a_second_close_is_harmless(pull, ctx):
    pull.cmd_close()
    pull.cmd_close()

    assert pull.state == "closed"
    assert ctx.calls == []


def test_pull_has_no_send_event_at_all(pull):
    # The facade refuses send() on a PULL before anything reaches the machine.
    assert not hasattr(pull, "cmd_send")


@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("evt_pipe_added", (FakePipe(),)),
        ("evt_pipe_removed", (FakePipe(),)),
        ("evt_pipe_ready", (FakePipe(),)),
        ("evt_pipe_recv", (FakePipe(), [b"late"])),
    ],
)
def test_pull_refuses_pipe_events_once_closed_with_the_machine_error(pull, ctx, event, args):
    pull.cmd_close()

    with pytest.raises(MachineError) as err:
        getattr(pull, event)(*args)

    assert str(err.value) == f"pull: Can't trigger event {event} from state closed!"
    assert ctx.delivered == []


def test_pull_delivers_with_the_receiving_pipe_priority():
    ctx = RecordingContext()
    pull = Pull(ctx)
    pipe = FakePipe(recv_priority=3)
    pull.evt_pipe_added(pipe)
    pull.evt_pipe_recv(pipe, [b"x"])
    assert ctx.delivered == [b"x"] and ctx.priorities == [3]
