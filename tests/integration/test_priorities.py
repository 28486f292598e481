"""Send and receive priorities, fixed per endpoint at bind()/connect()."""

from __future__ import annotations

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


def test_push_sends_to_the_best_priority_pipe_while_it_can_take_messages(session):
    best = session.socket(sp.Pull, recv_timeout=5.0)
    worse = session.socket(sp.Pull, recv_timeout=0.2)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(worse.bind("tcp://127.0.0.1:0").url, send_priority=2)
    push.connect(best.bind("tcp://127.0.0.1:0").url, send_priority=1)
    wait_until(lambda: push.stats.get("pipes_opened", 0) == 2, what="both pipes")
    for i in range(100):
        push.send(b"%d" % i)
    assert [best.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]
    with pytest.raises(sp.Timeout):
        worse.recv()


def test_push_falls_back_to_a_worse_priority_when_the_best_pipe_is_gone(session):
    best = session.socket(sp.Pull, recv_timeout=5.0)
    worse = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0, send_priority=2)
    push.connect(worse.bind("tcp://127.0.0.1:0").url)
    best_ep = best.bind("tcp://127.0.0.1:0")
    push.connect(best_ep.url, send_priority=1)
    wait_until(lambda: push.stats.get("pipes_opened", 0) == 2, what="both pipes")
    best.close()
    wait_until(lambda: push.stats.get("pipes_closed", 0) == 1, what="the best pipe to go")
    push.send(b"fallback")
    assert worse.recv() == b"fallback"


def test_pull_hands_out_messages_of_the_best_receive_priority_first(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    low = pull.bind("tcp://127.0.0.1:0", recv_priority=16)
    high = pull.bind("tcp://127.0.0.1:0", recv_priority=1)
    from_low = session.socket(sp.Push, send_timeout=5.0)
    from_high = session.socket(sp.Push, send_timeout=5.0)
    from_low.connect(low.url)
    from_high.connect(high.url)
    for i in range(20):
        from_low.send(b"low %d" % i)
    wait_until(lambda: pull.stats.get("msgs_received", 0) == 20, what="the low-priority messages")
    for i in range(20):
        from_high.send(b"high %d" % i)
    wait_until(lambda: pull.stats.get("msgs_received", 0) == 40, what="the high-priority messages")
    got = [pull.recv() for _ in range(40)]
    assert got == [b"high %d" % i for i in range(20)] + [b"low %d" % i for i in range(20)]


def test_priorities_are_validated(session):
    push = session.socket(sp.Push)
    with pytest.raises(ValueError, match="send_priority must be from 1 to 16"):
        push.connect("tcp://127.0.0.1:5", send_priority=0)
    with pytest.raises(ValueError, match="recv_priority"):
        session.socket(sp.Pull, recv_priority=17)
