"""REQ contexts in the I/O thread (protocols.yaml, machine ``req_ctx``, and the rows of
``req`` that serve them), driven with events, recording contexts and a fake clock.

What a REQ context must do (the issue, nng's req0 contexts): one request outstanding per
context, with its own resend timer (its own ``resend_interval``); its id word comes from the
socket's pool, and a reply reaches the context whose request carries that id; a new request
replaces the old, whose late reply is dropped (``dropped_stale``); requests that find no
pipe with room wait first come first served, after the socket's own request; a request
whose pipe dies is resent at once; closing a context or its socket drops its request.
"""

from __future__ import annotations

import pytest

from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.protocols._headers import id_word
from scaproust.protocols.req import Req, ReqContext

from .fakes import FakeLoop, FakePipe, RecordingContext

A_ID, B_ID, C_ID, OWN_ID = (id_word(n) for n in (10, 11, 12, 13))


def recording(loop: FakeLoop, resend_interval: float = 1.0) -> RecordingContext:
    return RecordingContext(loop, Options("req", resend_interval=resend_interval))


@pytest.fixture
def sock_ctx(loop) -> RecordingContext:
    return recording(loop)


@pytest.fixture
def req(sock_ctx) -> Req:
    return Req(sock_ctx)


def open_ctx(req: Req, loop: FakeLoop, resend_interval: float = 1.0) -> tuple[ReqContext, RecordingContext]:
    seam = recording(loop, resend_interval)
    return req.open_context(seam), seam


def reply(word: bytes, body: bytes) -> bytes:
    return word + body


def test_each_context_gets_the_reply_that_carries_its_request_id(req, loop, sock_ctx):
    pipe = FakePipe(free=5)
    req.evt_pipe_added(pipe)
    a, a_seam = open_ctx(req, loop)
    b, b_seam = open_ctx(req, loop)

    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    req.cmd_send(Message(b"own", OWN_ID))
    assert pipe.sent == [(b"qa", A_ID), (b"qb", B_ID), (b"own", OWN_ID)]
    assert (a.state, b.state, req.state) == ("sent", "sent", "sent")

    req.evt_pipe_recv(pipe, [reply(B_ID, b"rb"), reply(OWN_ID, b"rown"), reply(A_ID, b"ra")])

    assert b_seam.delivered == [Message(b"rb", B_ID)]
    assert a_seam.delivered == [Message(b"ra", A_ID)]
    assert sock_ctx.delivered == [Message(b"rown", OWN_ID)]
    assert (a.state, b.state, req.state) == ("idle", "idle", "idle")
    assert req.by_id == {}
    assert ("stats.count", "dropped_stale", 1) not in sock_ctx.calls


def test_requests_wait_first_come_first_served_for_a_pipe_with_room(req, loop):
    pipe = FakePipe(free=1)
    req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    c, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    c.cmd_send(Message(b"qc", C_ID))
    assert pipe.bodies == [b"qa"]
    assert (b.state, c.state) == ("queued", "queued")
    assert list(req.queue) == [b, c]

    pipe.free = 1
    req.evt_pipe_ready(pipe)
    assert pipe.bodies == [b"qa", b"qb"]
    assert list(req.queue) == [c]

    other = FakePipe(free=3)
    req.evt_pipe_added(other)
    assert other.bodies == [b"qc"]
    assert c.state == "sent" and not req.queue


def test_the_sockets_own_request_goes_before_the_waiting_contexts(req, loop):
    pipe = FakePipe(free=0)
    req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    req.cmd_send(Message(b"own", OWN_ID))
    assert (a.state, req.state) == ("queued", "waiting")

    pipe.free = 1
    req.evt_pipe_ready(pipe)
    assert pipe.bodies == [b"own"]
    assert a.state == "queued"
    pipe.free = 1
    req.evt_pipe_ready(pipe)
    assert pipe.bodies == [b"own", b"qa"]


