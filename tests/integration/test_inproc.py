"""inproc://: sockets of one process, across sessions, every protocol's pipes."""

from __future__ import annotations

import os

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


@pytest.fixture
def name(request):
    return f"inproc://{request.node.name}"


def test_push_pull_over_inproc_between_two_sessions(session, name):
    with sp.Session() as other:
        pull = session.socket(sp.Pull, recv_timeout=5)
        assert pull.bind(name).url == name
        push = other.socket(sp.Push, send_timeout=5)
        push.connect(name)
        for i in range(100):
            push.send(b"%d" % i)
        assert [pull.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]


def test_req_rep_over_inproc(session, name):
    rep = session.socket(sp.Rep, recv_timeout=5)
    req = session.socket(sp.Req, recv_timeout=5)
    rep.bind(name)
    req.connect(name)
    req.send(b"q")
    assert rep.recv() == b"q"
    rep.send(b"a")
    assert req.recv() == b"a"


def test_an_inproc_name_binds_once_and_is_free_again_after_close(session, name):
    first = session.socket(sp.Pair)
    ep = first.bind(name)
    with pytest.raises(sp.AddressInUse):
        session.socket(sp.Pair).bind(name)
    ep.close()
    session.socket(sp.Pair).bind(name)


def test_a_dialer_waits_for_the_inproc_name_to_be_bound(session, name):
    a = session.socket(sp.Pair, recv_timeout=5, reconnect_interval=0.01)
    a.connect(name)
    wait_until(lambda: a.stats.get("connect_failures", 0) >= 1, what="a refused attempt")
    b = session.socket(sp.Pair, send_timeout=5)
    b.bind(name)
    b.send(b"late")
    assert a.recv() == b"late"


def test_the_peer_of_an_inproc_pipe_is_named_by_the_url(session, name):
    import queue

    events = queue.Queue()
    pull = session.socket(sp.Pull)
    pull.add_pipe_listener(events.put)
    pull.bind(name)
    session.socket(sp.Push).connect(name)
    event = events.get(timeout=5)
    assert (event.kind, event.peer, event.endpoint) == ("added", name, name)


def test_an_empty_inproc_name_is_invalid(session):
    with pytest.raises(sp.InvalidAddress, match="empty inproc name"):
        session.socket(sp.Pair).bind("inproc://")


# ---------------------------------------------------------------- messages in memory


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_inproc_message_is_the_bytes_object_the_sender_gave(session, name):
    pull = session.socket(sp.Pull, recv_timeout=5)
    push = session.socket(sp.Push, send_timeout=5)
    pull.bind(name)
    push.connect(name)
    body = b"z" * 100_000
    push.send(body)
    assert pull.recv() is body  # no frame, no copy


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
def test_inproc_connections_open_no_descriptor(session, name):
    pull = session.socket(sp.Pull)
    pull.bind(name)
    before = _fds()
    pushes = [session.socket(sp.Push) for _ in range(20)]
    for push in pushes:
        push.connect(name)
    wait_until(lambda: pull.stats.get("pipes_opened", 0) == 20, what="20 inproc pipes")
    assert _fds() == before


def test_a_lone_send_is_delivered_before_it_returns(session, name):
    # Within one session the caller's thread runs the send and the delivery: the message
    # is in the receiver's queue when send() returns, the I/O thread never woken.
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push)
    pull.bind(name)
    push.connect(name)
    wait_until(lambda: pull.stats.get("pipes_opened", 0) == push.stats.get("pipes_opened", 0) == 1,
               what="the pipe, at both ends")
    push.send(b"now")
    assert pull.try_recv() == b"now"


def test_across_sessions_a_reader_that_stops_pushes_back_and_loses_nothing(session, name):
    with sp.Session() as other:
        pull = session.socket(sp.Pull, recv_timeout=5)
        push = other.socket(sp.Push, send_timeout=0.2)
        pull.bind(name)
        push.connect(name)
        sent = 0
        with pytest.raises(sp.Timeout):
            while sent < 100_000:
                push.send(b"%d" % sent)
                sent += 1
        # Bounded: the receive queue, the link and the sender's own queue, nothing more.
        assert 2000 < sent < 5000
        assert [pull.recv() for _ in range(sent)] == [b"%d" % i for i in range(sent)]
        push.send_timeout = 5
        push.send(b"after")
        assert pull.recv() == b"after"


def test_closing_the_sender_delivers_what_it_had_queued_first(session, name):
    with sp.Session() as other:
        pull = session.socket(sp.Pull, recv_timeout=5)
        push = other.socket(sp.Push, send_timeout=5, linger=5)
        pull.bind(name)
        push.connect(name)
        bodies = [b"%d" % i for i in range(2000)]
        for body in bodies:
            push.send(body)
        push.close()
        assert [pull.recv() for _ in bodies] == bodies
        wait_until(lambda: pull.stats.get("pipes_closed", 0) == 1, what="the pipe's close")


def test_inproc_peers_of_incompatible_protocols_never_pair(session, name, caplog):
    a = session.socket(sp.Push)
    b = session.socket(sp.Push, reconnect_interval=0.01)
    a.bind(name)
    with caplog.at_level("WARNING", logger="scaproust.pipe"):
        b.connect(name)
        wait_until(lambda: a.stats.get("dropped_malformed", 0) + b.stats.get(
            "dropped_malformed", 0) >= 2, what="refused headers")
    assert a.stats.get("pipes_opened", 0) == 0 and b.stats.get("pipes_opened", 0) == 0
    assert "is not a valid peer" in caplog.text
