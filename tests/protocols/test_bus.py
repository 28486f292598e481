"""BUS protocol machines, raw and cooked (protocols.yaml, machines ``bus_raw`` and ``bus``),
driven with events and a recording context: no pipes, sockets, threads or clocks.

What BUS must do (WIRE.md, "BUS" [seen]): each message to every directly connected peer
(a pipe that cannot take it misses it, counted), no echo, no forwarding, never block. A raw
bus hands each message over under the id of its pipe (a local-only header) and, sending,
skips the pipe named by the first header word (how a bus device avoids echo).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaproust.core.channel import UNBOUNDED
from scaproust.core.message import Message
from scaproust.fsm.errors import MachineError
from scaproust.protocols._headers import pipe_word
from scaproust.protocols.bus import Bus, BusRaw

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def bus(ctx) -> Bus:
    return Bus(ctx)


@pytest.fixture
def raw(ctx) -> BusRaw:
    return BusRaw(ctx)


def add_pipes(machine, *frees: int, journal: list | None = None) -> list[FakePipe]:
    pipes = [FakePipe(free=free, journal=journal) for free in frees]
    for pipe in pipes:
        machine.evt_pipe_added(pipe)
    return pipes


# ---------------------------------------------------------------- send credit


@pytest.mark.parametrize("machine", [Bus, BusRaw])
def test_a_bus_grants_unbounded_send_credit_from_the_start_and_never_changes_it(ctx, machine):
    bus = machine(ctx)
    assert ctx.calls == [("set_send_capacity", UNBOUNDED)]
    assert ctx.byte_capacities == [UNBOUNDED]
    ctx.clear()

    p1, p2 = add_pipes(bus, 0, 1)
    bus.cmd_send(b"m")
    p2.free = 0
    bus.evt_pipe_ready(p2)
    bus.evt_pipe_removed(p1)

    assert ctx.capacities == []


def test_bus_sends_with_no_pipe_and_the_message_is_simply_gone(bus, ctx):
    ctx.clear()

    bus.cmd_send(b"into the void")

    assert not bus.backlog
    assert ctx.calls == []


# ---------------------------------------------------------------- sending


def test_bus_sends_each_message_to_every_pipe_once_in_arrival_order(bus):
    journal: list = []
    p1, p2, p3 = add_pipes(bus, 5, 5, 5, journal=journal)

    bus.cmd_send(b"one")
    bus.cmd_send(b"two")

    assert [(pipe, body) for pipe, body in journal] == [
        (p1, b"one"), (p2, b"one"), (p3, b"one"), (p1, b"two"), (p2, b"two"), (p3, b"two"),
    ]
    assert p1.sent == [(b"one", b""), (b"two", b"")]


def test_bus_skips_a_full_pipe_and_counts_the_miss(bus, ctx):
    p1, p2, p3 = add_pipes(bus, 1, 0, 2)

    bus.cmd_send(b"a")
    bus.cmd_send(b"b")

    assert p1.bodies == [b"a"]
    assert p2.bodies == []
    assert p3.bodies == [b"a", b"b"]
    assert ctx.stats["dropped_pipe_full"] == 3  # p2 missed both, p1 missed b


def test_bus_never_keeps_a_missed_message_for_later(bus):
    (p1,) = add_pipes(bus, 0)
    bus.cmd_send(b"missed")

    p1.free = 3
    bus.evt_pipe_ready(p1)

    assert p1.sent == []
    assert not bus.backlog


def test_bus_stops_sending_to_a_removed_pipe(bus):
    p1, p2 = add_pipes(bus, 5, 5)

    bus.evt_pipe_removed(p1)
    bus.cmd_send(b"after")

    assert p1.sent == []
    assert p2.bodies == [b"after"]


def test_bus_ignores_the_removal_of_a_pipe_it_never_had(bus):
    (p1,) = add_pipes(bus, 5)

    bus.evt_pipe_removed(FakePipe())
    bus.cmd_send(b"still")

    assert p1.bodies == [b"still"]


def test_cooked_bus_sends_only_the_body_of_a_message_and_ignores_its_header(bus):
    p1, p2 = add_pipes(bus, 5, 5)

    bus.cmd_send(Message(b"body", pipe_word(p1.id)))

    assert p1.sent == [(b"body", b"")]
    assert p2.sent == [(b"body", b"")]


# ---------------------------------------------------------------- receiving


def test_cooked_bus_delivers_bodies_at_the_pipes_priority_and_sends_nothing_on(ctx):
    bus = Bus(ctx)
    p1 = FakePipe(free=5, recv_priority=3)
    p2 = FakePipe(free=5)
    bus.evt_pipe_added(p1)
    bus.evt_pipe_added(p2)
    ctx.clear()

    bus.evt_pipe_recv(p1, [b"x", b""])

    assert ctx.delivered == [b"x", b""]
    assert ctx.priorities == [3]
    assert p1.sent == [] and p2.sent == []  # no echo, no forwarding


def test_raw_bus_delivers_each_message_under_the_id_of_its_pipe(raw, ctx):
    p1, p2 = add_pipes(raw, 5, 5)
    ctx.clear()

    raw.evt_pipe_recv(p2, [b"x", b"y"])

    assert ctx.delivered == [Message(b"x", pipe_word(p2.id)), Message(b"y", pipe_word(p2.id))]
    assert p1.sent == [] and p2.sent == []


# ---------------------------------------------------------------- raw sending


def test_raw_bus_sends_to_every_pipe_but_the_one_its_header_names_with_no_header_on_the_wire(raw):
    p1, p2, p3 = add_pipes(raw, 5, 5, 5)

    raw.cmd_send(Message(b"reflected", pipe_word(p2.id)))

    assert p1.sent == [(b"reflected", b"")]
    assert p2.sent == []
    assert p3.sent == [(b"reflected", b"")]


def test_raw_bus_reflects_what_it_received_to_every_other_pipe_as_a_device_does(raw, ctx):
    p1, p2, p3 = add_pipes(raw, 5, 5, 5)
    raw.evt_pipe_recv(p1, [b"hello"])

    (msg,) = ctx.delivered
    raw.cmd_send(msg)

    assert p1.sent == []
    assert p2.bodies == [b"hello"] and p3.bodies == [b"hello"]


def test_raw_bus_sends_to_every_pipe_when_the_header_names_no_pipe_it_has(raw):
    p1, p2 = add_pipes(raw, 5, 5)

    raw.cmd_send(Message(b"m", pipe_word(0x7FFFFFF0)))
    raw.cmd_send(b"plain bytes")
    raw.cmd_send(Message(b"short header", b"\x00\x01"))

    assert p1.bodies == p2.bodies == [b"m", b"plain bytes", b"short header"]


def test_raw_bus_uses_only_the_first_word_of_a_longer_header(raw):
    p1, p2 = add_pipes(raw, 5, 5)

    raw.cmd_send(Message(b"m", pipe_word(p1.id) + pipe_word(p2.id)))

    assert p1.sent == []
    assert p2.sent == [(b"m", b"")]


def test_raw_bus_does_not_count_the_skipped_sender_as_a_miss(raw, ctx):
    p1, p2 = add_pipes(raw, 0, 5)

    raw.cmd_send(Message(b"m", pipe_word(p1.id)))

    assert p2.bodies == [b"m"]
    assert ctx.stats["dropped_pipe_full"] == 0


@given(frees=st.lists(st.integers(0, 2), min_size=0, max_size=6), sender=st.integers(-1, 5),
       count=st.integers(1, 4))
def test_raw_bus_gives_every_other_pipe_each_message_while_it_has_room(frees, sender, count):
    ctx = RecordingContext()
    raw = BusRaw(ctx)
    pipes = add_pipes(raw, *frees)
    header = pipe_word(pipes[sender].id) if 0 <= sender < len(pipes) else b""
    bodies = [b"m%d" % n for n in range(count)]

    for body in bodies:
        raw.cmd_send(Message(body, header))

    missed = 0
    for index, (pipe, free) in enumerate(zip(pipes, frees, strict=True)):
        if index == sender:
            assert pipe.sent == []
            continue
        assert pipe.bodies == bodies[:free]
        missed += max(0, count - free)
    assert ctx.stats["dropped_pipe_full"] == missed


# ---------------------------------------------------------------- closing


@pytest.mark.parametrize("machine", [Bus, BusRaw])
@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("evt_pipe_added", (FakePipe(),)),
        ("evt_pipe_removed", (FakePipe(),)),
        ("evt_pipe_ready", (FakePipe(),)),
        ("evt_pipe_recv", (FakePipe(), [b"x"])),
        ("cmd_send", (b"x",)),
    ],
)
def test_a_closed_bus_refuses_every_event_but_close(ctx, machine, event, args):
    bus = machine(ctx)
    bus.cmd_close()
    bus.cmd_close()

    with pytest.raises(MachineError, match=f"Can't trigger event {event} from state closed"):
        getattr(bus, event)(*args)
    assert bus.state == "closed"
