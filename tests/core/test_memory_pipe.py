"""The memory pipe (scaproust/core/memory_pipe.py): the ``pipe`` machine over an in-process
link (transports/inproc.py), driven with fake loops: no threads, no sleeps. One fake loop
stands for one session: ``Link(same_session=False)`` gives each end its own, so a delivery
must be posted (``call_soon_threadsafe``) instead of run at the end of the sender's batch.
"""

from __future__ import annotations

import logging

import pytest
from protocols.fakes import FakeLoop, FakeOwner, FakeSocket

from scaproust import protocols
from scaproust.core.memory_pipe import LINK_BYTES, LINK_MSGS, MemoryPipe
from scaproust.core.options import Options
from scaproust.core.pipe import HIGH_WATER, Pipe, Publication
from scaproust.core.pipe_kinds import pipe_class
from scaproust.transports import inproc, tcp
from scaproust.transports.inproc import MemoryEnd, MemoryLink


class Link:
    """A PUSH pipe (dialed) and a PULL pipe (accepted) over one memory link."""

    def __init__(self, *, same_session=True, push=protocols.Push, pull=protocols.Pull,
                 push_options=None, pull_options=None):
        self.link = MemoryLink()
        self.push_loop = FakeLoop()
        self.pull_loop = self.push_loop if same_session else FakeLoop()
        self.push = self._pipe(self.push_loop, self.link.dialer_end, push, push_options, True)
        self.pull = self._pipe(self.pull_loop, self.link.listener_end, pull, pull_options, False)

    @staticmethod
    def _pipe(loop, end, info, options, dialed) -> MemoryPipe:
        return MemoryPipe(loop=loop, stream=end, transport=inproc,
                          socket=FakeSocket(info, Options(**(options or {}))),
                          owner=FakeOwner(), dialed=dialed, peer_addr="inproc://test")

    def run(self) -> None:
        """Run both sessions until neither has anything left to do."""
        for _ in range(100):
            if not self.push_loop.run_ready() + self.pull_loop.run_ready():
                return
        raise AssertionError("the two sessions keep signalling each other")

    def open(self) -> Link:
        self.push.cmd_open()
        self.pull.cmd_open()
        self.run()
        assert (self.push.state, self.pull.state) == ("active", "active")
        self.pull.socket.proto.calls.clear()
        self.push.socket.proto.calls.clear()
        return self

    @property
    def received(self) -> list:
        return self.pull.socket.proto.received

    def send(self, *bodies: bytes) -> None:
        for body in bodies:
            self.push.cmd_send(body)


def test_a_memory_transport_gets_memory_pipes_and_the_others_stream_pipes():
    assert pipe_class(inproc) is MemoryPipe
    assert pipe_class(tcp) is Pipe


def test_both_ends_send_their_eight_byte_header_and_become_active():
    t = Link()
    t.push.cmd_open()
    t.pull.cmd_open()
    t.push_loop.run_ready()

    assert (t.push.state, t.pull.state) == ("active", "active")
    assert t.push.socket.opened == [t.push] and t.pull.socket.opened == [t.pull]
    assert (t.link.dialer_end.taken, t.link.listener_end.taken) == (8, 8)


def test_a_dialed_pipe_connects_from_the_loop_not_inside_its_transition():
    t = Link()
    t.push.cmd_open()
    assert t.push.state == "connecting"
    t.push_loop.run_ready()
    assert t.push.state == "handshaking"


def test_a_dialed_pipe_closed_while_connecting_stays_dead():
    t = Link()
    t.push.cmd_open()
    t.push.cmd_close()
    t.push_loop.run_ready()
    assert t.push.state == "dead"
    assert t.push.socket.stats.snapshot().get("pipe_errors", 0) == 0


def test_peers_of_incompatible_protocols_close_the_link(caplog):
    t = Link(pull=protocols.Push)
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        t.push.cmd_open()
        t.pull.cmd_open()
        t.run()

    # The dialer reads the other's header first and refuses it; the other end then sees
    # the link close (before or after reading the dialer's header, as over TCP).
    assert (t.push.state, t.pull.state) == ("dead", "dead")
    assert t.push.socket.stats.snapshot().get("dropped_malformed") == 1
    assert "is not a valid peer" in caplog.text
    assert t.push.socket.opened == [] and t.pull.socket.opened == []


def test_a_message_crosses_as_the_very_bytes_object_sent():
    t = Link().open()
    body = b"z" * 100_000
    t.send(body)
    t.run()
    assert t.received == [body]
    assert t.received[0] is body


def test_a_header_is_joined_in_front_of_its_body():
    t = Link().open()
    t.push.cmd_send(b"body", b"\x80\x00\x00\x07")
    t.run()
    assert t.received == [b"\x80\x00\x00\x07body"]


