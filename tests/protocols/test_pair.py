"""PAIR v0 protocol machine (protocols.yaml, machine ``pair``), driven with events and a
recording context: no pipes, sockets, threads or clocks.

What PAIR v0 must do (WIRE.md, "PAIR v0" [seen]): one peer at a time; a second pipe is
closed and the first stays; send waits for a peer (send capacity is the peer's free
slots); what was accepted while no peer could take it goes to the next peer, in order.
"""

from __future__ import annotations

import pytest

from scaproust.core.message import Message
from scaproust.fsm.errors import MachineError
from scaproust.protocols.pair import Pair

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def pair(ctx) -> Pair:
    return Pair(ctx)


# ---------------------------------------------------------------- peers


def test_pair_starts_unpaired_and_grants_no_capacity(pair, ctx):
    assert pair.state == "unpaired"
    assert pair.peer is None
    assert ctx.calls == []


def test_pair_takes_the_first_pipe_as_its_peer_and_grants_its_free_slots(pair, ctx):
    p1 = FakePipe(free=3)

    pair.evt_pipe_added(p1)

    assert pair.state == "paired"
    assert pair.peer is p1
    assert ctx.calls == [("set_send_capacity", 3)]


def test_pair_rejects_a_second_peer_and_keeps_the_first(pair, ctx):
    p1, p2 = FakePipe(free=3), FakePipe(free=5)
    pair.evt_pipe_added(p1)
    ctx.clear()

    pair.evt_pipe_added(p2)

    assert pair.state == "paired"
    assert pair.peer is p1
    assert ctx.rejected == [p2]
    assert ctx.stats["pipes_rejected"] == 1
    assert ctx.capacities == []  # the rejected pipe's slots are not the user's


def test_pair_forgets_its_peer_on_removal_and_takes_the_next_pipe(pair, ctx):
    p1, p2 = FakePipe(free=3), FakePipe(free=7)
    pair.evt_pipe_added(p1)

    pair.evt_pipe_removed(p1)

    assert pair.state == "unpaired"
    assert pair.peer is None
    assert ctx.capacity == 0

    pair.evt_pipe_added(p2)

    assert pair.state == "paired"
    assert pair.peer is p2
    assert ctx.capacity == 7
    assert ctx.rejected == []


def test_pair_keeps_its_peer_when_a_rejected_pipe_is_removed(pair, ctx):
    p1, p2 = FakePipe(free=3), FakePipe(free=5)
    pair.evt_pipe_added(p1)
    pair.evt_pipe_added(p2)
    ctx.clear()

    pair.evt_pipe_removed(p2)

    assert pair.state == "paired"
    assert pair.peer is p1
    assert ctx.calls == []


def test_pair_ignores_a_removal_while_unpaired(pair, ctx):
    pair.evt_pipe_removed(FakePipe())

    assert pair.state == "unpaired"
    assert ctx.calls == []


def test_a_pair_forgets_a_removed_peer_grants_nothing_and_takes_the_next_pipe(pair, ctx):
    first = FakePipe(free=3)
    pair.evt_pipe_added(first)

    pair.evt_pipe_removed(first)

    assert pair.state == "unpaired"
    assert pair.peer is None
    assert ctx.capacity == 0
    assert ctx.byte_capacities[-1] == 0
    second = FakePipe(free=2)
    pair.evt_pipe_added(second)
    assert pair.peer is second
    assert ctx.rejected == []
    assert ctx.capacity == 2


def test_a_pair_keeps_its_peer_when_a_rejected_pipe_goes_away(pair, ctx):
    peer, other = FakePipe(free=3), FakePipe(free=3)
    pair.evt_pipe_added(peer)
    pair.evt_pipe_added(other)
    ctx.clear()

    pair.evt_pipe_removed(other)

    assert pair.state == "paired"
    assert pair.peer is peer
    assert ctx.calls == []


def test_a_removal_while_unpaired_changes_nothing(pair, ctx):
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)
    ctx.clear()

    pair.evt_pipe_removed(gone)

    assert pair.state == "unpaired"
    assert ctx.calls == []
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new


# ---------------------------------------------------------------- send capacity


