"""SUB contexts in the I/O thread (protocols.yaml, machine ``sub_ctx``, and the rows of
``sub`` that offer them every message), with recording contexts.

What a SUB context must do (the issue, nng's sub0 contexts): topics of its own; every
message it matches is queued for it, whatever the socket's and the other contexts' topics;
its queue holds ``recv_buffer`` messages, and when full it alone loses one: its oldest
(``prefer_new``, the default) or the new one, counted as ``dropped_context_full``; a
message nobody wants is counted once as ``dropped_unmatched``.
"""

from __future__ import annotations

import pytest

from scaproust.errors import Closed
from scaproust.protocols.sub import Sub

from .fakes import FakePipe, QueueingContext


@pytest.fixture
def sock_ctx(loop) -> QueueingContext:
    return QueueingContext(loop)


@pytest.fixture
def sub(sock_ctx) -> Sub:
    return Sub(sock_ctx)


def test_every_matching_context_gets_the_message(sub, loop, sock_ctx):
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    one, two = QueueingContext(loop), QueueingContext(loop)
    c1, c2 = sub.open_context(one), sub.open_context(two)
    c1.cmd_subscribe(b"one")
    c1.cmd_subscribe(b"all")
    c2.cmd_subscribe(b"two")
    c2.cmd_subscribe(b"all")
    sub.cmd_subscribe(b"no")
    sub.evt_pipe_recv(pipe, [b"one for the money", b"all dogs go to heaven",
                             b"nobody likes a snitch", b"two for the show", b"zzz"])
    assert one.queue == [b"one for the money", b"all dogs go to heaven"]
    assert two.queue == [b"all dogs go to heaven", b"two for the show"]
    assert sock_ctx.queue == [b"nobody likes a snitch"]
    assert ("stats.count", "dropped_unmatched", 1) in sock_ctx.calls  # b"zzz" only


def test_an_unsubscribed_socket_still_feeds_its_contexts(sub, loop, sock_ctx):
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    seam = QueueingContext(loop)
    ctx = sub.open_context(seam)
    ctx.cmd_subscribe(b"")
    sub.evt_pipe_recv(pipe, [b"a", b"b"])
    assert seam.queue == [b"a", b"b"]
    assert sock_ctx.queue == []
    assert not any(c[:2] == ("stats.count", "dropped_unmatched") for c in sock_ctx.calls)
    ctx.cmd_unsubscribe(b"")
    assert ctx.state == "unsubscribed"
    sub.evt_pipe_recv(pipe, [b"c"])
    assert seam.queue == [b"a", b"b"]
    assert ("stats.count", "dropped_unmatched", 1) in sock_ctx.calls


@pytest.mark.parametrize(("prefer_new", "kept"), [(True, [b"two", b"three"]),
                                                  (False, [b"one", b"two"])])
def test_a_full_context_loses_a_message_for_itself_only(sub, loop, sock_ctx, prefer_new, kept):
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    small, roomy = QueueingContext(loop, recv_buffer=2), QueueingContext(loop)
    c_small, c_roomy = sub.open_context(small), sub.open_context(roomy)
    c_small.prefer_new = prefer_new
    for ctx in (c_small, c_roomy):
        ctx.cmd_subscribe(b"")
    sub.evt_pipe_recv(pipe, [b"one", b"two", b"three"])
    assert small.queue == kept
    assert small.calls.count(("stats.count", "dropped_context_full", 1)) == 1
    assert roomy.queue == [b"one", b"two", b"three"]
    assert ("stats.count", "dropped_context_full", 1) not in roomy.calls


def test_topics_of_a_context_are_its_own(sub, loop):
    seam = QueueingContext(loop)
    ctx = sub.open_context(seam)
    with pytest.raises(ValueError, match="not subscribed"):
        ctx.cmd_unsubscribe(b"x")
    ctx.cmd_subscribe(b"x")
    ctx.cmd_subscribe(b"x")
    ctx.cmd_unsubscribe(b"x")
    assert ctx.state == "unsubscribed" and sub.topics == set()


def test_closing_a_context_or_the_socket_stops_its_messages(sub, loop):
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    a_seam, b_seam = QueueingContext(loop), QueueingContext(loop)
    a, b = sub.open_context(a_seam), sub.open_context(b_seam)
    a.cmd_subscribe(b"")
    b.cmd_subscribe(b"")
    a.cmd_close()
    sub.evt_pipe_recv(pipe, [b"m"])
    assert a_seam.queue == [] and b_seam.queue == [b"m"]
    with pytest.raises(Closed):
        a.cmd_subscribe(b"y")
    sub.cmd_close()
    assert b.state == "closed" and sub.contexts == []
    with pytest.raises(Closed):
        sub.open_context(QueueingContext(loop))


def test_a_new_context_loses_its_oldest_message_when_full(sub, loop):
    # prefer_new defaults to True, as nng's sub:prefnew.
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    small = QueueingContext(loop, recv_buffer=1)
    ctx = sub.open_context(small)
    ctx.cmd_subscribe(b"")
    assert ctx.prefer_new is True
    sub.evt_pipe_recv(pipe, [b"one", b"two"])
    assert small.queue == [b"two"]
    assert small.calls.count(("stats.count", "dropped_context_full", 1)) == 1


@pytest.mark.parametrize("state", ["unsubscribed", "subscribed"])
def test_a_message_a_context_does_not_match_leaves_it_as_it_was(sub, loop, state):
    # The socket asks _wants() before offering a message, so this is the machine's own
    # contract (its evt_message row with no guard): an unmatched message is ignored.
    seam = QueueingContext(loop)
    ctx = sub.open_context(seam)
    if state == "subscribed":
        ctx.cmd_subscribe(b"a")
    ctx.evt_message(FakePipe(), b"b: not for me")
    assert ctx.state == state
    assert seam.queue == [] and seam.calls == []
    assert sub.contexts == [ctx]


def test_unsubscribing_a_context_stops_matching_that_topic(sub, loop, sock_ctx):
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    seam = QueueingContext(loop)
    ctx = sub.open_context(seam)
    ctx.cmd_subscribe(b"a")
    ctx.cmd_subscribe(b"b")

    ctx.cmd_unsubscribe(b"a")  # not its last topic
    assert ctx.state == "subscribed" and ctx.topics == {b"b"}
    sub.evt_pipe_recv(pipe, [b"a1", b"b1"])
    assert seam.queue == [b"b1"]

    ctx.cmd_unsubscribe(b"b")  # its last topic
    assert ctx.state == "unsubscribed" and ctx.topics == set()
    ctx.cmd_subscribe(b"c")  # subscribed again: to c only
    assert ctx.topics == {b"c"}
    sub.evt_pipe_recv(pipe, [b"a2", b"b2", b"c2"])
    assert seam.queue == [b"b1", b"c2"]
    assert sock_ctx.stats["dropped_unmatched"] == 3  # a1, a2, b2


def test_a_closed_context_stays_closed_ignores_messages_and_refuses_topic_changes(sub, loop):
    seam = QueueingContext(loop)
    ctx = sub.open_context(seam)
    ctx.cmd_subscribe(b"")
    ctx.cmd_close()
    ctx.cmd_close()  # harmless twice
    ctx.evt_message(FakePipe(), b"late")
    assert ctx.state == "closed" and seam.queue == [] and sub.contexts == []
    with pytest.raises(Closed, match="^context is closed$"):
        ctx.cmd_subscribe(b"x")
    with pytest.raises(Closed, match="^context is closed$"):
        ctx.cmd_unsubscribe(b"")
    assert ctx.state == "closed" and ctx.topics == {b""}