def test_a_new_request_waits_behind_earlier_ones_even_if_a_pipe_has_room(req, loop):
    full = FakePipe(free=0)
    req.evt_pipe_added(full)
    a, _ = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    roomy = FakePipe(free=0)
    req.evt_pipe_added(roomy)
    roomy.free = 2  # room, but no event yet: a is still first in line
    b.cmd_send(Message(b"qb", B_ID))
    assert list(req.queue) == [a, b]
    req.evt_pipe_ready(roomy)
    assert roomy.bodies == [b"qa", b"qb"]


def test_each_context_resends_on_its_own_interval(req, loop, sock_ctx):
    p1, p2 = FakePipe(free=5), FakePipe(free=5)
    req.evt_pipe_added(p1)
    req.evt_pipe_added(p2)
    fast, fast_seam = open_ctx(req, loop, resend_interval=0.5)
    slow, slow_seam = open_ctx(req, loop, resend_interval=2.0)
    fast.cmd_send(Message(b"qf", A_ID))
    slow.cmd_send(Message(b"qs", B_ID))
    sent = lambda: sorted(p1.sent + p2.sent)  # noqa: E731

    loop.advance(0.5)
    assert sent().count((b"qf", A_ID)) == 2
    assert sent().count((b"qs", B_ID)) == 1
    loop.advance(1.5)
    assert sent().count((b"qf", A_ID)) == 5
    assert sent().count((b"qs", B_ID)) == 2
    resent = lambda seam: seam.calls.count(("stats.count", "requests_resent", 1))  # noqa: E731
    assert (resent(fast_seam), resent(slow_seam)) == (4, 1)
    assert len(loop.pending_timers()) == 2  # one per context, never more


def test_a_resend_finding_no_room_waits_in_line(req, loop):
    pipe = FakePipe(free=1)
    req.evt_pipe_added(pipe)
    a, seam = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    loop.advance(1.0)
    assert a.state == "queued" and list(req.queue) == [a]
    assert loop.pending_timers() == []
    pipe.free = 1
    req.evt_pipe_ready(pipe)
    assert pipe.sent == [(b"qa", A_ID), (b"qa", A_ID)]
    assert a.state == "sent"


def test_the_request_of_a_dead_pipe_is_resent_at_once_or_waits(req, loop):
    p1, p2 = FakePipe(free=1), FakePipe(free=1)
    req.evt_pipe_added(p1)
    req.evt_pipe_added(p2)
    a, a_seam = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    carrier_a = a.carrier
    assert {carrier_a, b.carrier} == {p1, p2}

    req.evt_pipe_removed(carrier_a)
    assert a.state == "queued"  # the other pipe has no room left
    assert ("stats.count", "requests_resent", 1) not in a_seam.calls
    survivor = b.carrier
    survivor.free = 1
    req.evt_pipe_ready(survivor)
    assert survivor.sent[-1] == (b"qa", A_ID)
    assert a.carrier is survivor


def test_a_new_request_replaces_the_old_and_its_late_reply_is_stale(req, loop, sock_ctx):
    pipe = FakePipe(free=5)
    req.evt_pipe_added(pipe)
    a, seam = open_ctx(req, loop)
    a.cmd_send(Message(b"first", A_ID))
    a.cmd_send(Message(b"second", B_ID))
    assert pipe.sent == [(b"first", A_ID), (b"second", B_ID)]
    assert req.by_id == {B_ID: a}
    assert len(loop.pending_timers()) == 1

    req.evt_pipe_recv(pipe, [reply(A_ID, b"late"), reply(B_ID, b"right")])
    assert seam.delivered == [Message(b"right", B_ID)]
    assert ("stats.count", "dropped_stale", 1) in sock_ctx.calls


def test_closing_a_context_drops_its_request_and_what_comes_for_it(req, loop, sock_ctx):
    pipe = FakePipe(free=1)
    req.evt_pipe_added(pipe)
    a, a_seam = open_ctx(req, loop)
    b, b_seam = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    a.cmd_close()
    b.cmd_close()
    # b's request never found a pipe: dropped, counted; a's went out (its reply is stale).
    assert ("stats.count", "dropped_closed", 1) in b_seam.calls
    assert ("stats.count", "dropped_closed", 1) not in a_seam.calls
    assert (a.state, b.state) == ("closed", "closed")
    assert not req.queue and req.by_id == {} and req.contexts == {}
    assert loop.pending_timers() == []

    req.evt_pipe_recv(pipe, [reply(A_ID, b"late")])
    assert a_seam.delivered == []
    assert ("stats.count", "dropped_stale", 1) in sock_ctx.calls
    pipe.free = 1
    req.evt_pipe_ready(pipe)
    assert pipe.bodies == [b"qa"]  # b's request never went
    a.cmd_send(Message(b"again", C_ID))  # a send that raced the close
    assert ("stats.count", "dropped_closed", 1) in a_seam.calls
    assert pipe.bodies == [b"qa"]