def test_pair_send_capacity_is_zero_once_the_peer_is_gone(pair, ctx):
    p1 = FakePipe(free=4)
    pair.evt_pipe_added(p1)
    pair.evt_pipe_removed(p1)

    assert ctx.capacities == [4, 0]


def test_pair_send_capacity_follows_the_peers_free_slots_when_it_is_ready(pair, ctx):
    p1 = FakePipe(free=2)
    pair.evt_pipe_added(p1)
    pair.cmd_send(b"a")
    pair.cmd_send(b"b")
    assert p1.free == 0

    p1.free = 6  # its queue drained
    pair.evt_pipe_ready(p1)

    assert ctx.capacities == [2, 6]


def test_pair_ignores_a_ready_signal_from_a_pipe_that_is_not_its_peer(pair, ctx):
    p1, p2 = FakePipe(free=2), FakePipe(free=9)
    pair.evt_pipe_added(p1)
    pair.evt_pipe_added(p2)
    ctx.clear()

    pair.evt_pipe_ready(p2)

    assert ctx.calls == []


# ---------------------------------------------------------------- sending


def test_a_pair_ignores_readiness_while_unpaired_and_pairs_with_the_next_pipe(pair, ctx):
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)

    pair.evt_pipe_ready(gone)

    assert pair.state == "unpaired"
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new
    assert ctx.rejected == []


def test_pair_sends_to_its_peer_in_order(pair, ctx):
    p1 = FakePipe(free=3)
    pair.evt_pipe_added(p1)

    for body in (b"one", b"two", b"three"):
        pair.cmd_send(body)

    assert p1.sent == [(b"one", b""), (b"two", b""), (b"three", b"")]
    assert not pair.backlog


def test_pair_sends_only_the_body_of_a_message(pair):
    p1 = FakePipe(free=1)
    pair.evt_pipe_added(p1)

    pair.cmd_send(Message(b"body"))

    assert p1.sent == [(b"body", b"")]


def test_pair_holds_messages_sent_without_a_peer_and_gives_them_to_the_next_peer_in_order(
    pair, ctx
):
    pair.cmd_send(b"m1")
    pair.cmd_send(b"m2")
    assert list(pair.backlog) == [b"m1", b"m2"]

    p1 = FakePipe(free=5)
    pair.evt_pipe_added(p1)

    assert p1.bodies == [b"m1", b"m2"]
    assert not pair.backlog
    assert ctx.capacity == 3  # 5 slots, 2 taken by the backlog


def test_pair_backlogs_when_its_peer_is_full_and_flushes_in_order_when_it_is_ready(pair, ctx):
    p1 = FakePipe(free=1)
    pair.evt_pipe_added(p1)

    for body in (b"m1", b"m2", b"m3"):
        pair.cmd_send(body)

    assert p1.bodies == [b"m1"]
    assert list(pair.backlog) == [b"m2", b"m3"]

    p1.free = 1
    pair.evt_pipe_ready(p1)
    assert p1.bodies == [b"m1", b"m2"]
    assert ctx.capacity == 0  # no slot left, one message still waiting

    p1.free = 4
    pair.evt_pipe_ready(p1)
    assert p1.bodies == [b"m1", b"m2", b"m3"]
    assert ctx.capacity == 3


def test_pair_keeps_new_messages_behind_the_backlog(pair):
    p1 = FakePipe(free=1)
    pair.evt_pipe_added(p1)
    pair.cmd_send(b"m1")
    pair.cmd_send(b"m2")  # backlogged: p1 is full

    p1.free = 5  # a slot opened, but the ready event has not arrived yet
    pair.cmd_send(b"m3")

    assert p1.bodies == [b"m1"]
    assert list(pair.backlog) == [b"m2", b"m3"]

    pair.evt_pipe_ready(p1)
    assert p1.bodies == [b"m1", b"m2", b"m3"]


