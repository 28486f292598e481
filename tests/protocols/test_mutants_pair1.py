"""One peer at a time, for every PAIR machine: ``pair``, ``pair1_raw`` and ``pair1`` each have
their own rows in protocols.yaml, so each runs the same peer tests here (written to kill
the mutants of ``make mutate`` that survived test_pair.py and test_pair1.py, which test
most of this on one machine only).

A PAIR v1 payload carries a hop count word before its body; a raw PAIR v1 sends messages
whose header is a hop count (``flavour`` hides the difference).
"""

from __future__ import annotations

import pytest

from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.protocols.pair import Pair
from scaproust.protocols.pair1 import Pair1, Pair1Raw

from .fakes import FakePipe, RecordingContext


def hops(n: int) -> bytes:
    return n.to_bytes(4, "big")


class Flavour:
    def __init__(self, machine: type) -> None:
        self.machine = machine
        self.v1 = machine is not Pair

    def item(self, body: bytes):
        """What the user sends."""
        return Message(body, hops(0)) if self.machine is Pair1Raw else body

    def wire(self, body: bytes) -> bytes:
        """A payload as the peer sends it."""
        return hops(1) + body if self.v1 else body

    def bodies(self, pipe: FakePipe) -> list[bytes]:
        return [body for body, _ in pipe.sent]


MACHINES = [Pair, Pair1Raw, Pair1]


@pytest.fixture(params=MACHINES, ids=lambda m: m.__name__)
def flavour(request) -> Flavour:
    return Flavour(request.param)


@pytest.fixture
def ctx() -> RecordingContext:
    ctx = RecordingContext()
    ctx.options = Options("pair1")
    return ctx


@pytest.fixture
def pair(flavour, ctx):
    return flavour.machine(ctx)


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


def test_a_pair_flushes_its_backlog_when_its_peer_is_ready_then_grants_the_room_left(
        pair, flavour, ctx):
    peer = FakePipe(free=1)
    pair.evt_pipe_added(peer)
    pair.cmd_send(flavour.item(b"a"))
    pair.cmd_send(flavour.item(b"b"))  # the peer is full: b waits
    assert flavour.bodies(peer) == [b"a"]

    peer.free = 3
    pair.evt_pipe_ready(peer)

    assert flavour.bodies(peer) == [b"a", b"b"]
    assert ctx.capacity == 2


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


def test_a_pair_discards_and_counts_data_from_a_pipe_that_is_not_its_peer(pair, flavour, ctx):
    peer, other = FakePipe(free=3), FakePipe(free=3)
    pair.evt_pipe_added(peer)
    pair.evt_pipe_added(other)

    pair.evt_pipe_recv(other, [flavour.wire(b"x"), flavour.wire(b"y")])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 2
    assert pair.state == "paired"
    assert pair.peer is peer


def test_a_pair_discards_and_counts_data_arriving_while_unpaired_and_stays_unpaired(
        pair, flavour, ctx):
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)

    pair.evt_pipe_recv(gone, [flavour.wire(b"late")])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert pair.state == "unpaired"
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new
    assert ctx.rejected == []


@pytest.mark.parametrize("with_peer", [False, True], ids=["unpaired", "paired"])
def test_a_refused_raw_pair1_send_leaves_the_machine_where_it_was_and_gives_the_credit_back(
        ctx, with_peer):
    raw = Pair1Raw(ctx)
    peer = FakePipe(free=3)
    if with_peer:
        raw.evt_pipe_added(peer)
    ctx.clear()

    raw.cmd_send(Message(b"bad", b"\x00\x00\x01\x00"))  # a hop count of 256

    assert ctx.stats["dropped_bad_header"] == 1
    assert raw.state == ("paired" if with_peer else "unpaired")
    assert ctx.capacities == [3 if with_peer else 0]
    if not with_peer:
        raw.evt_pipe_added(peer)
    raw.cmd_send(Message(b"good", hops(0)))
    assert peer.sent == [(b"good", hops(1))]


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_payload_shorter_than_a_hop_count_closes_the_pipe_even_if_its_bytes_are_zero(
        ctx, machine):
    pair = machine(ctx)
    peer = FakePipe(free=3)
    pair.evt_pipe_added(peer)

    pair.evt_pipe_recv(peer, [hops(1) + b"ok", b"\x00\x00\x00"])

    assert ctx.rejected == [peer]
    assert ctx.stats["dropped_malformed"] == 1
    assert pair.state == "unpaired"
    assert len(ctx.delivered) == 1


def test_a_new_peer_first_takes_the_backlog_then_the_credit_is_what_it_has_left(
        pair, flavour, ctx):
    pair.cmd_send(flavour.item(b"held"))  # no peer yet

    peer = FakePipe(free=3)
    pair.evt_pipe_added(peer)

    assert flavour.bodies(peer) == [b"held"]
    assert ctx.capacity == 2


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
