"""PAIR v0 between our own sockets."""

from __future__ import annotations

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


def test_pair_exchanges_messages_both_ways(session, url):
    a = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    b = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    b.connect(a.bind(url).url)
    b.send(b"ping")
    assert a.recv() == b"ping"
    a.send(b"pong")
    assert b.recv() == b"pong"
    a.send(b"")
    assert b.recv() == b""


def test_a_second_pair_peer_is_closed_and_the_first_stays(session, url):
    a = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    ep = a.bind(url)
    first = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    first.connect(ep.url)
    first.send(b"first")
    assert a.recv() == b"first"
    second = session.socket(sp.Pair, send_timeout=0.2, reconnect_interval=10.0)
    second.connect(ep.url)
    wait_until(lambda: a.stats.get("pipes_rejected", 0) >= 1, what="the second peer's rejection")
    wait_until(lambda: second.stats.get("pipes_closed", 0) >= 1, what="the second peer seeing it")
    a.send(b"to the first")
    assert first.recv() == b"to the first"
    with pytest.raises(sp.Timeout):
        second.send(b"never")  # its pipe was closed, so it has no peer to send to
    assert a.stats["pipes_rejected"] == 1  # and it waits before retrying: no reconnect storm


def test_pair_send_blocks_with_no_peer(session):
    a = session.socket(sp.Pair, send_timeout=0.05)
    a.bind("tcp://127.0.0.1:0")
    with pytest.raises(sp.Timeout):
        a.send(b"alone")


def test_pair_reconnects_after_the_peer_goes_away(session):
    a = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    ep = a.bind("tcp://127.0.0.1:0")
    b = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    b.connect(ep.url)
    b.send(b"one")
    assert a.recv() == b"one"
    b.close()
    c = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    c.connect(ep.url)
    c.send(b"two")
    assert a.recv() == b"two"
    a.send(b"back")
    assert c.recv() == b"back"


def test_the_dialer_retries_until_the_listener_appears(session, tmp_path):
    url = f"ipc://{tmp_path}/late.ipc"
    b = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0, reconnect_interval=0.01)
    b.connect(url)  # nobody there yet: returns at once, retries in the background
    wait_until(lambda: b.stats.get("connect_failures", 0) >= 1, what="a failed attempt")
    a = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    a.bind(url)
    b.send(b"late")
    assert a.recv() == b"late"
