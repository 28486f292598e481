"""BUS and PAIR v1 between our own sockets, cooked and raw, over TCP and IPC.

Test list:
- a bus message reaches every direct neighbour once, with no echo and no forwarding
- a bus send never blocks: with no peer, and with a peer that stops reading (misses counted)
- a raw bus device reflects each message to every neighbour but its sender
- a raw bus hands messages over under their pipe id, and sends no header on the wire
- pair1 exchanges messages both ways; a second peer is closed; send waits for a peer
- a raw pair1 sees the hop count; a device adds one hop; the ttl option drops the deep ones
- a raw pair1 refuses a send whose header is no hop count, and stays usable
"""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust.protocols._headers import pipe_word
from tests.integration.conftest import wait_until

T = 5.0  # every blocking call in this file gives up after this long


def hops(n: int) -> bytes:
    return n.to_bytes(4, "big")


def bus(session, raw: bool = False, **options):
    return session.socket(sp.Bus, raw=raw, recv_timeout=T, **options)


def pair1(session, raw: bool = False, **options):
    return session.socket(sp.Pair1, raw=raw, recv_timeout=T, send_timeout=T, **options)


def wait_pipes(sock, count: int) -> None:
    wait_until(lambda: sock.stats.get("pipes_opened", 0) >= count, what=f"{count} pipe(s) on {sock!r}")


def nothing_more(*socks) -> None:
    for sock in socks:
        with pytest.raises(sp.WouldBlock):
            sock.recv(block=False)


def star(session, url, leaves: int, hub_raw: bool = False):
    """A hub bus bound at ``url`` with ``leaves`` cooked buses connected to it, all linked."""
    hub = bus(session, raw=hub_raw)
    ep = hub.bind(url)
    spokes = [bus(session) for _ in range(leaves)]
    for spoke in spokes:
        spoke.connect(ep.url)
    wait_pipes(hub, leaves)
    for spoke in spokes:
        wait_pipes(spoke, 1)
    return hub, spokes


# ---------------------------------------------------------------- bus


def test_a_bus_message_reaches_every_direct_neighbour_once_with_no_echo_and_no_forwarding(
    session, url
):
    hub, (a, b, c) = star(session, url, 3)

    hub.send(b"from the hub")
    assert [a.recv(), b.recv(), c.recv()] == [b"from the hub"] * 3

    a.send(b"from a")
    assert hub.recv() == b"from a"
    # Had the hub forwarded "from a", b and c would get it before this, on the same
    # connection; and a would get its own message back before this.
    hub.send(b"second from the hub")
    assert [a.recv(), b.recv(), c.recv()] == [b"second from the hub"] * 3
    nothing_more(hub, a, b, c)


def test_a_bus_send_never_blocks_with_no_peer(session, url):
    lonely = bus(session, send_timeout=0)
    lonely.bind(url)

    for n in range(100):
        lonely.send(b"nobody %d" % n, block=False)

    wait_until(lambda: lonely.stats.get("msgs_sent", 0) == 100, what="every send handled")


def test_a_bus_send_never_blocks_on_a_peer_that_stops_reading_and_counts_what_it_misses(
    session, url
):
    # send() may wait for the I/O thread to catch up (16 MiB in flight at most), never
    # for the peer: with a peer that never reads, every send still completes.
    fast = bus(session, send_timeout=5.0)
    slow = bus(session, recv_max_size=0)  # each message is a little over 1 MiB
    slow.connect(fast.bind(url).url)
    wait_pipes(fast, 1)
    megabyte = bytes(1 << 20)
    sent = 40  # far beyond what the pipe, the kernel and the peer's inbox hold together

    for n in range(sent):
        fast.send(b"%08d" % n + megabyte)

    wait_until(lambda: fast.stats.get("dropped_pipe_full", 0) > 0, what="a missed message")
    wait_until(lambda: fast.stats.get("msgs_sent", 0) == sent, what="every send handled")
    missed = fast.stats["dropped_pipe_full"]
    got = [slow.recv()[:8] for _ in range(sent - missed)]
    numbers = [int(head) for head in got]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # in order, no duplicate
    nothing_more(slow)


def test_a_raw_bus_device_reflects_each_message_to_every_neighbour_but_its_sender(session, url):
    hub, (a, b, c) = star(session, url, 3, hub_raw=True)
    device = sp.device(hub, background=True)

    a.send(b"from a")
    assert [b.recv(), c.recv()] == [b"from a", b"from a"]
    b.send(b"from b")
    # If the device had echoed "from a" to a, it would have come first.
    assert [a.recv(), c.recv()] == [b"from b", b"from b"]
    device.stop()
    assert device.join(T)
    assert device.forwarded == 2
    nothing_more(a, b, c)