def test_closing_the_socket_closes_its_contexts(req, loop):
    pipe = FakePipe(free=1)
    req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    req.cmd_close()
    assert a.state == "closed"
    assert loop.pending_timers() == []
    with pytest.raises(Exception, match="closed"):
        req.open_context(recording(loop))


# ---------------------------------------------------------------- the rows of ``req`` that
# serve the contexts: which pipe event serves the queue, and the socket's credit after it.
# The credit (grant_capacity) comes after serve_contexts and reroute_contexts: it leaves
# out the slots the contexts' requests took.


@pytest.mark.parametrize("event", ["added", "ready"])
def test_a_pipe_with_room_serves_the_waiting_socket_then_the_contexts(req, loop, sock_ctx, event):
    pipe = FakePipe(free=0)
    if event == "ready":
        req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    req.cmd_send(Message(b"own", OWN_ID))
    b.cmd_send(Message(b"qb", B_ID))
    assert (req.state, a.state, b.state) == ("waiting", "queued", "queued")

    pipe.free = 3
    if event == "added":
        req.evt_pipe_added(pipe)
    else:
        req.evt_pipe_ready(pipe)

    assert pipe.sent == [(b"own", OWN_ID), (b"qa", A_ID), (b"qb", B_ID)]
    assert (req.state, a.state, b.state) == ("sent", "sent", "sent")
    assert (a.carrier, b.carrier) == (pipe, pipe)
    assert not req.queue
    assert sock_ctx.capacity == 0  # the three took the three slots


@pytest.mark.parametrize("event", ["added", "ready"])
def test_a_pipe_with_room_serves_the_contexts_while_the_socket_is_idle(req, loop, sock_ctx, event):
    pipe = FakePipe(free=0)
    if event == "ready":
        req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    assert (req.state, a.state) == ("idle", "queued")

    pipe.free = 3
    if event == "added":
        req.evt_pipe_added(pipe)
    else:
        req.evt_pipe_ready(pipe)

    assert pipe.sent == [(b"qa", A_ID)]
    assert (req.state, a.state, a.carrier) == ("idle", "sent", pipe)
    assert sock_ctx.capacity == 2  # one slot went to the context's request


def test_when_the_sockets_carrier_dies_its_contexts_there_are_resent_at_once(req, loop, sock_ctx):
    doomed = FakePipe(free=2)
    req.evt_pipe_added(doomed)
    a, a_seam = open_ctx(req, loop)
    req.cmd_send(Message(b"own", OWN_ID))
    a.cmd_send(Message(b"qa", A_ID))
    assert doomed.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    spare = FakePipe(free=3)
    req.evt_pipe_added(spare)

    req.evt_pipe_removed(doomed)

    assert spare.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert (req.state, req.carrier) == ("sent", spare)
    assert (a.state, a.carrier) == ("sent", spare)
    assert ("stats.count", "requests_resent", 1) in a_seam.calls
    assert ("stats.count", "requests_resent", 1) in sock_ctx.calls
    assert sock_ctx.capacity == 1  # the two resends took two of the three slots
    assert len(loop.pending_timers()) == 2  # one per request, never more


