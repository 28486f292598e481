"""PUB protocol machine (protocols.yaml, machine ``pub``; raw and cooked alike), driven
with events and a recording context.

What PUB must do (WIRE.md, "PUB"): every message to every connected SUB that can take it,
never blocking; a SUB whose queue is full misses the message (counted), so a slow
subscriber costs no memory at the publisher. A SUB never writes: data arriving at a PUB
closes that pipe (nng closes it, nanomsg aborts), with a log line.

Test list:
- fan-out: every pipe gets every message, in order; only the body goes out
- never blocks: unbounded credit at creation, never revoked as pipes come, fill up or go
- slow subscribers: a full pipe misses the message, counted per pipe; it gets the next
  one once it has room; nobody connected: dropped and counted
- misbehaving SUB: data closes that pipe, logged once, counted; nothing more is published
  to it; its removal is handled
- close, and events after close
- property: each message reaches exactly the pipes present with room at that moment
"""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scaproust as sp
from scaproust.core.channel import UNBOUNDED
from scaproust.core.pipe import JOIN_MAX
from scaproust.fsm.errors import MachineError
from scaproust.protocols.pub import Pub

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def pub(ctx) -> Pub:
    return Pub(ctx)


def add_pipes(pub: Pub, *frees: int, journal: list | None = None) -> list[FakePipe]:
    pipes = [FakePipe(free=free, journal=journal) for free in frees]
    for pipe in pipes:
        pub.evt_pipe_added(pipe)
    return pipes


# ---------------------------------------------------------------- fan-out


def test_pub_sends_every_message_to_every_pipe_in_order(pub):
    p0, p1, p2 = add_pipes(pub, 10, 10, 10)

    for n in range(3):
        pub.cmd_send(b"m%d" % n)

    for pipe in (p0, p1, p2):
        assert pipe.bodies == [b"m0", b"m1", b"m2"]


def test_pub_sends_the_same_body_object_to_every_pipe(pub):
    p0, p1 = add_pipes(pub, 1, 1)
    body = b"x" * 100_000

    pub.cmd_send(body)

    assert p0.sent[0][0] is body and p1.sent[0][0] is body  # no copy per subscriber


def test_pub_sends_only_the_body_of_a_message_with_no_header(pub):
    (p0,) = add_pipes(pub, 5)

    pub.cmd_send(sp.Message(b"body", b"\x80\x00\x00\x01"))
    pub.cmd_send(b"")  # zero-length messages are legal (WIRE.md)

    assert p0.sent == [(b"body", b""), (b"", b"")]


def test_pub_stops_sending_to_a_removed_pipe(pub):
    p0, p1 = add_pipes(pub, 10, 10)
    pub.cmd_send(b"both")

    pub.evt_pipe_removed(p0)
    pub.cmd_send(b"p1 only")

    assert p0.bodies == [b"both"]
    assert p1.bodies == [b"both", b"p1 only"]


def test_pub_sends_to_a_pipe_only_from_the_message_after_it_arrives(pub):
    (p0,) = add_pipes(pub, 10)
    pub.cmd_send(b"before")

    (p1,) = add_pipes(pub, 10)
    pub.cmd_send(b"after")

    assert p0.bodies == [b"before", b"after"]
    assert p1.bodies == [b"after"]  # no backlog: PUB keeps nothing for latecomers


# ---------------------------------------------------------------- never blocks


def test_pub_grants_unbounded_send_credit_at_creation(ctx):
    Pub(ctx)

    assert ctx.capacities == [UNBOUNDED]
    assert ctx.byte_capacities == [UNBOUNDED]


def test_pub_send_credit_does_not_depend_on_the_pipes(pub, ctx):
    p0, p1 = add_pipes(pub, 0, 1)
    pub.cmd_send(b"m")
    pub.evt_pipe_ready(p0)
    pub.evt_pipe_removed(p0)
    pub.evt_pipe_removed(p1)
    pub.cmd_send(b"nobody")

    assert ctx.capacities == [UNBOUNDED]  # stated once, never revoked


# ---------------------------------------------------------------- slow subscribers


def test_pub_skips_a_full_pipe_and_counts_the_dropped_message(pub, ctx):
    fast, slow = add_pipes(pub, 10, 0)

    pub.cmd_send(b"m0")
    pub.cmd_send(b"m1")

    assert fast.bodies == [b"m0", b"m1"]
    assert slow.sent == []
    assert ctx.stats["dropped_slow_subscriber"] == 2


