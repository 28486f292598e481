"""PAIR v1 protocol machines, raw and cooked (protocols.yaml, machines ``pair1_raw`` and
``pair1``), driven with events and a recording context.

What PAIR v1 must do (WIRE.md, "PAIR v1" [seen]; nng's pair1 for the details): PAIR v0's one
peer, plus a 32-bit big-endian hop count before every body. Every send increments the
count: a cooked message leaves with 1, a raw one with its header's count plus one (the
header must be one word under 0xff). Received: no whole word or a count over 0xff closes
the pipe; over the ttl (default 8) the message is dropped and the pipe stays; the count is
the raw message's header, as received, and the cooked user gets the body only.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.fsm.errors import MachineError
from scaproust.protocols.pair1 import Pair1, Pair1Raw

from .fakes import FakePipe, RecordingContext


def hops(n: int) -> bytes:
    return n.to_bytes(4, "big")


@pytest.fixture
def ctx() -> RecordingContext:
    ctx = RecordingContext()
    ctx.options = Options("pair1")
    return ctx


@pytest.fixture
def pair(ctx) -> Pair1:
    return Pair1(ctx)


@pytest.fixture
def raw(ctx) -> Pair1Raw:
    return Pair1Raw(ctx)


def paired(machine, free: int = 5, **kwargs) -> FakePipe:
    pipe = FakePipe(free=free, **kwargs)
    machine.evt_pipe_added(pipe)
    return pipe


def sent_item(machine, body: bytes):
    """What the user sends: a raw PAIR v1 message needs a hop count as its header."""
    return Message(body, hops(0)) if machine is Pair1Raw else body


# ---------------------------------------------------------------- one peer, as PAIR v0


@pytest.mark.parametrize("machine", [Pair1, Pair1Raw])
def test_pair1_takes_the_first_pipe_as_its_peer_and_grants_its_free_slots(ctx, machine):
    pair = machine(ctx)
    assert pair.state == "unpaired" and ctx.calls == []

    p1 = paired(pair, free=3)

    assert pair.state == "paired" and pair.peer is p1
    assert ctx.calls == [("set_send_capacity", 3)]


@pytest.mark.parametrize("machine", [Pair1, Pair1Raw])
def test_pair1_rejects_a_second_peer_and_keeps_the_first(ctx, machine):
    pair = machine(ctx)
    p1 = paired(pair)
    ctx.clear()

    p2 = paired(pair)

    assert pair.peer is p1
    assert ctx.rejected == [p2]
    assert ctx.stats["pipes_rejected"] == 1


def test_pair1_send_capacity_is_zero_without_a_peer_and_follows_the_peers_free_slots(pair, ctx):
    p1 = paired(pair, free=2)
    pair.cmd_send(b"a")
    pair.cmd_send(b"b")
    p1.free = 6
    pair.evt_pipe_ready(p1)
    pair.evt_pipe_removed(p1)

    assert ctx.capacities == [2, 6, 0]
    assert pair.state == "unpaired"


def test_pair1_holds_messages_sent_without_a_peer_and_gives_them_to_the_next_in_order(pair, ctx):
    pair.cmd_send(b"m1")
    pair.cmd_send(Message(b"m2", hops(7)))

    p1 = paired(pair, free=5)

    assert p1.sent == [(b"m1", hops(1)), (b"m2", hops(1))]
    assert ctx.capacity == 3


def test_pair1_backlogs_when_its_peer_is_full_and_flushes_in_order_when_it_is_ready(pair, ctx):
    p1 = paired(pair, free=1)
    for body in (b"m1", b"m2", b"m3"):
        pair.cmd_send(body)
    assert p1.bodies == [b"m1"]

    p1.free = 4
    pair.evt_pipe_ready(p1)

    assert p1.sent == [(b"m1", hops(1)), (b"m2", hops(1)), (b"m3", hops(1))]
    assert ctx.capacity == 2


def test_pair1_discards_data_from_a_rejected_pipe_and_ignores_its_ready_and_removal(pair, ctx):
    p1 = paired(pair)
    p2 = paired(pair)
    ctx.clear()

    pair.evt_pipe_recv(p2, [hops(1) + b"x"])
    pair.evt_pipe_ready(p2)
    pair.evt_pipe_removed(p2)

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert pair.peer is p1 and pair.state == "paired"
    assert ctx.capacities == []


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_forgets_a_removed_peer_grants_nothing_and_takes_the_next_pipe(ctx, machine):
    pair = machine(ctx)
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


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_keeps_its_peer_when_a_rejected_pipe_goes_away(ctx, machine):
    pair = machine(ctx)
    peer, other = FakePipe(free=3), FakePipe(free=3)
    pair.evt_pipe_added(peer)
    pair.evt_pipe_added(other)
    ctx.clear()

    pair.evt_pipe_removed(other)

    assert pair.state == "paired"
    assert pair.peer is peer
    assert ctx.calls == []


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_flushes_its_backlog_when_its_peer_is_ready_then_grants_the_room_left(
        ctx, machine):
    pair = machine(ctx)
    peer = FakePipe(free=1)
    pair.evt_pipe_added(peer)
    pair.cmd_send(sent_item(machine, b"a"))
    pair.cmd_send(sent_item(machine, b"b"))  # the peer is full: b waits
    assert peer.bodies == [b"a"]

    peer.free = 3
    pair.evt_pipe_ready(peer)

    assert peer.bodies == [b"a", b"b"]
    assert ctx.capacity == 2


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_ignores_readiness_while_unpaired_and_pairs_with_the_next_pipe(ctx, machine):
    pair = machine(ctx)
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)

    pair.evt_pipe_ready(gone)

    assert pair.state == "unpaired"
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new
    assert ctx.rejected == []


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_discards_and_counts_data_from_a_pipe_that_is_not_its_peer(ctx, machine):
    pair = machine(ctx)
    peer, other = FakePipe(free=3), FakePipe(free=3)
    pair.evt_pipe_added(peer)
    pair.evt_pipe_added(other)

    pair.evt_pipe_recv(other, [hops(1) + b"x", hops(1) + b"y"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 2
    assert pair.state == "paired"
    assert pair.peer is peer


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_pair_discards_and_counts_data_arriving_while_unpaired_and_stays_unpaired(
        ctx, machine):
    pair = machine(ctx)
    gone = FakePipe(free=3)
    pair.evt_pipe_added(gone)
    pair.evt_pipe_removed(gone)

    pair.evt_pipe_recv(gone, [hops(1) + b"late"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert pair.state == "unpaired"
    new = FakePipe(free=3)
    pair.evt_pipe_added(new)
    assert pair.peer is new
    assert ctx.rejected == []


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_new_peer_first_takes_the_backlog_then_the_credit_is_what_it_has_left(ctx, machine):
    pair = machine(ctx)
    pair.cmd_send(sent_item(machine, b"held"))  # no peer yet

    peer = FakePipe(free=3)
    pair.evt_pipe_added(peer)

    assert peer.bodies == [b"held"]
    assert ctx.capacity == 2


@pytest.mark.parametrize("machine", [Pair1Raw, Pair1])
def test_a_removal_while_unpaired_changes_nothing(ctx, machine):
    pair = machine(ctx)
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


# ---------------------------------------------------------------- cooked hop counts


def test_cooked_pair1_sends_every_message_with_hop_count_one(pair):
    p1 = paired(pair)

    pair.cmd_send(b"hello")
    pair.cmd_send(b"")

    assert p1.sent == [(b"hello", b"\x00\x00\x00\x01"), (b"", b"\x00\x00\x00\x01")]


def test_cooked_pair1_ignores_the_header_of_a_message_it_sends(pair):
    p1 = paired(pair)

    pair.cmd_send(Message(b"body", hops(200) + hops(3)))

    assert p1.sent == [(b"body", hops(1))]


def test_cooked_pair1_strips_the_hop_count_and_delivers_bodies_at_the_pipes_priority(pair, ctx):
    p1 = paired(pair, recv_priority=2)
    ctx.clear()

    pair.evt_pipe_recv(p1, [hops(1) + b"a", hops(0) + b"", hops(8) + b"c"])

    assert ctx.delivered == [b"a", b"", b"c"]
    assert ctx.priorities == [2]


def test_cooked_pair1_drops_a_message_over_the_ttl_silently_and_keeps_the_pipe(pair, ctx):
    p1 = paired(pair)
    ctx.clear()

    pair.evt_pipe_recv(p1, [hops(8) + b"eight", hops(9) + b"nine", hops(1) + b"one"])

    assert ctx.delivered == [b"eight", b"one"]
    assert ctx.stats["dropped_ttl"] == 1
    assert ctx.rejected == []
    assert pair.peer is p1


def test_pair1_reads_the_ttl_option_at_each_message(pair, ctx):
    p1 = paired(pair)
    ctx.options.ttl = 2
    pair.evt_pipe_recv(p1, [hops(2) + b"two", hops(3) + b"three"])
    ctx.options.ttl = 255
    pair.evt_pipe_recv(p1, [hops(255) + b"most"])

    assert ctx.delivered == [b"two", b"most"]
    assert ctx.stats["dropped_ttl"] == 1


@pytest.mark.parametrize(
    "bad",
    [hops(0x100) + b"body", hops(0xFFFFFFFF), b"\x00\x00\x01", b""],
    ids=["hop-count-256", "hop-count-all-ones", "three-bytes", "empty"],
)
def test_cooked_pair1_closes_the_pipe_on_a_malformed_message_after_delivering_those_before(
    pair, ctx, bad
):
    p1 = paired(pair)
    ctx.clear()

    pair.evt_pipe_recv(p1, [hops(1) + b"before", bad, hops(1) + b"after"])

    assert ctx.delivered == [b"before"]
    assert ctx.rejected == [p1]
    assert ctx.stats["dropped_malformed"] == 1
    assert ctx.stats["dropped_rejected"] == 1  # the one behind it, in the same read
    assert pair.state == "unpaired" and pair.peer is None
    assert ctx.capacity == 0


def test_pair1_forgets_a_malformed_peer_at_once_so_a_new_pipe_pairs_and_the_old_one_is_ignored(
    pair, ctx
):
    p1 = paired(pair)
    pair.evt_pipe_recv(p1, [hops(0x1FF)])
    pair.cmd_send(b"waits")
    ctx.clear()

    pair.evt_pipe_recv(p1, [hops(1) + b"late"])  # read before the deferred close
    p2 = paired(pair, free=4)
    pair.evt_pipe_ready(p1)
    pair.evt_pipe_removed(p1)

    assert ctx.delivered == []
    assert ctx.stats["dropped_unexpected"] == 1
    assert pair.peer is p2 and pair.state == "paired"
    assert p1.sent == []
    assert p2.sent == [(b"waits", hops(1))]
    assert ctx.capacity == 3


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


# ---------------------------------------------------------------- raw hop counts


def test_raw_pair1_delivers_the_hop_count_as_received_as_the_header(raw, ctx):
    p1 = paired(raw)
    ctx.clear()

    raw.evt_pipe_recv(p1, [hops(1) + b"one", hops(7) + b"seven"])

    assert ctx.delivered == [Message(b"one", hops(1)), Message(b"seven", hops(7))]


def test_raw_pair1_applies_the_same_ttl_and_malformed_rules_as_cooked(raw, ctx):
    p1 = paired(raw)
    ctx.clear()

    raw.evt_pipe_recv(p1, [hops(9) + b"too far", hops(2) + b"ok", hops(0x100)])

    assert ctx.delivered == [Message(b"ok", hops(2))]
    assert ctx.stats["dropped_ttl"] == 1
    assert ctx.rejected == [p1]
    assert raw.state == "unpaired" and raw.peer is None
    assert ctx.capacity == 0  # the peer is forgotten before the credit is granted


def test_raw_pair1_sends_its_header_hop_count_plus_one(raw):
    p1 = paired(raw)

    raw.cmd_send(Message(b"first", hops(0)))
    raw.cmd_send(Message(b"relayed", hops(1)))
    raw.cmd_send(Message(b"last", hops(0xFE)))

    assert p1.sent == [(b"first", hops(1)), (b"relayed", hops(2)), (b"last", hops(0xFF))]


def test_a_raw_pair1_device_pass_adds_one_hop(raw, ctx):
    p1 = paired(raw)
    raw.evt_pipe_recv(p1, [hops(3) + b"through"])

    (msg,) = ctx.delivered
    raw.cmd_send(msg)

    assert p1.sent == [(b"through", hops(4))]


@pytest.mark.parametrize(
    "item",
    [b"bare bytes", Message(b"no header"), Message(b"x", hops(0xFF)), Message(b"x", hops(0x100)),
     Message(b"x", b"\x00\x00\x01"), Message(b"x", hops(1) + hops(1))],
    ids=["bytes", "no-header", "hop-255", "hop-256", "three-bytes", "two-words"],
)
@pytest.mark.parametrize("with_peer", [True, False], ids=["paired", "unpaired"])
def test_raw_pair1_refuses_a_send_whose_header_is_not_one_word_under_255(raw, ctx, item, with_peer):
    p1 = paired(raw) if with_peer else None

    raw.cmd_send(item)

    assert ctx.stats["dropped_bad_header"] == 1
    assert not raw.backlog
    if p1 is not None:
        assert p1.sent == []


@pytest.mark.parametrize("with_peer", [False, True], ids=["unpaired", "paired"])
def test_a_refused_raw_pair1_send_leaves_the_machine_where_it_was_and_gives_the_credit_back(
        raw, ctx, with_peer):
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


def test_raw_pair1_holds_good_messages_until_a_peer_comes(raw):
    raw.cmd_send(Message(b"held", hops(4)))

    p1 = paired(raw)

    assert p1.sent == [(b"held", hops(5))]


@given(st.lists(st.tuples(st.integers(0, 0x1FF), st.binary(max_size=6)), max_size=8),
       st.integers(1, 255))
def test_pair1_delivers_exactly_the_bodies_within_the_ttl_up_to_the_first_malformed_one(frames, ttl):
    ctx = RecordingContext()
    ctx.options = Options("pair1", ttl=ttl)
    pair = Pair1(ctx)
    p1 = paired(pair)

    pair.evt_pipe_recv(p1, [hops(n) + body for n, body in frames])

    good = []
    for n, body in frames:
        if n > 0xFF:
            break
        if n <= ttl:
            good.append(body)
    assert ctx.delivered == good
    malformed = any(n > 0xFF for n, _ in frames)
    assert ctx.rejected == ([p1] if malformed else [])
    assert pair.state == ("unpaired" if malformed else "paired")


# ---------------------------------------------------------------- closing


@pytest.mark.parametrize("machine", [Pair1, Pair1Raw])
def test_pair1_close_drops_the_backlog_and_counts_it(ctx, machine):
    pair = machine(ctx)
    pair.cmd_send(Message(b"m1", hops(0)))
    pair.cmd_send(Message(b"m2", hops(0)))

    pair.cmd_close()
    pair.cmd_close()

    assert pair.state == "closed"
    assert ctx.stats["dropped_closed"] == 2


@pytest.mark.parametrize("machine", [Pair1, Pair1Raw])
@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("evt_pipe_added", (FakePipe(),)),
        ("evt_pipe_removed", (FakePipe(),)),
        ("evt_pipe_ready", (FakePipe(),)),
        ("evt_pipe_recv", (FakePipe(), [hops(1)])),
        ("cmd_send", (Message(b"x", hops(0)),)),
    ],
)
def test_a_closed_pair1_refuses_every_event_but_close(ctx, machine, event, args):
    pair = machine(ctx)
    pair.cmd_close()

    with pytest.raises(MachineError, match=f"Can't trigger event {event} from state closed"):
        getattr(pair, event)(*args)
    assert pair.state == "closed"


def test_a_malformed_message_last_in_its_read_counts_nothing_as_rejected(pair, ctx):
    # Nothing came behind it: no dropped_rejected counter appears, not even at zero.
    p1 = paired(pair)
    pair.evt_pipe_recv(p1, [hops(1) + b"good", b""])
    assert ctx.rejected == [p1]
    assert ctx.stats.snapshot() == {"dropped_malformed": 1}