def test_when_the_sockets_carrier_dies_with_no_room_elsewhere_its_contexts_wait_too(req, loop):
    doomed = FakePipe(free=2)
    req.evt_pipe_added(doomed)
    a, a_seam = open_ctx(req, loop)
    req.cmd_send(Message(b"own", OWN_ID))
    a.cmd_send(Message(b"qa", A_ID))
    full = FakePipe(free=0)
    req.evt_pipe_added(full)

    req.evt_pipe_removed(doomed)

    assert (req.state, a.state, a.carrier) == ("waiting", "queued", None)
    assert list(req.queue) == [a]
    assert (req.resend.due, a.resend.due) == (None, None)  # their timers lapse
    full.free = 2
    req.evt_pipe_ready(full)
    assert full.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert (req.state, a.state, a.carrier) == ("sent", "sent", full)


def test_when_a_contexts_carrier_dies_it_is_resent_on_a_pipe_with_room_at_once(req, loop, sock_ctx):
    doomed = FakePipe(free=1)
    req.evt_pipe_added(doomed)
    a, a_seam = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    spare = FakePipe(free=0)
    req.evt_pipe_added(spare)
    spare.free = 2  # room, with no event: a stays on its carrier

    req.evt_pipe_removed(doomed)  # the socket is idle: not its carrier

    assert spare.sent == [(b"qa", A_ID)]
    assert (a.state, a.carrier) == ("sent", spare)
    assert not req.queue
    assert ("stats.count", "requests_resent", 1) in a_seam.calls
    assert sock_ctx.capacity == 1  # the resend took one of the two slots


def test_a_closed_context_can_be_closed_again_but_takes_no_request(req, loop):
    pipe = FakePipe(free=1)
    req.evt_pipe_added(pipe)
    a, seam = open_ctx(req, loop)
    a.cmd_close()
    a.cmd_close()
    assert a.state == "closed"
    a.cmd_send(Message(b"qa", A_ID))
    assert a.state == "closed" and pipe.sent == []
    assert ("stats.count", "dropped_closed", 1) in seam.calls


@pytest.mark.parametrize("how", ["sent", "resent"])
def test_a_contexts_request_that_takes_a_slot_lowers_the_sockets_credit_at_once(
        req, loop, sock_ctx, how):
    pipe = FakePipe(free=2)
    req.evt_pipe_added(pipe)
    assert sock_ctx.capacity == 2
    a, _ = open_ctx(req, loop)

    a.cmd_send(Message(b"qa", A_ID))
    assert pipe.sent == [(b"qa", A_ID)] and sock_ctx.capacity == 1
    if how == "resent":
        loop.advance(60.0)  # the resend interval: the same request again, one slot more
        assert pipe.sent == [(b"qa", A_ID)] * 2

    assert sock_ctx.capacity == (1 if how == "sent" else 0)


# ---------------------------------------------------------------- the credit during a pipe
# event, not only after it: every grant the socket makes while a pipe event serves or
# reroutes the contexts' requests. grant_capacity must come after serve_contexts and
# reroute_contexts: granted before, the slots a context is about to take would be credit
# for a moment, and a send() blocked on credit could be woken and accepted in between.
# A context's own send restates the credit (ReqContext._send), but not while a pipe event
# places requests (Req.placing): the row's grant, once, when every request is placed.


def grants_during(seam: RecordingContext, event, *args) -> list[tuple[int, int | None]]:
    """Every credit (messages, bytes) the socket grants while ``event(*args)`` runs."""
    seam.clear()
    start = len(seam.byte_capacities)
    event(*args)
    return list(zip(seam.capacities, seam.byte_capacities[start:], strict=True))


def room_left(req: Req) -> tuple[int, int]:
    """The free slots, and bytes, of the socket's pipes that can take a message."""
    open_pipes = [p for p in req.pipes if p.free]
    return sum(p.free for p in open_pipes), sum(p.free_bytes for p in open_pipes)


@pytest.mark.parametrize("event", ["added", "ready"])
def test_a_pipe_that_serves_the_waiting_socket_and_a_context_never_grants_their_slots(
        req, loop, sock_ctx, event):
    """Rows [waiting, evt_pipe_added/evt_pipe_ready, has room]: no grant, not even a
    passing one, counts the slot the context's request takes right after the socket's."""
    pipe = FakePipe(free=0)
    if event == "ready":
        req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    req.cmd_send(Message(b"own", OWN_ID))
    a.cmd_send(Message(b"qa", A_ID))
    assert (req.state, a.state) == ("waiting", "queued")

    pipe.free = 2
    grants = grants_during(sock_ctx, req.evt_pipe_added if event == "added" else req.evt_pipe_ready,
                           pipe)

    assert pipe.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert (req.state, a.state, a.carrier) == ("sent", "sent", pipe)
    assert room_left(req) == (0, 0)
    assert grants == [(0, 0)]  # the row's own grant, once the requests are placed