def test_pub_counts_one_drop_per_pipe_that_missed_a_message(pub, ctx):
    add_pipes(pub, 0, 0, 5)

    pub.cmd_send(b"m")

    assert ctx.calls[-1] == ("stats.count", "dropped_slow_subscriber", 2)


def test_pub_a_slow_pipe_loses_what_it_could_not_take_and_gets_the_next_message(pub, ctx):
    (slow,) = add_pipes(pub, 2)
    for n in range(5):
        pub.cmd_send(b"m%d" % n)

    slow.free = 1  # its queue drained a little
    pub.evt_pipe_ready(slow)
    pub.cmd_send(b"m5")

    assert slow.bodies == [b"m0", b"m1", b"m5"]  # m2..m4 lost, nothing replayed
    assert ctx.stats["dropped_slow_subscriber"] == 3


def test_pub_with_no_subscriber_drops_the_message_and_counts_it(pub, ctx):
    pub.cmd_send(b"into the void")

    assert ctx.stats["dropped_no_subscriber"] == 1
    assert not pub.backlog


def test_pub_counts_nothing_when_every_pipe_takes_the_message(pub, ctx):
    add_pipes(pub, 1, 1)
    ctx.clear()

    pub.cmd_send(b"m")

    assert ctx.calls == []


# ---------------------------------------------------------------- a drained batch


def test_a_batch_goes_to_every_pipe_in_one_event_and_each_misses_what_it_has_no_room_for(
        pub, ctx):
    roomy, short, full = add_pipes(pub, 10, 2, 0)
    ctx.clear()

    pub.cmd_send_many([b"m0", sp.Message(b"m1", b"\x80\x00\x00\x01"), b"m2"])

    assert roomy.bodies == [b"m0", b"m1", b"m2"] and roomy.many_calls == 1
    assert short.bodies == [b"m0", b"m1"] and short.many_calls == 1
    assert full.sent == [] and full.many_calls == 0  # not even asked
    assert [header for _, header in roomy.sent] == [b"", b"", b""]  # bodies only
    assert ctx.calls == [("stats.count", "dropped_slow_subscriber", 4)]


def test_a_batch_with_no_subscriber_is_dropped_and_counted_once_per_message(pub, ctx):
    ctx.clear()
    pub.cmd_send_many([b"a", b"b", b"c"])

    assert ctx.calls == [("stats.count", "dropped_no_subscriber", 3)]


def test_a_batch_every_pipe_takes_counts_nothing(pub, ctx):
    add_pipes(pub, 5, 5)
    ctx.clear()

    pub.cmd_send_many([b"a", b"b"])

    assert ctx.calls == []


def test_a_batch_with_a_body_too_large_to_join_goes_message_by_message(pub, ctx):
    big = b"L" * (JOIN_MAX + 1)
    (pipe,) = add_pipes(pub, 10)

    pub.cmd_send_many([b"a", big, b"c"])

    assert pipe.bodies == [b"a", big, b"c"] and pipe.many_calls == 0


def test_a_batch_of_bodies_of_exactly_join_max_bytes_goes_in_one_event(pub):
    (pipe,) = add_pipes(pub, 10)

    pub.cmd_send_many([b"J" * JOIN_MAX, b"j"])

    assert pipe.many_calls == 1 and pipe.bodies == [b"J" * JOIN_MAX, b"j"]


# ---------------------------------------------------------------- a SUB that writes


def test_pub_closes_a_pipe_that_sends_data_and_logs_it(pub, ctx, caplog):
    p0, p1 = add_pipes(pub, 10, 10)
    ctx.clear()

    with caplog.at_level(logging.WARNING, logger="scaproust.protocol"):
        pub.evt_pipe_recv(p0, [b"a subscription?"])

    assert ctx.rejected == [p0]
    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert ctx.stats["pipes_rejected"] == 1
    assert f"pipe {p0.id} closed: a SUB peer sent 1 message(s) to this PUB" in caplog.text


def test_pub_logs_and_rejects_a_misbehaving_pipe_once(pub, ctx, caplog):
    (p0,) = add_pipes(pub, 10)

    with caplog.at_level(logging.WARNING, logger="scaproust.protocol"):
        pub.evt_pipe_recv(p0, [b"1", b"2"])
        pub.evt_pipe_recv(p0, [b"3"])  # read before the deferred close ran

    assert ctx.rejected == [p0]
    assert len(caplog.records) == 1
    assert ctx.stats["dropped_unexpected"] == 3