def test_pair_gives_a_backlog_left_by_a_departed_peer_to_the_next_peer_in_order(pair, ctx):
    p1 = FakePipe(free=1)
    pair.evt_pipe_added(p1)
    for body in (b"m1", b"m2", b"m3"):
        pair.cmd_send(body)
    pair.evt_pipe_removed(p1)

    p2 = FakePipe(free=1)
    pair.evt_pipe_added(p2)
    assert p2.bodies == [b"m2"]
    assert ctx.capacity == 0

    p2.free = 4
    pair.evt_pipe_ready(p2)
    assert p2.bodies == [b"m2", b"m3"]
    assert ctx.capacity == 3
    assert p1.bodies == [b"m1"]


def test_a_pair_flushes_its_backlog_when_its_peer_is_ready_then_grants_the_room_left(pair, ctx):
    peer = FakePipe(free=1)
    pair.evt_pipe_added(peer)
    pair.cmd_send(b"a")
    pair.cmd_send(b"b")  # the peer is full: b waits
    assert peer.bodies == [b"a"]

    peer.free = 3
    pair.evt_pipe_ready(peer)

    assert peer.bodies == [b"a", b"b"]
    assert ctx.capacity == 2


def test_a_new_peer_first_takes_the_backlog_then_the_credit_is_what_it_has_left(pair, ctx):
    pair.cmd_send(b"held")  # no peer yet

    peer = FakePipe(free=3)
    pair.evt_pipe_added(peer)

    assert peer.bodies == [b"held"]
    assert ctx.capacity == 2


# ---------------------------------------------------------------- receiving


def test_pair_delivers_what_its_peer_sends(pair, ctx):
    p1 = FakePipe()
    pair.evt_pipe_added(p1)
    ctx.clear()

    pair.evt_pipe_recv(p1, [b"a", b"b"])
    pair.evt_pipe_recv(p1, [b"c"])

    assert ctx.delivered == [b"a", b"b", b"c"]


def test_pair_discards_data_from_a_rejected_pipe(pair, ctx):
    p1, p2 = FakePipe(), FakePipe()
    pair.evt_pipe_added(p1)
    pair.evt_pipe_added(p2)
    ctx.clear()

    pair.evt_pipe_recv(p2, [b"x", b"y"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 2


def test_pair_discards_data_arriving_while_unpaired(pair, ctx):
    pair.evt_pipe_recv(FakePipe(), [b"late"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1


def test_a_pair_discards_and_counts_data_from_a_pipe_that_is_not_its_peer(pair, ctx):
    peer, other = FakePipe(free=3), FakePipe(free=3)
    pair.evt_pipe_added(peer)
    pair.evt_pipe_added(other)

    pair.evt_pipe_recv(other, [b"x", b"y"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 2
    assert pair.state == "paired"
    assert pair.peer is peer


def test_a_pair_discards_and_counts_data_arriving_while_unpaired_and_stays_unpaired(pair, ctx):
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)

    pair.evt_pipe_recv(gone, [b"late"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert pair.state == "unpaired"
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new
    assert ctx.rejected == []


# ---------------------------------------------------------------- closing


def test_pair_close_drops_the_backlog_and_counts_it(pair, ctx):
    pair.cmd_send(b"m1")
    pair.cmd_send(b"m2")

    pair.cmd_close()

    assert pair.state == "closed"
    assert not pair.backlog
    assert ctx.stats["dropped_closed"] == 2


def test_pair_close_from_paired_is_final_and_a_second_close_is_harmless(pair, ctx):
    pair.evt_pipe_added(FakePipe())

    pair.cmd_close()
    pair.cmd_close()

    assert pair.state == "closed"
    assert ctx.stats["dropped_closed"] == 0


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
def test_pair_refuses_every_event_but_close_once_closed_with_the_machine_error(pair, event, args):
    pair.cmd_close()

    with pytest.raises(MachineError) as err:
        getattr(pair, event)(*args)

    assert str(err.value) == f"pair: Can't trigger event {event} from state closed!"
    assert pair.state == "closed"


def test_pair_ignores_a_ready_signal_from_a_rejected_pipe_after_its_peer_left(pair, ctx):
    p1, p2 = FakePipe(), FakePipe()
    pair.evt_pipe_added(p1)
    pair.evt_pipe_added(p2)  # rejected: closed later, from the loop
    pair.evt_pipe_removed(p1)
    ctx.clear()

    pair.evt_pipe_ready(p2)

    assert pair.state == "unpaired"
    assert ctx.calls == []
