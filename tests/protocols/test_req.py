"""REQ protocol machines (protocols.yaml, machines ``req`` and ``req_raw``) and the cooked
REQ's facade policy, driven with events, a recording context and a fake clock.

What REQ must do (WIRE.md, "Request / reply header" and "REQ" [seen]): one word
``0x80000000 | id`` before the body, ids random at first then +1; one pipe per request,
round-robin; the same bytes again every resend interval, possibly to another pipe, and at
once when the carrying pipe dies; a request with no peer waits for one; a new request
cancels the old; a reply counts only if its first word is the outstanding id. Raw REQ: the
user's header as given, no id, no resend; replies split at the first word with the high bit.

Test list (cooked machine): id word on the wire; round robin; send priority; resend after
the interval, same bytes, other pipe, while nobody reads; no resend after the reply; at once
when the carrier dies (and waiting when no other pipe can take it); a request with no pipe
waits for one; a new request cancels the old one and its late reply; wrong id, missing high
bit, duplicate reply dropped and counted; a reply while waiting to resend; a short reply
closes the pipe; send credit; close. Raw machine: header as given, round robin, backlog,
replies split, multi-hop header, ttl, malformed. Policy: ids, wrapping, purge, BadState,
filtering.
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.core.channel import Channel
from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.errors import BadState, Closed
from scaproust.fsm.errors import MachineError
from scaproust.protocols import req as req_module
from scaproust.protocols._headers import id_word, pipe_word
from scaproust.protocols.req import Req, ReqContextPolicy, ReqPolicy, ReqRaw

from .fakes import FakePipe, Interleaved, RecordingContext, sent_through

ID = id_word(0x1234)
OTHER_ID = id_word(0x1233)
REQUEST = Message(b"question", ID)


@pytest.fixture
def ctx() -> RecordingContext:
    ctx = RecordingContext()
    ctx.options = Options("req", resend_interval=1.0)
    return ctx


@pytest.fixture
def req(ctx) -> Req:
    return Req(ctx)


@pytest.fixture
def raw(ctx) -> ReqRaw:
    return ReqRaw(ctx)


def add_pipes(machine, *frees: int, journal: list | None = None, **kw) -> list[FakePipe]:
    pipes = [FakePipe(free=free, journal=journal, **kw) for free in frees]
    for pipe in pipes:
        machine.evt_pipe_added(pipe)
    return pipes


def targets(journal: list) -> list[FakePipe]:
    return [pipe for pipe, _ in journal]


# ================================================================ cooked REQ: sending


def test_req_sends_the_request_with_its_id_word_to_one_pipe(req):
    p0, p1 = add_pipes(req, 5, 5)

    req.cmd_send(REQUEST)

    assert p0.sent == [(b"question", ID)]
    assert p1.sent == []
    assert req.state == "sent"
    assert req.carrier is p0


def test_req_round_robins_successive_requests_over_the_pipes(req):
    journal: list = []
    p0, p1 = add_pipes(req, 5, 5, journal=journal)

    for n in range(4):
        req.cmd_send(Message(b"r%d" % n, id_word(n)))

    assert targets(journal) == [p0, p1, p0, p1]


def test_req_prefers_the_pipe_of_the_best_send_priority(req):
    low = FakePipe(free=5, send_priority=9)
    high = FakePipe(free=5, send_priority=2)
    req.evt_pipe_added(low)
    req.evt_pipe_added(high)

    req.cmd_send(REQUEST)
    req.cmd_send(Message(b"again", OTHER_ID))

    assert [body for body, _ in high.sent] == [b"question", b"again"]
    assert low.sent == []


def test_req_skips_a_pipe_that_cannot_take_the_request(req):
    p0, p1 = add_pipes(req, 0, 5)

    req.cmd_send(REQUEST)

    assert p0.sent == []
    assert p1.sent == [(b"question", ID)]


def test_a_raw_bytes_request_goes_without_header(req):
    (p0,) = add_pipes(req, 5)

    req.cmd_send(b"no id")

    assert p0.sent == [(b"no id", b"")]


# ================================================================ cooked REQ: resending


def test_req_resends_the_same_bytes_after_the_resend_interval(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    assert ctx.loop.advance(0.999) == 0
    assert p0.sent == [(b"question", ID)]

    assert ctx.loop.advance(0.001) == 1
    assert p0.sent == [(b"question", ID)] * 2
    assert ctx.stats["requests_resent"] == 1
    assert req.state == "sent"


def test_req_resends_to_the_next_pipe_in_round_robin_order(req, ctx):
    journal: list = []
    p0, p1 = add_pipes(req, 5, 5, journal=journal)
    req.cmd_send(REQUEST)

    ctx.loop.advance(1.0)
    ctx.loop.advance(1.0)

    assert targets(journal) == [p0, p1, p0]
    assert {header for pipe in (p0, p1) for _, header in pipe.sent} == {ID}
    assert req.carrier is p0


def test_req_keeps_resending_every_interval_while_no_reply_comes(req, ctx):
    (p0,) = add_pipes(req, 10)
    req.cmd_send(REQUEST)

    assert ctx.loop.advance(5.5) == 5

    assert p0.sent == [(b"question", ID)] * 6
    assert len(ctx.loop.pending_timers()) == 1


def test_req_reads_the_resend_interval_at_each_send(req, ctx):
    (p0,) = add_pipes(req, 10)
    req.cmd_send(REQUEST)
    ctx.options.set("resend_interval", 0.25)

    ctx.loop.advance(1.0)  # the first timer was armed for 1 s
    assert len(p0.sent) == 2
    ctx.loop.advance(0.25)
    assert len(p0.sent) == 3


def test_req_stops_resending_once_the_reply_arrived(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [ID + b"answer"])

    assert req.state == "idle"
    assert req.resend.due is None  # no deadline; the armed timer lapses doing nothing
    ctx.loop.advance(10.0)
    assert len(p0.sent) == 1
    assert ctx.loop.pending_timers() == []


def test_req_resends_at_once_to_another_pipe_when_the_carrier_dies(req, ctx):
    p0, p1 = add_pipes(req, 5, 5)
    req.cmd_send(REQUEST)
    first_timer = ctx.loop.pending_timers()[0]
    ctx.loop.advance(0.5)

    req.evt_pipe_removed(p0)

    assert p1.sent == [(b"question", ID)]
    assert req.carrier is p1
    assert req.state == "sent"
    # The deadline moved a whole interval on; the timer armed for the old one stays, and
    # re-arms for what is left when it fires.
    assert req.resend.due == ctx.loop.time() + 1.0
    assert ctx.loop.pending_timers() == [first_timer]
    ctx.loop.advance(0.5)
    assert p1.sent == [(b"question", ID)]
    ctx.loop.advance(0.5)
    assert p1.sent == [(b"question", ID)] * 2


def test_req_waits_for_a_pipe_when_the_carrier_dies_alone(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_removed(p0)

    assert req.state == "waiting"
    assert req.carrier is None
    assert req.resend.due is None
    assert ctx.capacity == 0

    (p1,) = add_pipes(req, 5)
    assert p1.sent == [(b"question", ID)]
    assert req.state == "sent"


def test_req_waits_for_room_when_the_other_pipes_are_full(req, ctx):
    p0, p1 = add_pipes(req, 5, 0)
    req.cmd_send(REQUEST)

    req.evt_pipe_removed(p0)
    assert req.state == "waiting"

    p1.free = 1
    req.evt_pipe_ready(p1)
    assert p1.sent == [(b"question", ID)]
    assert req.state == "sent"


def test_req_removing_another_pipe_does_not_resend(req, ctx):
    p0, p1 = add_pipes(req, 5, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_removed(p1)

    assert p0.sent == [(b"question", ID)]
    assert req.carrier is p0
    assert len(ctx.loop.pending_timers()) == 1


def test_req_waits_when_the_resend_finds_no_pipe_with_room(req, ctx):
    (p0,) = add_pipes(req, 1)
    req.cmd_send(REQUEST)  # takes the only slot

    ctx.loop.advance(1.0)

    assert req.state == "waiting"
    assert len(p0.sent) == 1
    p0.free = 1
    req.evt_pipe_ready(p0)
    assert p0.sent == [(b"question", ID)] * 2
    assert req.state == "sent"


def test_req_takes_the_reply_while_waiting_to_resend(req, ctx):
    (p0,) = add_pipes(req, 1)
    req.cmd_send(REQUEST)
    ctx.loop.advance(1.0)
    assert req.state == "waiting"

    req.evt_pipe_recv(p0, [ID + b"late but right"])

    assert req.state == "idle"
    assert ctx.delivered == [Message(b"late but right", ID)]
    p0.free = 1
    req.evt_pipe_ready(p0)
    assert len(p0.sent) == 1  # nothing left to resend


# ================================================================ cooked REQ: no peer


def test_req_with_no_pipe_grants_no_credit_and_keeps_the_request(req, ctx):
    req.cmd_send(REQUEST)

    assert req.state == "waiting"
    assert ctx.capacities == [0]
    assert ctx.loop.pending_timers() == []


def test_req_sends_a_waiting_request_to_the_first_pipe_that_arrives(req, ctx):
    req.cmd_send(REQUEST)

    (p0,) = add_pipes(req, 5)

    assert p0.sent == [(b"question", ID)]
    assert req.state == "sent"
    assert len(ctx.loop.pending_timers()) == 1


def test_req_a_full_new_pipe_does_not_take_a_waiting_request(req):
    req.cmd_send(REQUEST)

    (p0,) = add_pipes(req, 0)

    assert req.state == "waiting"
    assert p0.sent == []


def test_req_send_credit_is_the_free_slots_of_its_pipes(req, ctx):
    p0, p1 = add_pipes(req, 3, 4)
    assert ctx.capacities == [3, 7]

    # A send the socket accepted used one credit already (the channel's put): the machine
    # states nothing more for the slot it takes (a grant per request cost a lock section).
    req.cmd_send(REQUEST)
    assert ctx.capacities == [3, 7]
    assert (p0.free, p1.free) == (2, 4)

    req.evt_pipe_ready(p0)  # its flush: the credit is restated from the pipes
    assert ctx.capacity == 6

    req.evt_pipe_removed(p0)
    req.evt_pipe_removed(p1)
    assert ctx.capacity == 0


def test_a_waiting_request_goes_to_a_new_pipe_and_the_credit_is_what_that_pipe_has_left(req, ctx):
    req.cmd_send(REQUEST)
    assert req.state == "waiting"

    pipe = FakePipe(free=2)
    req.evt_pipe_added(pipe)

    assert req.state == "sent"
    assert pipe.sent == [(b"question", ID)]
    assert ctx.capacity == 1


def test_a_waiting_request_goes_out_when_its_full_pipe_is_ready_and_the_credit_follows(req, ctx):
    pipe = FakePipe(free=0)
    req.evt_pipe_added(pipe)
    req.cmd_send(REQUEST)
    assert req.state == "waiting"

    pipe.free = 2
    req.evt_pipe_ready(pipe)

    assert req.state == "sent"
    assert pipe.sent == [(b"question", ID)]
    assert ctx.capacity == 1


# ================================================================ cooked REQ: new request


def test_a_new_request_replaces_the_old_one_and_its_deadline(req, ctx):
    journal: list = []
    p0, p1 = add_pipes(req, 5, 5, journal=journal)
    req.cmd_send(REQUEST)
    ctx.loop.advance(0.25)

    req.cmd_send(Message(b"newer", OTHER_ID))

    assert req.resend.due == ctx.loop.time() + 1.0
    assert len(ctx.loop.pending_timers()) == 1
    ctx.loop.advance(0.75)  # the old request's deadline: nothing is resent
    assert [body for _, body in journal] == [b"question", b"newer"]
    ctx.loop.advance(0.25)
    assert [body for _, body in journal] == [b"question", b"newer", b"newer"]
    assert len(ctx.loop.pending_timers()) == 1


def test_a_new_request_at_the_same_instant_keeps_the_armed_timer(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)
    (timer,) = ctx.loop.pending_timers()

    req.cmd_send(Message(b"newer", OTHER_ID))  # the same deadline: nothing to re-arm

    assert not timer.cancelled
    assert ctx.loop.pending_timers() == [timer]
    ctx.loop.advance(1.0)
    assert p0.sent == [(b"question", ID), (b"newer", OTHER_ID), (b"newer", OTHER_ID)]


def test_a_shorter_resend_interval_arms_an_earlier_timer(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)
    (old_timer,) = ctx.loop.pending_timers()
    ctx.options.set("resend_interval", 0.25)

    req.cmd_send(Message(b"newer", OTHER_ID))

    assert old_timer.cancelled  # it would fire too late for the new deadline
    assert [t.when for t in ctx.loop.pending_timers()] == [ctx.loop.time() + 0.25]
    ctx.loop.advance(0.25)
    assert p0.sent == [(b"question", ID), (b"newer", OTHER_ID), (b"newer", OTHER_ID)]


def test_a_late_reply_to_the_old_request_is_dropped_and_counted(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)
    req.cmd_send(Message(b"newer", OTHER_ID))

    req.evt_pipe_recv(p0, [ID + b"too late"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_stale"] == 1
    assert req.state == "sent"

    req.evt_pipe_recv(p0, [OTHER_ID + b"this one"])
    assert ctx.delivered == [Message(b"this one", OTHER_ID)]


def test_a_new_request_while_waiting_replaces_the_waiting_one(req):
    req.cmd_send(REQUEST)
    req.cmd_send(Message(b"newer", OTHER_ID))

    (p0,) = add_pipes(req, 5)

    assert p0.sent == [(b"newer", OTHER_ID)]


# ================================================================ cooked REQ: replies


def test_req_delivers_the_reply_with_its_id_word_and_the_pipe_priority(req, ctx):
    (p0,) = add_pipes(req, 5, recv_priority=3)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [ID + b"answer"])

    assert ctx.delivered == [Message(b"answer", ID)]
    assert ctx.priorities == [3]
    assert req.request is None


def test_req_delivers_an_empty_reply(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [ID])

    assert ctx.delivered == [Message(b"", ID)]


def test_req_delivers_an_empty_reply_that_shares_its_read_with_a_stale_one(req, ctx):
    # Several replies in one read take deliver_reply's loop: a reply of the id word alone
    # (an empty body) is the answer, not a reply too short to carry an id.
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [OTHER_ID + b"stale", ID])

    assert ctx.delivered == [Message(b"", ID)]
    assert ctx.rejected == []
    assert ctx.stats["dropped_stale"] == 1


@pytest.mark.parametrize(
    "reply",
    [OTHER_ID + b"wrong id", b"\x00\x00\x12\x34" + b"no high bit", pipe_word(7) + ID + b"a hop first"],
    ids=["wrong-id", "no-high-bit", "hop-before-id"],
)
def test_req_drops_a_reply_that_is_not_for_the_outstanding_request_and_counts_it(req, ctx, reply):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [reply])

    assert ctx.delivered == []
    assert ctx.rejected == []
    assert ctx.stats["dropped_stale"] == 1
    assert req.state == "sent"


def test_req_delivers_one_reply_and_drops_the_duplicate_a_resend_caused(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)
    ctx.loop.advance(1.0)

    req.evt_pipe_recv(p0, [ID + b"first", ID + b"second"])
    req.evt_pipe_recv(p0, [ID + b"third"])

    assert ctx.delivered == [Message(b"first", ID)]
    assert ctx.stats["dropped_stale"] == 2


def test_when_the_carrier_goes_the_request_moves_to_another_pipe_and_the_credit_follows(req, ctx):
    first, second = FakePipe(free=1), FakePipe(free=2)
    req.evt_pipe_added(first)
    req.evt_pipe_added(second)
    req.cmd_send(REQUEST)
    carrier = req.carrier
    other = second if carrier is first else first

    req.evt_pipe_removed(carrier)

    assert req.state == "sent"
    assert req.carrier is other
    assert other.sent == [(b"question", ID)]
    assert ctx.capacity == other.free


def test_a_resend_at_the_interval_takes_a_slot_and_the_credit_follows(req, ctx):
    pipe = FakePipe(free=3)
    req.evt_pipe_added(pipe)
    req.cmd_send(REQUEST)
    assert ctx.capacity == 3  # the socket's put took the request's credit, not the machine
    assert pipe.free == 2

    ctx.loop.advance(1.0)  # resend_interval: no put took this slot, so the machine says

    assert pipe.sent == [(b"question", ID), (b"question", ID)]
    assert ctx.capacity == 1


def test_req_drops_replies_when_no_request_is_outstanding(req, ctx):
    (p0,) = add_pipes(req, 5)

    req.evt_pipe_recv(p0, [ID + b"unasked"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_stale"] == 1
    assert req.state == "idle"


@pytest.mark.parametrize("state", ["idle", "sent"])
def test_req_closes_a_pipe_whose_reply_is_shorter_than_an_id(req, ctx, caplog, state):
    caplog.set_level(logging.DEBUG, logger="scaproust.protocol")
    p0, p1 = add_pipes(req, 5, 5)
    if state == "sent":
        req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [b"\x80\x00", ID + b"behind", ID + b"too"])

    assert ctx.rejected == [p0]
    assert ctx.stats["dropped_malformed"] == 1
    assert ctx.stats["dropped_rejected"] == 2  # those behind it, in the same read
    assert f"pipe {p0.id} closed" in caplog.text
    assert req.pipes == [p1]  # nothing more goes to a pipe on its way out
    req.evt_pipe_recv(p0, [ID + b"from a rejected pipe"])
    assert ctx.delivered == []


def test_req_delivers_a_good_reply_read_before_a_short_one(req, ctx):
    (p0,) = add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.evt_pipe_recv(p0, [ID + b"good", b"\x01", ID + b"behind"])

    assert ctx.delivered == [Message(b"good", ID)]
    assert ctx.rejected == [p0]
    assert ctx.stats["dropped_malformed"] == 1
    assert ctx.stats["dropped_rejected"] == 1


@pytest.mark.parametrize("machine", [ReqRaw, Req])
def test_replies_from_a_pipe_closed_for_a_malformed_reply_are_dropped_and_counted(ctx, machine):
    req = machine(ctx)
    bad, good = FakePipe(free=5), FakePipe(free=5)
    req.evt_pipe_added(bad)
    req.evt_pipe_added(good)
    req.evt_pipe_recv(bad, [b"\x80\x00"])  # a partial word: the pipe is closed
    assert ctx.rejected == [bad]

    req.evt_pipe_recv(bad, [ID + b"late", ID + b"later"])

    assert ctx.delivered == []
    assert ctx.stats["dropped_rejected"] == 2


# ================================================================ cooked REQ: close


def test_req_close_cancels_the_resend_timer_and_forgets_the_request(req, ctx):
    add_pipes(req, 5)
    req.cmd_send(REQUEST)

    req.cmd_close()
    req.cmd_close()

    assert req.state == "closed"
    assert req.request is None
    assert ctx.loop.pending_timers() == []


def test_req_send_after_close_is_a_machine_error(req):
    req.cmd_close()

    with pytest.raises(MachineError, match="req: Can't trigger event cmd_send from state closed!"):
        req.cmd_send(REQUEST)


# ================================================================ raw REQ


def test_raw_req_sends_the_users_header_and_body_as_given(raw, ctx):
    (p0,) = add_pipes(raw, 5)

    raw.cmd_send(Message(b"body", pipe_word(3) + ID))
    raw.cmd_send(b"headerless")

    assert p0.sent == [(b"body", pipe_word(3) + ID), (b"headerless", b"")]
    assert ctx.loop.pending_timers() == []


def test_raw_req_round_robins_and_never_resends(raw, ctx):
    journal: list = []
    p0, p1 = add_pipes(raw, 5, 5, journal=journal)

    for n in range(3):
        raw.cmd_send(Message(b"r%d" % n, id_word(n)))
    ctx.loop.advance(3600.0)

    assert targets(journal) == [p0, p1, p0]


def test_raw_req_backlogs_with_no_pipe_and_flushes_in_order_to_the_next(raw, ctx):
    raw.cmd_send(Message(b"a", id_word(1)))
    raw.cmd_send(Message(b"b", id_word(2)))
    assert ctx.calls == []

    (p0,) = add_pipes(raw, 5)

    assert p0.sent == [(b"a", id_word(1)), (b"b", id_word(2))]
    assert ctx.capacity == 3


def test_raw_req_send_credit_is_zero_while_messages_wait(raw, ctx):
    (p0,) = add_pipes(raw, 0)
    raw.cmd_send(Message(b"a", ID))

    assert ctx.capacity == 0
    p0.free = 2
    raw.evt_pipe_ready(p0)
    assert p0.sent == [(b"a", ID)]
    assert ctx.capacity == 1


def test_raw_req_splits_the_reply_header_at_the_request_id(raw, ctx):
    (p0,) = add_pipes(raw, 5, recv_priority=4)

    raw.evt_pipe_recv(p0, [ID + b"reply", pipe_word(9) + ID + b"through a device"])

    assert ctx.delivered == [Message(b"reply", ID), Message(b"through a device", pipe_word(9) + ID)]
    assert ctx.priorities == [4]


def test_raw_req_delivers_replies_to_any_id(raw, ctx):
    (p0,) = add_pipes(raw, 5)

    raw.evt_pipe_recv(p0, [OTHER_ID + b"x"])

    assert ctx.delivered == [Message(b"x", OTHER_ID)]


def test_raw_req_takes_a_reply_of_any_depth_back_as_nng_does(raw, ctx):
    # The hops were counted on the request's way out (by each REP's ttl). A device's raw
    # REQ that dropped replies deeper than its ttl lost the reply to every request that
    # had just passed: nng's takes any depth back.
    (p0,) = add_pipes(raw, 5)
    eight = b"".join(pipe_word(n) for n in range(7)) + ID

    raw.evt_pipe_recv(p0, [pipe_word(99) + eight + b"nine", eight + b"eight"])

    assert ctx.delivered == [Message(b"nine", pipe_word(99) + eight),
                             Message(b"eight", eight)]
    assert "dropped_ttl" not in ctx.stats.snapshot()
    assert ctx.rejected == []


def test_raw_req_takes_back_as_deep_a_reply_as_a_ttl_allows_and_no_deeper(raw, ctx):
    # Its words are looked at one by one in Python: unbounded, a peer's mebibyte of hop
    # words held the I/O thread for 40 ms a reply. No ttl lets a request take more.
    (p0,) = add_pipes(raw, 5)
    deepest = b"".join(pipe_word(n) for n in range(254)) + ID  # 255 words

    raw.evt_pipe_recv(p0, [pipe_word(999) + deepest + b"too deep", deepest + b"ok"])

    assert ctx.delivered == [Message(b"ok", deepest)]
    assert ctx.stats["dropped_ttl"] == 1
    assert ctx.rejected == []


@pytest.mark.parametrize("payload", [pipe_word(1) + b"no id", b"\x80\x00", b""],
                         ids=["no-high-bit", "partial-word", "empty"])
def test_raw_req_closes_a_pipe_whose_reply_is_malformed(raw, ctx, caplog, payload):
    caplog.set_level(logging.DEBUG, logger="scaproust.protocol")
    (p0,) = add_pipes(raw, 5)

    raw.evt_pipe_recv(p0, [ID + b"good", payload, ID + b"after"])

    assert ctx.delivered == [Message(b"good", ID)]
    assert ctx.rejected == [p0]
    assert ctx.stats["dropped_malformed"] == 1
    assert ctx.stats["dropped_rejected"] == 1  # the one behind it, in the same read
    assert "malformed backtrace" in caplog.text
    raw.cmd_send(Message(b"next", ID))
    assert p0.sent == []  # not to a pipe on its way out
    raw.evt_pipe_removed(p0)
    assert raw.pipes == []


def test_raw_req_close_drops_the_backlog(raw, ctx):
    raw.cmd_send(Message(b"a", ID))

    raw.cmd_close()

    assert raw.state == "closed"
    assert ctx.stats["dropped_closed"] == 1


# ================================================================ the facade policy


@pytest.fixture
def channel() -> Channel:
    return Channel(wake_backend=lambda: None, resume_reading=lambda: None)


@pytest.fixture
def policy(channel, monkeypatch) -> ReqPolicy:
    monkeypatch.setattr(req_module.random, "getrandbits", lambda bits: 0x7FFFFFFE)
    return ReqPolicy(channel, Options("req"))


def test_req_ids_start_random():
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    firsts = {ReqPolicy(channel, Options("req")).outgoing(b"x").header for _ in range(4)}
    assert len(firsts) > 1
    assert all(word[0] & 0x80 for word in firsts)


def test_req_ids_go_up_by_one_and_wrap_at_31_bits(policy):
    headers = [sent_through(policy, b"x").header for _ in range(3)]

    assert headers == [b"\xff\xff\xff\xfe", b"\xff\xff\xff\xff", b"\x80\x00\x00\x00"]


def test_the_policy_wraps_the_body_and_ignores_a_header_given_by_the_user(policy):
    assert sent_through(policy, Message(b"body", b"user header")) == Message(b"body", id_word(0x7FFFFFFE))


def test_recv_before_any_request_is_a_bad_state(policy):
    with pytest.raises(BadState):
        policy.recv_wait(None)


def test_the_policy_hands_over_the_reply_to_the_outstanding_request_only(policy):
    old = sent_through(policy, b"one").header
    new = sent_through(policy, b"two").header

    assert policy.recv_wait(None) is None
    assert policy.incoming(Message(b"late", old)) is None
    assert policy.incoming(b"no header") is None
    assert policy.incoming(Message(b"right", new)) == Message(b"right", new)
    assert policy.stats.snapshot() == {"purged_stale": 2}  # every message accounted for


def test_recv_after_the_reply_is_a_bad_state_until_the_next_request(policy):
    word = sent_through(policy, b"one").header
    policy.incoming(Message(b"reply", word))

    with pytest.raises(BadState):
        policy.recv_wait(None)

    sent_through(policy, b"two")
    assert policy.recv_wait(None) is None


def test_a_request_sent_while_the_reply_to_the_one_before_is_received_stays_outstanding(
        policy):
    # No lock: the reply's incoming() reads the outstanding list and clears that very list;
    # the request another thread sends in between came with a list of its own.
    old = sent_through(policy, b"one").header
    new = policy.outgoing(b"two")
    # Another thread's send, between the read and the clear.
    policy.outstanding = Interleaved(policy.outstanding, lambda: policy.sent(new))

    assert policy.incoming(Message(b"reply", old)) == Message(b"reply", old)
    assert policy.current == new.header
    assert policy.recv_wait(None) is None  # not a BadState: "two" awaits its reply
    assert policy.incoming(Message(b"reply two", new.header)) == Message(b"reply two", new.header)


def test_a_new_request_purges_replies_not_yet_taken_and_counts_them(policy, channel):
    word = sent_through(policy, b"one").header
    channel.push_many([Message(b"reply", word)])

    sent_through(policy, b"two")

    assert len(channel.inbox) == 0
    assert channel.inbox_bytes == 0
    assert policy.stats.snapshot() == {"purged_stale": 1}


def test_a_reply_to_the_new_request_already_queued_when_it_is_sent_is_kept():
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    policy = ReqPolicy(channel, Options("req"))
    old = sent_through(policy, b"one").header
    new = policy.outgoing(b"two")
    # The reply to the new request overtook the sent() bookkeeping (resends do that).
    channel.push_many([Message(b"stale", old), Message(b"fresh", new.header)])

    policy.sent(new)

    assert list(channel.inbox.drain()) == [Message(b"fresh", new.header)]


@pytest.mark.parametrize("priorities", [(8,), (8, 8), (3, 8)])
def test_replies_to_the_new_request_alone_in_the_queue_stay_as_they_were(priorities):
    # In-process, the peer often answers as the send wakes it, before the sender's own
    # sent() bookkeeping: nothing is stale then, nothing is counted, the queue is intact.
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    policy = ReqPolicy(channel, Options("req"))
    sent_through(policy, b"one")
    new = policy.outgoing(b"two")
    replies = [Message(b"fresh %d" % i, new.header) for i in range(len(priorities))]
    for reply, priority in zip(replies, priorities, strict=True):
        channel.push_many([reply], priority)
    size = channel.inbox_bytes

    policy.sent(new)

    assert channel.inbox_bytes == size
    assert sorted(channel.inbox.drain(), key=lambda m: m.body) == replies
    assert policy.stats.snapshot() == {}


# ================================================================ invariants under any sequence


OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2)),
    st.tuples(st.just("remove"), st.integers(0, 7)),
    st.tuples(st.just("ready"), st.integers(0, 7)),
    st.tuples(st.just("send"), st.integers(0, 3)),
    st.tuples(st.just("reply"), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 2.5])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_req_keeps_one_request_and_one_timer_whatever_happens(ops):
    """Whatever pipes come, go and fill up: every request on the wire is the current one;
    a resend deadline is set exactly while the request sits on a live pipe, at most one
    timer armed, at or before it; a waiting request means no pipe can take it; a reply is delivered once, only for the current request."""
    ctx = RecordingContext()
    ctx.options = Options("req", resend_interval=1.0)
    req = Req(ctx)
    pipes: list[FakePipe] = []
    journal: list = []
    current = None
    delivered = []
    for op, arg in ops:
        before = len(journal)
        if op == "add":
            pipe = FakePipe(free=arg, journal=journal)
            pipes.append(pipe)
            req.evt_pipe_added(pipe)
        elif op == "remove" and pipes:
            req.evt_pipe_removed(pipes.pop(arg % len(pipes)))
        elif op == "ready" and pipes:
            pipe = pipes[arg % len(pipes)]
            pipe.free += 1
            req.evt_pipe_ready(pipe)
        elif op == "send":
            current = Message(b"body %d" % arg, id_word(arg))
            req.cmd_send(current)
        elif op == "reply" and pipes:
            word = id_word(arg)
            req.evt_pipe_recv(pipes[0], [word + b"reply"])
            if current is not None and word == current.header:
                delivered.append(word)
                current = None
        elif op == "wait":
            ctx.loop.advance(arg)
        for pipe, body in journal[before:]:
            assert current is not None and body == current.body
            assert pipe.sent[-1] == (current.body, current.header)

        timers = ctx.loop.pending_timers()
        assert len(timers) <= 1
        due = req.resend.due
        assert (due is not None) == (req.state == "sent")
        if due is not None:
            assert timers and timers[0].when <= due <= ctx.loop.time() + 1.0
        assert (req.carrier is not None) == (req.state == "sent")
        if req.state == "sent":
            assert req.carrier in pipes
        if req.state == "waiting":
            assert not any(p.free for p in pipes)
        assert (req.request is None) == (current is None) == (req.state == "idle")
    assert [m.header for m in ctx.delivered] == delivered


def test_the_req_machines_run_on_the_backend_the_environment_names():
    from scaproust._generated import req as req_gen
    from scaproust._generated import req_raw as req_raw_gen

    via_transitions = os.environ.get("SCAPROUST_FSM", "compiled").strip().lower() == "transitions"
    assert issubclass(Req, req_gen.ReqTransitions if via_transitions else req_gen.ReqCompiled)
    assert issubclass(ReqRaw, req_raw_gen.ReqRawTransitions if via_transitions else req_raw_gen.ReqRawCompiled)


# ================================================================ a context's policy: cancellation


@pytest.fixture
def ctx_policy(policy) -> ReqContextPolicy:
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    return ReqContextPolicy(channel, Options("req"), None, policy)


def sent_request(ctx_policy: ReqContextPolicy, body: bytes = b"q") -> Message:
    item = ctx_policy.outgoing(body)
    ctx_policy.sent(item)
    return item  # type: ignore[return-value]  # a Message, with its id


def test_a_new_request_cancels_only_the_receives_waiting_for_the_old_one(ctx_policy):
    old = sent_request(ctx_policy)
    token = ctx_policy.begin_recv()
    assert token == old.header
    new = sent_request(ctx_policy)
    assert ctx_policy.cancelled == {old.header}
    with pytest.raises(BadState, match="cancelled by a new send"):
        ctx_policy.take(0, token)
    ctx_policy.end_recv(token)
    assert ctx_policy.waiting == {} and ctx_policy.cancelled == set()  # nothing kept
    sent_request(ctx_policy)  # no receive waits for the request it replaces: no cancel
    assert ctx_policy.cancelled == set()
    assert new.header != ctx_policy.current


def test_a_cancelled_receive_whose_channel_closed_says_closed(ctx_policy):
    sent_request(ctx_policy)
    token = ctx_policy.begin_recv()
    sent_request(ctx_policy)
    ctx_policy.channel.close()  # the socket closed as well: that is what the caller hears
    with pytest.raises(Closed):
        ctx_policy.take(0, token)
    ctx_policy.end_recv(token)
