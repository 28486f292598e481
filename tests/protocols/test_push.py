"""PUSH protocol machine (protocols.yaml, machine ``push``), driven with events and a
recording context.

What PUSH must do (WIRE.md, "PUSH" [seen in nng: 0,1,0,1]): each message to exactly one
pipe, round-robin over the pipes that can take it; send blocks while none can (send
capacity is the sum of the pipes' free slots, less what is already waiting); messages a
pipe could not take wait, in order, for the next pipe that can.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scaproust.core.message import Message
from scaproust.fsm.errors import MachineError
from scaproust.protocols.push import Push

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def push(ctx) -> Push:
    return Push(ctx)


def add_pipes(push: Push, *frees: int, journal: list | None = None) -> list[FakePipe]:
    pipes = [FakePipe(free=free, journal=journal) for free in frees]
    for pipe in pipes:
        push.evt_pipe_added(pipe)
    return pipes


def targets(journal: list) -> list[FakePipe]:
    return [pipe for pipe, _ in journal]


# ---------------------------------------------------------------- round robin


def test_push_round_robins_over_pipes_with_free_slots(push):
    journal: list = []
    p0, p1 = add_pipes(push, 10, 10, journal=journal)

    for n in range(4):
        push.cmd_send(b"m%d" % n)

    assert targets(journal) == [p0, p1, p0, p1]
    assert p0.bodies == [b"m0", b"m2"]
    assert p1.bodies == [b"m1", b"m3"]


def test_push_sends_the_body_of_a_message_without_its_header(push):
    # PUSH has no header of its own; a header the user gave (send_msg) is not sent, and
    # the pipe gets the body as bytes, on the inline path (the next pipe in turn) and on
    # the one that looks for another pipe alike.
    p0, p1 = add_pipes(push, 10, 0)

    push.cmd_send(Message(b"first", b"HDR1"))
    push.cmd_send(Message(b"second", b"HDR2"))  # p1 in turn is full: p0 again

    assert p0.sent == [(b"first", b""), (b"second", b"")] and p1.sent == []
    assert all(type(body) is bytes for body, _ in p0.sent)


def test_push_skips_a_full_pipe(push):
    journal: list = []
    p0, p1, p2 = add_pipes(push, 10, 0, 10, journal=journal)

    for n in range(4):
        push.cmd_send(b"m%d" % n)

    assert targets(journal) == [p0, p2, p0, p2]
    assert p1.sent == []


def test_push_moves_on_to_the_other_pipes_when_one_fills_up(push):
    journal: list = []
    p0, p1 = add_pipes(push, 1, 10, journal=journal)

    for n in range(4):
        push.cmd_send(b"m%d" % n)

    assert targets(journal) == [p0, p1, p1, p1]


def test_push_sends_each_message_to_exactly_one_pipe(push):
    pipes = add_pipes(push, 5, 5, 5)

    for n in range(9):
        push.cmd_send(b"m%d" % n)

    sent = sorted(body for pipe in pipes for body in pipe.bodies)
    assert sent == sorted(b"m%d" % n for n in range(9))


# ---------------------------------------------------------------- backlog


def test_push_backlogs_when_no_pipe_can_take_a_message(push):
    (p0,) = add_pipes(push, 0)

    push.cmd_send(b"m1")
    push.cmd_send(b"m2")

    assert p0.sent == []
    assert list(push.backlog) == [b"m1", b"m2"]


def test_push_backlogs_with_no_pipe_at_all(push, ctx):
    push.cmd_send(b"m1")

    assert list(push.backlog) == [b"m1"]
    assert ctx.calls == []


def test_push_flushes_its_backlog_in_order_when_a_pipe_becomes_ready(push, ctx):
    journal: list = []
    p0, p1 = add_pipes(push, 0, 0, journal=journal)
    for n in range(5):
        push.cmd_send(b"m%d" % n)

    p1.free = 2
    push.evt_pipe_ready(p1)
    assert [body for _, body in journal] == [b"m0", b"m1"]
    assert list(push.backlog) == [b"m2", b"m3", b"m4"]

    p0.free = p1.free = 10
    push.evt_pipe_ready(p0)
    assert [body for _, body in journal] == [b"m%d" % n for n in range(5)]
    assert not push.backlog


def test_push_flushes_its_backlog_in_order_to_a_new_pipe(push, ctx):
    for n in range(3):
        push.cmd_send(b"m%d" % n)

    (p0,) = add_pipes(push, 5)

    assert p0.bodies == [b"m0", b"m1", b"m2"]
    assert not push.backlog
    assert ctx.capacity == 2


def test_push_keeps_new_messages_behind_the_backlog(push):
    (p0,) = add_pipes(push, 0)
    push.cmd_send(b"m1")

    p0.free = 5  # a slot opened, but the ready event has not arrived yet
    push.cmd_send(b"m2")
    assert p0.sent == []

    push.evt_pipe_ready(p0)
    assert p0.bodies == [b"m1", b"m2"]


# ---------------------------------------------------------------- a drained batch


def test_a_batch_goes_to_a_lone_pipe_in_one_event_bodies_only(push):
    (p0,) = add_pipes(push, 10)

    push.cmd_send_many([b"m0", Message(b"m1", b"\x80\x00\x00\x01"), b"m2"])

    assert p0.many_calls == 1
    assert p0.sent == [(b"m0", b""), (b"m1", b""), (b"m2", b"")]
    assert not push.backlog


def test_what_a_lone_pipe_has_no_room_for_waits_in_the_backlog_in_order(push, ctx):
    (p0,) = add_pipes(push, 2)

    push.cmd_send_many([b"m0", b"m1", b"m2", b"m3"])

    assert p0.bodies == [b"m0", b"m1"]
    assert list(push.backlog) == [b"m2", b"m3"]
    p0.free = 5
    push.evt_pipe_ready(p0)
    assert p0.bodies == [b"m0", b"m1", b"m2", b"m3"]


def test_a_batch_over_several_pipes_round_robins_message_by_message(push):
    journal: list = []
    p0, p1 = add_pipes(push, 10, 10, journal=journal)

    push.cmd_send_many([b"m%d" % n for n in range(4)])

    assert targets(journal) == [p0, p1, p0, p1]
    assert p0.many_calls == p1.many_calls == 0


def test_a_batch_stays_behind_the_backlog(push):
    (p0,) = add_pipes(push, 0)
    push.cmd_send(b"m0")
    p0.free = 5  # a slot opened, but the ready event has not arrived yet

    push.cmd_send_many([b"m1", b"m2"])

    assert p0.sent == [] and p0.many_calls == 0
    assert list(push.backlog) == [b"m0", b"m1", b"m2"]


def test_a_batch_to_a_full_lone_pipe_waits_whole_in_the_backlog(push):
    (p0,) = add_pipes(push, 0)

    push.cmd_send_many([b"m0", b"m1"])

    assert p0.many_calls == 0
    assert list(push.backlog) == [b"m0", b"m1"]


def test_push_send_many_after_close_is_refused(push):
    push.cmd_close()

    with pytest.raises(MachineError) as err:
        push.cmd_send_many([b"late"])

    assert (err.value.machine, err.value.state, err.value.event) == (
        "push", "closed", "cmd_send_many")


# ---------------------------------------------------------------- send capacity


def test_push_send_capacity_is_the_sum_of_free_slots(push, ctx):
    add_pipes(push, 3, 4)

    assert ctx.capacities == [3, 7]


def test_push_send_capacity_is_the_sum_of_free_slots_minus_the_backlog(push, ctx):
    p0, p1 = add_pipes(push, 0, 0)
    for n in range(3):
        push.cmd_send(b"m%d" % n)

    p0.free = 1
    p1.free = 4
    push.evt_pipe_ready(p1)

    # 5 slots: the 3 backlogged messages took 3 of them.
    assert p0.free + p1.free == 2
    assert ctx.capacity == 2


def test_push_send_capacity_never_goes_below_zero(push, ctx):
    (p0,) = add_pipes(push, 0)
    for n in range(3):
        push.cmd_send(b"m%d" % n)

    p0.free = 1
    push.evt_pipe_ready(p0)

    assert list(push.backlog) == [b"m1", b"m2"]
    assert ctx.capacity == 0


def test_push_send_capacity_drops_to_zero_when_the_last_pipe_goes(push, ctx):
    (p0,) = add_pipes(push, 8)

    push.evt_pipe_removed(p0)

    assert ctx.capacities == [8, 0]
    assert push.pipes == []


def test_while_messages_wait_in_the_backlog_push_grants_no_credit_in_messages_or_bytes(push, ctx):
    pipe = FakePipe(free=1)
    push.evt_pipe_added(pipe)
    push.evt_pipe_removed(pipe)  # the credit was granted: the next send finds no pipe
    push.cmd_send(b"waits")
    ctx.clear()
    ctx.byte_capacities.clear()

    full = FakePipe(free=0)
    push.evt_pipe_added(full)

    assert list(push.backlog) == [b"waits"]
    assert ctx.capacities == [0]
    assert ctx.byte_capacities == [0]


# ---------------------------------------------------------------- removal and round robin


def test_push_removing_a_pipe_before_the_cursor_keeps_round_robin_order(push):
    journal: list = []
    a, b, c = add_pipes(push, 9, 9, 9, journal=journal)
    push.cmd_send(b"1")  # a
    push.cmd_send(b"2")  # b; next is c

    push.evt_pipe_removed(a)
    push.cmd_send(b"3")
    push.cmd_send(b"4")

    assert targets(journal) == [a, b, c, b]


def test_push_removing_the_next_pipe_moves_on_to_the_one_after_it(push):
    journal: list = []
    a, b, c = add_pipes(push, 9, 9, 9, journal=journal)
    push.cmd_send(b"1")  # a; next is b

    push.evt_pipe_removed(b)
    push.cmd_send(b"2")
    push.cmd_send(b"3")

    assert targets(journal) == [a, c, a]


def test_push_removing_the_last_pipe_of_the_list_wraps_round_robin_to_the_first(push):
    journal: list = []
    a, b, c = add_pipes(push, 9, 9, 9, journal=journal)
    push.cmd_send(b"1")  # a
    push.cmd_send(b"2")  # b; next is c

    push.evt_pipe_removed(c)
    push.cmd_send(b"3")
    push.cmd_send(b"4")

    assert targets(journal) == [a, b, a, b]


def test_push_removing_every_pipe_backlogs_further_messages(push):
    a, b = add_pipes(push, 9, 9)
    push.cmd_send(b"1")

    push.evt_pipe_removed(a)
    push.evt_pipe_removed(b)
    push.cmd_send(b"2")

    assert list(push.backlog) == [b"2"]

    (c,) = add_pipes(push, 9)
    assert c.bodies == [b"2"]


def test_after_the_pipe_at_the_cursor_goes_round_robin_starts_again_from_the_first_pipe(push):
    journal: list = []
    a, b = FakePipe(free=9, journal=journal), FakePipe(free=9, journal=journal)
    push.evt_pipe_added(a)
    push.evt_pipe_added(b)
    push.cmd_send(b"1")  # a; next is b, the last of the list

    push.evt_pipe_removed(b)
    c = FakePipe(free=9, journal=journal)
    push.evt_pipe_added(c)
    push.cmd_send(b"2")
    push.cmd_send(b"3")

    assert targets(journal) == [a, a, c]


OPS = st.one_of(
    st.just(("add",)),
    st.tuples(st.just("remove"), st.integers(0, 7)),
    st.just(("send",)),
    st.just(("send",)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
# Removing a pipe before the cursor: forgetting to move the cursor back serves b twice.
@example([("add",), ("add",), ("add",), ("send",), ("send",), ("remove", 0), ("send",), ("send",)])
def test_push_round_robin_stays_fair_while_pipes_come_and_go(ops):
    """Between two messages to the same pipe, every pipe present all along got one; every
    message goes out once, in the order it was sent."""
    ctx = RecordingContext()
    push = Push(ctx)
    journal: list = []
    events: list[tuple] = []  # ("add", pipe) / ("remove", pipe) / ("sent", pipe)
    pipes: list[FakePipe] = []
    sent = 0
    for op in ops:
        before = len(journal)
        if op[0] == "add":
            pipe = FakePipe(free=1000, journal=journal)
            pipes.append(pipe)
            events.append(("add", pipe))
            push.evt_pipe_added(pipe)
        elif op[0] == "remove" and pipes:
            pipe = pipes.pop(op[1] % len(pipes))
            push.evt_pipe_removed(pipe)
            events.append(("remove", pipe))
        elif op[0] == "send":
            push.cmd_send(b"%d" % sent)
            sent += 1
        events.extend(("sent", p) for p, _ in journal[before:])

    # Every message out once, in order; the rest waits in the backlog (no pipe at all).
    out = [body for _, body in journal] + list(push.backlog)
    assert out == [b"%d" % n for n in range(sent)]
    assert not push.backlog or not pipes

    # Fairness: between consecutive sends to X, each pipe present throughout got one.
    last_sent: dict[FakePipe, int] = {}
    for i, (kind, pipe) in enumerate(events):
        if kind != "sent":
            continue
        if pipe in last_sent:
            start = last_sent[pipe]
            window = events[start + 1:i]
            came_or_went = {p for k, p in window if k in ("add", "remove")}
            present = {p for k, p in events[:start] if k == "add"} - {
                p for k, p in events[:start] if k == "remove"}
            served = {p for k, p in window if k == "sent"}
            starved = present - came_or_went - served - {pipe}
            assert not starved, f"{starved} skipped between two sends to {pipe}"
        last_sent[pipe] = i


# ---------------------------------------------------------------- receiving and closing


def test_push_discards_and_counts_what_a_peer_sends(push, ctx):
    (p0,) = add_pipes(push, 1)
    ctx.clear()

    push.evt_pipe_recv(p0, [b"x", b"y"])

    assert ctx.delivered == []
    assert ctx.calls == [("stats.count", "dropped_unexpected", 2)]


def test_push_close_drops_the_backlog_and_counts_it(push, ctx):
    push.cmd_send(b"m1")
    push.cmd_send(b"m2")

    push.cmd_close()

    assert push.state == "closed"
    assert not push.backlog
    assert ctx.stats["dropped_closed"] == 2


def test_push_close_twice_is_harmless(push, ctx):
    push.cmd_close()
    push.cmd_close()

    assert push.state == "closed"
    assert ctx.calls == []


def test_push_send_after_close_raises_the_machine_error_with_its_exact_message(push):
    push.cmd_close()

    with pytest.raises(MachineError) as err:
        push.cmd_send(b"late")

    assert str(err.value) == "push: Can't trigger event cmd_send from state closed!"
    assert (err.value.machine, err.value.state, err.value.event) == ("push", "closed", "cmd_send")
    assert push.state == "closed"
    assert not push.backlog


@pytest.mark.parametrize("event", ["evt_pipe_added", "evt_pipe_removed", "evt_pipe_ready"])
def test_push_refuses_pipe_events_once_closed(push, event):
    push.cmd_close()

    with pytest.raises(MachineError, match=f"push: Can't trigger event {event} from state closed!"):
        getattr(push, event)(FakePipe())


# ---------------------------------------------------------------- priorities


def test_push_prefers_the_best_send_priority_and_round_robins_within_it(push):
    journal: list = []
    low = FakePipe(free=10, send_priority=9, journal=journal)
    high_a = FakePipe(free=2, send_priority=3, journal=journal)
    high_b = FakePipe(free=1, send_priority=3, journal=journal)
    for pipe in (low, high_a, high_b):
        push.evt_pipe_added(pipe)

    for n in range(5):
        push.cmd_send(b"m%d" % n)

    # The two priority-3 pipes alternate until both are full; only then the worse one.
    assert targets(journal) == [high_a, high_b, high_a, low, low]


def test_when_the_best_priority_pipe_is_full_push_round_robins_over_the_next_best(push):
    journal: list = []
    best = FakePipe(free=0, send_priority=1, journal=journal)
    b = FakePipe(free=9, send_priority=8, journal=journal)
    c = FakePipe(free=9, send_priority=8, journal=journal)
    for pipe in (best, b, c):
        push.evt_pipe_added(pipe)

    for n in range(4):
        push.cmd_send(b"m%d" % n)

    assert targets(journal) == [b, c, b, c]


def test_push_returns_to_the_better_pipe_as_soon_as_it_is_ready_again(push):
    journal: list = []
    low = FakePipe(free=10, send_priority=16, journal=journal)
    high = FakePipe(free=1, send_priority=1, journal=journal)
    push.evt_pipe_added(low)
    push.evt_pipe_added(high)
    push.cmd_send(b"a")
    push.cmd_send(b"b")
    high.free = 1
    push.evt_pipe_ready(high)
    push.cmd_send(b"c")
    assert targets(journal) == [high, low, high]