def test_in_one_session_a_batch_of_sends_arrives_in_one_event_at_the_end_of_the_batch():
    t = Link().open()
    t.send(b"a", b"b", b"c")
    assert t.received == []  # nothing moves before the end of the batch

    t.push_loop.run_ready()

    assert t.pull.socket.proto.calls == [("evt_pipe_recv", t.pull, [b"a", b"b", b"c"])]
    assert t.push_loop.threadsafe_calls == 0
    assert t.push.socket.proto.calls == [("evt_pipe_ready", t.push)]  # room reported


def test_a_batch_from_push_crosses_as_its_very_bytes_objects_in_one_event():
    t = Link().open()
    bodies = [b"a", b"b" * 100_000, b"c"]
    sent = list(bodies)

    t.push.cmd_send_many(sent)
    t.push_loop.run_ready()

    assert sent == []
    assert t.pull.socket.proto.calls == [("evt_pipe_recv", t.pull, bodies)]
    assert all(got is body for got, body in zip(t.received, bodies, strict=True))


def test_a_batch_takes_what_the_pipe_has_room_for_and_leaves_the_rest():
    t = Link(push_options={"send_buffer": 2}).open()
    t.pull.cmd_pause()
    t.send(b"x" * (LINK_BYTES + 1))  # fills the link: the pipe's own queue holds the rest
    t.run()
    sent = [b"1", b"2", b"3"]

    t.push.cmd_send_many(sent)

    assert sent == [b"3"] and t.push.free == 0
    assert list(t.push._out) == [b"1", b"2"] and t.push._out_msgs == 2


def test_a_batch_ends_with_the_message_that_brings_the_queue_to_its_byte_bound():
    # As one enqueue per message would: the message that reaches HIGH_WATER bytes is
    # taken (here exactly at it), and the pipe has no room after it.
    t = Link().open()
    t.pull.cmd_pause()
    t.send(b"x" * (LINK_BYTES + 1))  # fills the link: the pipe's own queue holds the rest
    t.run()
    assert not t.push._out and t.push.free > 3
    first, second = b"a" * (HIGH_WATER - 20), b"b" * 20
    sent = [first, second, b"c"]

    t.push.cmd_send_many(sent)

    assert sent == [b"c"] and t.push.free == 0
    assert list(t.push._out) == [first, second] and t.push._out_msgs == 2
    assert t.push._out_bytes == HIGH_WATER


def test_a_published_batch_crosses_as_its_bodies_and_what_has_no_room_is_missed():
    t = Link(push=protocols.Pub, pull=protocols.Sub, push_options={"send_buffer": 2}).open()
    t.pull.cmd_pause()
    t.send(b"x" * (LINK_BYTES + 1))  # fills the link: the pipe's own queue holds the rest
    t.run()
    batch = Publication([b"1", b"2", b"3"])

    t.push.cmd_publish_many(batch)

    assert batch.missed == 1 and list(t.push._out) == [b"1", b"2"]
    assert all(got is body for got, body in zip(t.push._out, batch.bodies[:2], strict=True))


def test_across_sessions_a_batch_is_posted_once_to_the_receivers_loop():
    t = Link(same_session=False).open()
    posted = t.pull_loop.threadsafe_calls
    t.send(b"a", b"b")
    t.push_loop.run_ready()
    assert t.received == []
    assert t.pull_loop.threadsafe_calls == posted + 1

    t.send(b"c")  # the receiver has not looked yet: no second post
    t.push_loop.run_ready()
    assert t.pull_loop.threadsafe_calls == posted + 1

    t.pull_loop.run_ready()
    assert t.received == [b"a", b"b", b"c"]


def test_a_paused_reader_fills_the_link_then_pushes_back_on_the_sender():
    t = Link().open()
    t.pull.cmd_pause()
    bodies = [b"%d" % i for i in range(LINK_MSGS + 100)]
    t.send(*bodies)
    t.run()

    assert t.received == []
    assert len(t.link.listener_end.inbox) == LINK_MSGS
    assert len(t.push._out) == 100 and t.push._out_msgs == 100
    assert t.push.free == t.push._window - 100  # what waits for room takes a slot each
    assert t.link.dialer_end.blocked

    t.pull.cmd_resume()
    t.run()

    assert t.received == bodies
    assert not t.push._out and t.push._out_bytes == 0 and t.push._out_msgs == 0
    assert t.push.free == t.push._window
    assert not t.link.dialer_end.blocked
    assert t.link.listener_end.in_flight() == (0, 0)


def test_the_link_holds_a_bounded_number_of_bytes_but_always_one_message():
    t = Link(pull_options={"recv_max_size": 0}).open()
    t.pull.cmd_pause()
    big = b"x" * (LINK_BYTES + 1)
    t.send(big, b"small")
    t.run()

    assert list(t.link.listener_end.inbox) == [big]  # alone, over the bound
    assert list(t.push._out) == [b"small"]

    t.pull.cmd_resume()
    t.run()
    assert t.received == [big, b"small"]