@pytest.mark.parametrize("state", ["idle", "sent"])
@pytest.mark.parametrize("event", ["added", "ready"])
def test_a_pipe_that_serves_a_waiting_context_never_grants_the_slot_it_takes(
        req, loop, sock_ctx, event, state):
    """Rows [[idle, sent, waiting], evt_pipe_added/evt_pipe_ready, []]: every grant is the
    room left once the context's request took its slot, never one slot more."""
    busy = FakePipe(free=1)
    req.evt_pipe_added(busy)
    if state == "sent":
        req.cmd_send(Message(b"own", OWN_ID))
    else:
        busy.free = 0
    a, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    assert (req.state, a.state) == (state, "queued")

    if event == "added":
        pipe = FakePipe(free=2)
        grants = grants_during(sock_ctx, req.evt_pipe_added, pipe)
    else:
        pipe = busy
        pipe.free = 2
        grants = grants_during(sock_ctx, req.evt_pipe_ready, pipe)

    assert pipe.sent[-1] == (b"qa", A_ID)
    assert (req.state, a.state, a.carrier) == (state, "sent", pipe)
    assert room_left(req) == (1, pipe.free_bytes)
    assert grants == [(1, pipe.free_bytes)]  # the row's own, once the request is placed


def test_when_the_sockets_carrier_dies_no_grant_counts_the_slot_its_context_takes_next(
        req, loop, sock_ctx):
    """Row [sent, evt_pipe_removed, [is_carrier, other_pipe_has_room]]: the socket's
    resend takes one slot of the other pipe and its context's resend the last; no grant
    in between offers that last slot. The dying pipe, room left or not, gets nothing."""
    doomed = FakePipe(free=3)
    req.evt_pipe_added(doomed)
    a, a_seam = open_ctx(req, loop)
    req.cmd_send(Message(b"own", OWN_ID))
    a.cmd_send(Message(b"qa", A_ID))
    spare = FakePipe(free=2)
    req.evt_pipe_added(spare)
    assert (req.carrier, a.carrier, doomed.free) == (doomed, doomed, 1)

    grants = grants_during(sock_ctx, req.evt_pipe_removed, doomed)

    assert spare.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert doomed.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert (req.state, req.carrier, a.state, a.carrier) == ("sent", spare, "sent", spare)
    assert ("stats.count", "requests_resent", 1) in a_seam.calls
    assert room_left(req) == (0, 0)
    assert grants == [(0, 0)]  # the row's own grant, once the requests are placed


def test_when_the_sockets_carrier_dies_with_no_room_elsewhere_its_context_waits_off_it(
        req, loop, sock_ctx):
    """Row [sent, evt_pipe_removed, [is_carrier]] -> waiting: the pipe leaves the socket
    before its contexts are rerouted, so a context whose carrier it was cannot be resent
    to it even though it still reports room; it waits in line for the next pipe."""
    doomed = FakePipe(free=3)
    full = FakePipe(free=0)
    req.evt_pipe_added(doomed)
    req.evt_pipe_added(full)
    a, a_seam = open_ctx(req, loop)
    req.cmd_send(Message(b"own", OWN_ID))
    a.cmd_send(Message(b"qa", A_ID))
    assert (req.carrier, a.carrier, doomed.free) == (doomed, doomed, 1)

    grants = grants_during(sock_ctx, req.evt_pipe_removed, doomed)

    assert doomed.sent == [(b"own", OWN_ID), (b"qa", A_ID)]  # nothing more to the dying pipe
    assert (req.state, a.state, a.carrier) == ("waiting", "queued", None)
    assert list(req.queue) == [a]
    assert ("stats.count", "requests_resent", 1) not in a_seam.calls
    assert (req.resend.due, a.resend.due) == (None, None)  # their timers lapse
    assert grants == [(0, 0)]

    full.free = 2
    req.evt_pipe_ready(full)
    assert full.sent == [(b"own", OWN_ID), (b"qa", A_ID)]
    assert (req.state, a.state, a.carrier) == ("sent", "sent", full)


