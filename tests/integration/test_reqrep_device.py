"""REQ/REP through devices: replies find their requester, backtraces grow one word a hop."""

from __future__ import annotations

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until

T = 5.0


def broker(session):
    """clients -> [raw REP | device | raw REQ] -> servers; returns (front url, back url, device)."""
    front = session.socket(sp.Rep, raw=True)
    back = session.socket(sp.Req, raw=True)
    front_url = front.bind("tcp://127.0.0.1:0").url
    back_url = back.bind("tcp://127.0.0.1:0").url
    return front_url, back_url, sp.device(front, back, background=True)


def test_two_reqs_through_a_device_to_two_reps_each_get_their_own_reply_even_in_reverse_order(session):
    front_url, back_url, device = broker(session)
    servers = [session.socket(sp.Rep, raw=True, recv_timeout=T) for _ in range(2)]
    clients = [session.socket(sp.Req, recv_timeout=T, send_timeout=T) for _ in range(2)]
    for server in servers:
        server.connect(back_url)
    for client in clients:
        client.connect(front_url)
    wait_until(lambda: device.left.stats.get("pipes_opened", 0) == 2
               and device.right.stats.get("pipes_opened", 0) == 2, what="every connection")

    clients[0].send(b"from client 0")
    clients[1].send(b"from client 1")
    # The raw servers hold both requests, wherever round-robin put them, and answer the
    # second before the first.
    held = []
    while len(held) < 2:
        ready = sp.poll({s: sp.POLLIN for s in servers}, timeout=T)
        assert ready, "the requests never reached the servers"
        for server in ready:
            held.append((server, server.recv_msg()))
    for server, msg in reversed(held):
        server.send_msg(sp.Message(b"reply to " + msg.body, msg.header))

    assert clients[0].recv() == b"reply to from client 0"
    assert clients[1].recv() == b"reply to from client 1"
    device.stop()
    assert device.join(T)


def chain(session, client, hops: int):
    """client -> hops x [raw REP | device | raw REQ] -> returns (last raw REQ, devices)."""
    devices, upstream = [], client
    for _ in range(hops):
        front = session.socket(sp.Rep, raw=True)
        back = session.socket(sp.Req, raw=True)
        upstream.connect(front.bind("tcp://127.0.0.1:0").url)
        devices.append(sp.device(front, back, background=True))
        upstream = back
    return upstream, devices


def stop(devices) -> None:
    for device in devices:
        device.stop()
        assert device.join(T)


def test_a_chain_of_devices_grows_the_backtrace_one_word_per_hop(session):
    client = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    hops = 6
    last, devices = chain(session, client, hops)
    server = session.socket(sp.Rep, raw=True, recv_timeout=T)
    last.connect(server.bind("tcp://127.0.0.1:0").url)

    client.send(b"deep")
    msg = server.recv_msg()
    # One word per device, the request id at the bottom, and our raw REP's own pipe word
    # on top: 6 + 1 + 1 = 8 words, the most the default TTL lets through.
    words = [int.from_bytes(msg.header[i:i + 4], "big") for i in range(0, len(msg.header), 4)]
    assert [w >> 31 for w in words] == [0] * (hops + 1) + [1]
    server.send_msg(sp.Message(b"back up", msg.header))
    assert client.recv() == b"back up"
    stop(devices)


def test_one_device_more_than_the_ttl_allows_and_the_request_is_dropped(session):
    client = session.socket(sp.Req, recv_timeout=0.3, send_timeout=T)
    last, devices = chain(session, client, 8)  # 8 device words + the id: 9 words
    server = session.socket(sp.Rep, recv_timeout=0.3)
    last.connect(server.bind("tcp://127.0.0.1:0").url)
    client.send(b"too deep")
    wait_until(lambda: server.stats.get("dropped_ttl", 0) == 1, what="the TTL drop")
    with pytest.raises(sp.Timeout):
        server.recv()
    server.ttl = 9  # with a deeper TTL the same path works
    client.send(b"deep enough")
    assert server.recv(timeout=T) == b"deep enough"
    stop(devices)


def test_a_device_passes_back_replies_deeper_than_its_own_ttl(session):
    # The hops are counted on the way out, by each REP (as nng). A reply comes back one
    # word deeper than its request left this device: its raw REQ dropped it
    # (dropped_ttl), and the client waited for a resend that got the same fate.
    front = session.socket(sp.Rep, raw=True, ttl=1)  # takes a client's 1-word request
    back = session.socket(sp.Req, raw=True, ttl=1)
    client = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    client.connect(front.bind("tcp://127.0.0.1:0").url)
    server = session.socket(sp.Rep, recv_timeout=T, send_timeout=T)
    back.connect(server.bind("tcp://127.0.0.1:0").url)
    device = sp.device(front, back, background=True)

    client.send(b"question")
    assert server.recv() == b"question"
    server.send(b"answer")  # [the device's pipe word, the id]: two words
    assert client.recv() == b"answer"
    assert back.stats.get("dropped_ttl", 0) == 0
    stop([device])
