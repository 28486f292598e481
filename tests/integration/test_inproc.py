"""inproc://: sockets of one process, across sessions, every protocol's pipes."""

from __future__ import annotations

import pytest

import scaproust as sp


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
    from tests.integration.conftest import wait_until

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