def test_pub_publishes_nothing_more_to_a_pipe_it_rejected(pub):
    bad, good = add_pipes(pub, 10, 10)

    pub.evt_pipe_recv(bad, [b"x"])
    pub.cmd_send(b"m")

    assert bad.sent == []
    assert good.bodies == [b"m"]


def test_pub_forgets_a_rejected_pipe_when_it_is_removed(pub, ctx):
    (bad,) = add_pipes(pub, 10)
    pub.evt_pipe_recv(bad, [b"x"])

    pub.evt_pipe_removed(bad)

    assert pub.pipes == []
    pub.cmd_send(b"m")
    assert ctx.stats["dropped_no_subscriber"] == 1


def test_pub_rejects_data_from_a_pipe_it_was_never_told_about(pub, ctx):
    stranger = FakePipe()

    pub.evt_pipe_recv(stranger, [b"x"])

    assert ctx.rejected == [stranger]


def test_a_pub_keeps_nothing_of_a_pipe_it_rejected_once_that_pipe_is_removed():
    ctx = RecordingContext()
    pub = Pub(ctx)
    pipe = FakePipe(free=5)
    pub.evt_pipe_added(pipe)
    pub.evt_pipe_recv(pipe, [b"a SUB never writes"])  # rejected
    pub.evt_pipe_removed(pipe)
    ctx.clear()  # the recorded reject_pipe call holds the pipe too
    gone = weakref.ref(pipe)

    del pipe
    gc.collect()

    assert gone() is None  # no per-pipe memory left behind


# ---------------------------------------------------------------- close


def test_pub_close_is_final_and_a_second_close_is_harmless(pub, ctx):
    add_pipes(pub, 1)
    ctx.clear()

    pub.cmd_close()
    pub.cmd_close()

    assert pub.state == "closed"
    assert ctx.calls == []


@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("cmd_send", (b"late",)),
        ("evt_pipe_added", (FakePipe(),)),
        ("evt_pipe_removed", (FakePipe(),)),
        ("evt_pipe_ready", (FakePipe(),)),
        ("evt_pipe_recv", (FakePipe(), [b"late"])),
    ],
)
def test_pub_refuses_events_once_closed_with_the_machine_error(pub, event, args):
    pub.cmd_close()

    with pytest.raises(MachineError) as err:
        getattr(pub, event)(*args)

    assert str(err.value) == f"pub: Can't trigger event {event} from state closed!"


def test_pub_has_no_subscription_events(pub):
    assert not hasattr(pub, "cmd_subscribe") and not hasattr(pub, "cmd_unsubscribe")


# ---------------------------------------------------------------- property

OPS = st.one_of(
    st.just(("add",)),
    st.tuples(st.just("remove"), st.integers(0, 7)),
    st.tuples(st.just("room"), st.integers(0, 7), st.integers(0, 3)),
    st.just(("send",)),
    st.just(("send",)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_pub_each_message_reaches_exactly_the_pipes_present_with_room(ops):
    ctx = RecordingContext()
    pub = Pub(ctx)
    pipes: list[FakePipe] = []
    expected: dict[FakePipe, list[bytes]] = {}
    sent = missed = nobody = 0
    for op in ops:
        if op[0] == "add":
            pipe = FakePipe(free=2)
            pipes.append(pipe)
            expected[pipe] = []
            pub.evt_pipe_added(pipe)
        elif op[0] == "remove" and pipes:
            pub.evt_pipe_removed(pipes.pop(op[1] % len(pipes)))
        elif op[0] == "room" and pipes:
            pipe = pipes[op[1] % len(pipes)]
            pipe.free += op[2]
            pub.evt_pipe_ready(pipe)
        elif op[0] == "send":
            body = b"%d" % sent
            sent += 1
            if not pipes:
                nobody += 1
            for pipe in pipes:
                if pipe.free:
                    expected[pipe].append(body)
                else:
                    missed += 1
            pub.cmd_send(body)

    assert {pipe: pipe.bodies for pipe in expected} == expected
    assert ctx.stats["dropped_slow_subscriber"] == missed
    assert ctx.stats["dropped_no_subscriber"] == nobody
    assert ctx.capacities == [UNBOUNDED]
