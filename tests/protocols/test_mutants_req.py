"""More of the REQ machines and the cooked REQ's policy (protocols.yaml, machines ``req`` and
``req_raw``; protocols/req.py): send credit once a waiting request goes out, replies from a
pipe closed for a malformed one, and a reply already queued for a new request (written to
kill the mutants of ``make mutate`` that survived test_req.py).
"""

from __future__ import annotations

import pytest

from scaproust.core.channel import Channel
from scaproust.core.message import Message
from scaproust.core.options import Options
from scaproust.protocols.req import Req, ReqPolicy, ReqRaw

from .fakes import FakePipe, sent_through

# The fixtures and constants of test_req.py (pytest finds imported fixtures).
from .test_req import ID, REQUEST, ctx, req  # noqa: F401


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


def test_a_reply_to_the_new_request_already_queued_when_it_is_sent_is_kept():
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    policy = ReqPolicy(channel, Options("req"))
    old = sent_through(policy, b"one").header
    new = policy.outgoing(b"two")
    # The reply to the new request overtook the sent() bookkeeping (resends do that).
    channel.push_many([Message(b"stale", old), Message(b"fresh", new.header)])

    policy.sent(new)

    assert list(channel.inbox.drain()) == [Message(b"fresh", new.header)]


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
    assert ctx.capacity == 2

    ctx.loop.advance(1.0)  # resend_interval

    assert pipe.sent == [(b"question", ID), (b"question", ID)]
    assert ctx.capacity == 1