def test_a_raw_bus_hands_messages_over_under_their_pipe_id_and_sends_no_header(session, url):
    hub, (a, b) = star(session, url, 2, hub_raw=True)

    a.send(b"from a")
    b.send(b"from b")
    got = {msg.body: msg.header for msg in (hub.recv_msg(), hub.recv_msg())}
    assert set(got) == {b"from a", b"from b"}
    assert all(len(header) == 4 and header[0] & 0x80 == 0 for header in got.values())
    assert got[b"from a"] != got[b"from b"]

    hub.send_msg(sp.Message(b"to all but a", got[b"from a"]))
    msg = b.recv_msg()
    assert (msg.body, msg.header) == (b"to all but a", b"")
    hub.send(b"to all")
    assert a.recv() == b"to all"  # the first thing a gets: it was skipped before
    assert b.recv() == b"to all"
    hub.send_msg(sp.Message(b"unknown sender", pipe_word(0x7FFFFFFE)))
    assert [a.recv(), b.recv()] == [b"unknown sender"] * 2
    nothing_more(hub, a, b)


# ---------------------------------------------------------------- pair v1


def test_pair1_exchanges_messages_both_ways(session, url):
    a, b = pair1(session), pair1(session)
    b.connect(a.bind(url).url)

    b.send(b"ping")
    assert a.recv() == b"ping"
    a.send(b"pong")
    assert b.recv() == b"pong"
    a.send(b"")
    assert b.recv() == b""
    big = bytes(range(256)) * 4096  # 1 MiB less the 4-byte hop count: fits recv_max_size
    b.send(big[:-4])
    assert a.recv() == big[:-4]


def test_a_second_pair1_peer_is_closed_and_the_first_stays(session, url):
    a = pair1(session)
    ep = a.bind(url)
    first = pair1(session)
    first.connect(ep.url)
    first.send(b"first")
    assert a.recv() == b"first"

    second = pair1(session, reconnect_interval=10.0)
    second.connect(ep.url)
    wait_until(lambda: a.stats.get("pipes_rejected", 0) >= 1, what="the second peer's rejection")

    a.send(b"to the first")
    assert first.recv() == b"to the first"
    # The second peer had the connection for a moment (it got a's header before the
    # close): wait until it has seen the close, which its I/O thread reads in its own time.
    wait_until(lambda: second.stats.get("pipes_closed", 0) == 1, what="the second's close")
    assert second.stats.get("pipes_opened", 0) == 1
    with pytest.raises(sp.WouldBlock):
        second.send(b"never", block=False)


def test_a_pair1_send_waits_for_a_peer(session, url):
    a = session.socket(sp.Pair1, send_timeout=0.05)
    a.bind(url)

    with pytest.raises(sp.Timeout):
        a.send(b"alone")


def test_a_raw_pair1_sees_hop_count_one_from_a_cooked_peer_and_its_sends_add_one(session, url):
    raw, cooked = pair1(session, raw=True), pair1(session)
    cooked.connect(raw.bind(url).url)

    cooked.send(b"first hop")
    msg = raw.recv_msg()
    assert (msg.body, msg.header) == (b"first hop", hops(1))

    raw.send_msg(sp.Message(b"hop 8", hops(7)))
    raw.send_msg(sp.Message(b"hop 9", hops(8)))  # over the cooked peer's ttl: dropped
    raw.send_msg(sp.Message(b"hop 1", hops(0)))
    assert cooked.recv() == b"hop 8"
    assert cooked.recv() == b"hop 1"
    wait_until(lambda: cooked.stats.get("dropped_ttl", 0) == 1, what="the drop to be counted")
    nothing_more(cooked)


def test_a_pair1_device_adds_one_hop_and_the_ttl_option_drops_deeper_messages(session, tmp_path):
    front, back = pair1(session, raw=True), pair1(session, raw=True)
    client, server = pair1(session), pair1(session, ttl=2)
    client.connect(front.bind(f"ipc://{tmp_path}/front.ipc").url)
    back.connect(server.bind("tcp://127.0.0.1:0").url)
    device = sp.device(front, back, background=True)

    client.send(b"two hops")
    assert server.recv() == b"two hops"  # hop count 2: within ttl=2
    server.send(b"back")
    assert client.recv() == b"back"

    server.ttl = 1
    client.send(b"too deep")  # arrives with 2 > 1
    client.send(b"too deep again")
    wait_until(lambda: server.stats.get("dropped_ttl", 0) == 2, what="two drops")
    server.ttl = 8
    client.send(b"fine again")
    assert server.recv() == b"fine again"
    nothing_more(server, client)
    device.stop()
    assert device.join(T)


def test_a_raw_pair1_refuses_a_send_whose_header_is_no_hop_count_and_stays_usable(session, url):
    raw, cooked = pair1(session, raw=True), pair1(session)
    cooked.connect(raw.bind(url).url)

    raw.send(b"no header")
    raw.send_msg(sp.Message(b"hop 255", hops(0xFF)))
    raw.send_msg(sp.Message(b"good", hops(0)))

    assert cooked.recv() == b"good"
    assert raw.stats["dropped_bad_header"] == 2
    nothing_more(cooked)