@pytest.mark.parametrize("state", ["idle", "sent"])
def test_when_a_contexts_carrier_dies_no_grant_counts_the_slot_its_resend_takes(
        req, loop, sock_ctx, state):
    """Row [[idle, sent, waiting], evt_pipe_removed, []] (not the socket's carrier): the
    context's resend takes the last free slot, and no grant offers it first; the dying
    pipe, which still reports room, gets nothing."""
    busy = FakePipe(free=1)
    req.evt_pipe_added(busy)
    if state == "sent":
        req.cmd_send(Message(b"own", OWN_ID))
        assert req.carrier is busy
    else:
        busy.free = 0
    doomed = FakePipe(free=2)
    req.evt_pipe_added(doomed)
    a, a_seam = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    spare = FakePipe(free=1)
    req.evt_pipe_added(spare)
    assert (req.state, a.carrier, doomed.free, spare.free) == (state, doomed, 1, 1)

    grants = grants_during(sock_ctx, req.evt_pipe_removed, doomed)

    assert doomed.sent == [(b"qa", A_ID)]
    assert spare.sent == [(b"qa", A_ID)]
    assert (req.state, a.state, a.carrier) == (state, "sent", spare)
    assert ("stats.count", "requests_resent", 1) in a_seam.calls
    assert room_left(req) == (0, 0)
    assert grants == [(0, 0)]  # the row's own grant, once the requests are placed


@pytest.mark.parametrize("event", ["added", "ready"])
def test_a_pipe_that_serves_two_waiting_contexts_grants_once_when_both_are_placed(
        req, loop, sock_ctx, event):
    """Two contexts wait: the pipe that comes or gets room takes both requests, and the one
    grant comes after the second; restated after the first, it would offer the second's
    slot for a moment."""
    pipe = FakePipe(free=0)
    if event == "ready":
        req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    assert (a.state, b.state) == ("queued", "queued")

    pipe.free = 2
    grants = grants_during(sock_ctx, req.evt_pipe_added if event == "added" else req.evt_pipe_ready,
                           pipe)

    assert pipe.sent == [(b"qa", A_ID), (b"qb", B_ID)]
    assert (a.carrier, b.carrier) == (pipe, pipe)
    assert not req.placing
    assert grants == [(0, 0)]


def test_two_contexts_rerouted_off_a_dying_pipe_are_granted_for_once_both_are_placed(
        req, loop, sock_ctx):
    """Both contexts' requests ride a pipe that dies; both are resent to the spare pipe,
    and the one grant comes after the second resend."""
    doomed = FakePipe(free=3)
    req.evt_pipe_added(doomed)
    a, _ = open_ctx(req, loop)
    b, _ = open_ctx(req, loop)
    a.cmd_send(Message(b"qa", A_ID))
    b.cmd_send(Message(b"qb", B_ID))
    spare = FakePipe(free=2)
    req.evt_pipe_added(spare)
    assert (a.carrier, b.carrier) == (doomed, doomed)

    grants = grants_during(sock_ctx, req.evt_pipe_removed, doomed)

    assert spare.sent == [(b"qa", A_ID), (b"qb", B_ID)]
    assert (a.carrier, b.carrier) == (spare, spare)
    assert not req.placing
    assert grants == [(0, 0)]


def test_a_contexts_own_send_still_restates_the_credit_at_once(req, loop, sock_ctx):
    """Outside a pipe event nothing else would: the send lowers the credit itself."""
    pipe = FakePipe(free=2)
    req.evt_pipe_added(pipe)
    a, _ = open_ctx(req, loop)

    grants = grants_during(sock_ctx, a.cmd_send, Message(b"qa", A_ID))

    assert pipe.sent == [(b"qa", A_ID)]
    assert grants == [(1, pipe.free_bytes)]