def test_a_reader_that_empties_the_link_between_the_senders_look_and_its_flag_is_not_missed(monkeypatch):
    t = Link().open()
    real = MemoryEnd.in_flight
    looks = []

    def full_at_first_look(end):
        looks.append(end)
        return (LINK_MSGS, 0) if len(looks) == 1 else real(end)

    monkeypatch.setattr(MemoryEnd, "in_flight", full_at_first_look)
    t.send(b"a", b"b")
    t.push_loop.run_ready()

    assert len(looks) >= 2  # looked again after setting the flag
    assert t.received == [b"a", b"b"]
    assert not t.link.dialer_end.blocked


def test_what_was_sent_before_a_close_arrives_then_the_reader_sees_the_close():
    t = Link(same_session=False).open()
    t.send(b"1", b"2")
    t.push_loop.run_ready()
    t.push.cmd_close()  # nothing queued: dead at once
    assert t.push.state == "dead"

    t.pull_loop.run_ready()

    assert t.received == [b"1", b"2"]
    assert t.pull.state == "dead"
    assert t.pull.socket.closed == [t.pull]


def test_a_closing_pipe_flushes_to_a_paused_reader_once_it_resumes():
    t = Link(push_options={"linger": 5.0}).open()
    t.pull.cmd_pause()
    bodies = [b"%d" % i for i in range(LINK_MSGS + 3)]
    t.send(*bodies)
    t.run()
    t.push.cmd_close()
    assert t.push.state == "closing"

    t.pull.cmd_resume()
    t.run()

    assert t.received == bodies
    assert t.push.state == "dead"
    assert t.pull.state == "dead"


def test_sends_to_a_peer_that_has_gone_are_dropped_and_the_sender_sees_the_close():
    t = Link().open()
    t.pull.cmd_close()
    t.run()
    assert t.push.state == "dead"
    assert t.push.socket.closed == [t.push]


def test_a_message_over_the_receivers_limit_closes_the_pipe_after_the_ones_before_it(caplog):
    t = Link(pull_options={"recv_max_size": 10}).open()
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        t.send(b"ok", b"x" * 11, b"never")
        t.run()

    assert t.received == [b"ok"]
    assert t.pull.state == "dead"
    assert t.pull.socket.stats.snapshot().get("dropped_oversize") == 1
    assert any("exceeds recv_max_size=10" in r.getMessage() for r in caplog.records)


def test_a_message_at_the_receivers_limit_is_delivered():
    t = Link(pull_options={"recv_max_size": 10}).open()
    t.send(b"x" * 10, b"y" * 3)
    t.run()
    assert t.received == [b"x" * 10, b"y" * 3]
    assert t.pull.state == "active"


def test_a_memory_pipe_is_never_lent_to_a_callers_thread():
    t = Link().open()
    assert t.pull.lender.lend() is False
    assert t.pull_loop.lent == set()


def test_a_pending_connection_refused_by_a_closing_listener_closes_the_dialer(request):
    listener, _ = inproc.listen(f"inproc://{request.node.name}")
    end, err = inproc.connect(f"inproc://{request.node.name}")
    assert err == 0
    loop = FakeLoop()
    pipe = MemoryPipe(loop=loop, stream=end, transport=inproc,
                      socket=FakeSocket(protocols.Push), owner=FakeOwner(), dialed=True,
                      peer_addr="inproc://x")
    pipe.cmd_open()
    loop.run_ready()
    assert pipe.state == "handshaking"

    inproc.close_listener(listener)
    loop.run_ready()

    assert pipe.state == "dead"


def test_signal_to_a_closed_session_is_dropped():
    end = MemoryEnd()

    class ClosedLoop:
        def call_soon(self, fn):
            pass

        def call_soon_threadsafe(self, fn):
            raise RuntimeError("scaproust I/O loop is closed")

    end.attach(ClosedLoop(), lambda: None)
    end.signalled = False
    end.signal(from_loop=None)  # no exception: that session's pipes are going away
    assert end.signalled


@pytest.mark.parametrize("same_session", [True, False])
def test_many_messages_in_both_directions_arrive_in_order(same_session):
    t = Link(same_session=same_session, push=protocols.Pair,
             pull=protocols.Pair).open()
    there = [b"t%d" % i for i in range(3000)]
    back = [b"b%d" % i for i in range(3000)]
    for i in range(0, 3000, 500):
        t.send(*there[i:i + 500])
        for body in back[i:i + 500]:
            t.pull.cmd_send(body)
        t.run()
    assert t.received == there
    assert t.push.socket.proto.received == back
