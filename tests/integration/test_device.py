"""Devices between raw sockets of our own (REQ/REP topologies: tests/integration/test_reqrep_device.py)."""

from __future__ import annotations

import threading

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


def pair_chain(session):
    """client PAIR -> [raw PAIR | device | raw PAIR] -> server PAIR."""
    front = session.socket(sp.Pair, raw=True)
    back = session.socket(sp.Pair, raw=True)
    client = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    server = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    client.connect(front.bind("tcp://127.0.0.1:0").url)
    back.connect(server.bind("tcp://127.0.0.1:0").url)
    return front, back, client, server


def test_a_background_device_forwards_both_ways_and_stops_promptly(session):
    front, back, client, server = pair_chain(session)
    dev = sp.device(front, back, background=True)
    for i in range(50):
        client.send(b"up %d" % i)
    assert [server.recv() for _ in range(50)] == [b"up %d" % i for i in range(50)]
    server.send(b"down")
    assert client.recv() == b"down"
    dev.stop()
    assert dev.join(5.0)
    assert dev.forwarded == 51


def test_a_device_in_the_calling_thread_ends_when_a_socket_closes(session):
    pull = session.socket(sp.Pull, raw=True)
    push = session.socket(sp.Push, raw=True)
    sink = session.socket(sp.Pull, recv_timeout=5.0)
    source = session.socket(sp.Push, send_timeout=5.0)
    source.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.connect(sink.bind("tcp://127.0.0.1:0").url)
    runner = threading.Thread(target=sp.device, args=(pull, push))
    runner.start()
    source.send(b"through")
    assert sink.recv() == b"through"
    push.close()
    runner.join(5.0)
    assert not runner.is_alive()


def test_one_direction_stalled_never_stops_the_other(session):
    # The client sends a stream and reads in another thread; the server sends its whole
    # stream first, and only then reads. The client's messages wait at the device (the
    # server does not read yet): the server's must still go through, or both sides stall
    # (the device held one message and polled only its destination).
    front = session.socket(sp.Pair, raw=True, recv_buffer=4, send_buffer=4)
    back = session.socket(sp.Pair, raw=True, recv_buffer=4, send_buffer=4)
    client = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0, recv_buffer=4)
    server = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0, recv_buffer=4)
    client.connect(front.bind("inproc://stall-front").url)
    back.connect(server.bind("inproc://stall-back").url)
    dev = sp.device(front, back, background=True)
    count, body = 5000, b"m" * 64  # far more than the queues and links between them hold
    got = {"client": 0, "server": 0}

    def client_sends():
        for _ in range(count):
            client.send(body)

    def client_reads():
        for _ in range(count):
            client.recv()
            got["client"] += 1

    threads = [threading.Thread(target=client_sends), threading.Thread(target=client_reads)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        server.send(body)
    for _ in range(count):
        server.recv()
        got["server"] += 1
    for thread in threads:
        thread.join(5.0)
    assert got == {"client": count, "server": count}
    dev.stop()
    assert dev.join(5.0) and dev.forwarded == 2 * count


def test_a_device_ends_when_the_socket_it_reads_closes_while_a_message_waits(session):
    # Its one message waits for a destination with no peer: the device polled only that
    # destination, and never saw its source close.
    pull = session.socket(sp.Pull, raw=True)
    push = session.socket(sp.Push, raw=True)  # no peer: nothing can leave
    source = session.socket(sp.Push, send_timeout=5.0)
    source.connect(pull.bind("tcp://127.0.0.1:0").url)
    dev = sp.device(pull, push, background=True)
    source.send(b"stuck")
    wait_until(lambda: pull.stats.get("msgs_received") == 1 and not pull._channel.inbox.count,
               what="the device to take it")
    pull.close()
    assert dev.join(5.0)
    assert dev.forwarded == 0


def test_a_device_ends_when_its_session_closes():
    with sp.Session() as session:
        front, back, _, _ = pair_chain(session)
        dev = sp.device(front, back, background=True)
    assert dev.join(5.0)


def test_a_device_refuses_cooked_sockets_and_protocols_that_are_not_peers(session):
    with pytest.raises(ValueError, match="raw sockets"):
        sp.device(session.socket(sp.Pair), session.socket(sp.Pair, raw=True))
    with pytest.raises(ValueError, match="joins peer protocols: sp.Push and sp.Push are not"):
        sp.device(session.socket(sp.Push, raw=True), session.socket(sp.Push, raw=True))
    with pytest.raises(ValueError, match="reflects on raw BUS or PAIR"):
        sp.device(session.socket(sp.Push, raw=True))


def test_a_reflecting_pair_device_sends_back_what_it_receives(session):
    mirror = session.socket(sp.Pair, raw=True)
    peer = session.socket(sp.Pair, recv_timeout=5.0, send_timeout=5.0)
    peer.connect(mirror.bind("tcp://127.0.0.1:0").url)
    dev = sp.device(mirror, background=True)
    peer.send(b"echo me")
    assert peer.recv() == b"echo me"
    dev.stop()
    assert dev.join(5.0)
