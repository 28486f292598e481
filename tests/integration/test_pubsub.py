"""PUB and SUB between our own sockets over TCP and IPC, cooked and raw.

A PUB sends only to the pipes it has when it publishes, so each test first waits for the
PUB to count its pipes (``pipes_opened``): from then on everything published reaches the
SUB (its subscriptions are made before it connects).

Test list:
- a SUB receives exactly the messages matching its topics, in order
- no subscription receives nothing (a subscribed SUB on the same PUB is the control)
- the empty topic, str topics, topics added and removed while messages flow
- unsubscribe purges messages already queued, at once (subscribing again brings none
  back); unknown topic: ValueError; bad type: TypeError
- a PUB fans out to every SUB; sends with nobody connected are dropped
- a PUB never blocks and a slow SUB loses messages instead of growing memory
- a SUB never writes a byte: a raw peer speaking PUB's header sees only our 8-byte header
- data sent to a PUB closes that connection, logged; the PUB keeps serving others
- raw SUB receives everything unfiltered and has no subscriptions; raw PUB = cooked PUB
- PUB cannot receive, SUB cannot send, other sockets have no subscriptions
"""

from __future__ import annotations

import logging
import socket
import struct

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until

PUB_HEADER = b"\x00SP\x00\x00\x20\x00\x00"
SUB_HEADER = b"\x00SP\x00\x00\x21\x00\x00"


def pipes_of(sock, count=1):
    wait_until(lambda: sock.stats.get("pipes_opened", 0) >= count, what=f"{count} pipe(s) of {sock!r}")


def joined(session, url, *topics, raw_sub=False, raw_pub=False, **sub_options):
    """A SUB bound on ``url`` with ``topics`` and a PUB connected to it, ready to publish."""
    sub = session.socket(sp.Sub, raw=raw_sub, recv_timeout=5.0, **sub_options)
    for topic in topics:
        sub.subscribe(topic)
    pub = session.socket(sp.Pub, raw=raw_pub)
    pub.connect(sub.bind(url).url)
    pipes_of(pub)
    return pub, sub


def receive(sub, count):
    return [sub.recv() for _ in range(count)]


def nothing_more(sub):
    with pytest.raises(sp.WouldBlock):
        sub.recv(block=False)


# ---------------------------------------------------------------- filtering


def test_sub_receives_exactly_the_messages_matching_its_topics_in_order(session, url):
    pub, sub = joined(session, url, b"weather")
    sent = [b"%s %d" % (topic, n) for n in range(50) for topic in (b"weather", b"sports")]
    for body in sent:
        pub.send(body)
    pub.send(b"weather end")

    expected = [body for body in sent if body.startswith(b"weather")] + [b"weather end"]
    assert receive(sub, len(expected)) == expected
    wait_until(lambda: sub.stats.get("dropped_unmatched", 0) == 50, what="the sports messages to be filtered")
    nothing_more(sub)


def test_sub_without_subscription_receives_nothing(session, url):
    deaf = session.socket(sp.Sub)
    control = session.socket(sp.Sub, recv_timeout=5.0)
    control.subscribe(b"")
    pub = session.socket(sp.Pub)
    ep = pub.bind(url)
    deaf.connect(ep.url)
    control.connect(ep.url)
    pipes_of(pub, 2)

    for n in range(10):
        pub.send(b"m%d" % n)

    assert receive(control, 10) == [b"m%d" % n for n in range(10)]
    wait_until(lambda: deaf.stats.get("dropped_unmatched", 0) == 10, what="the deaf SUB to drop all")
    nothing_more(deaf)


def test_the_empty_topic_matches_everything_even_an_empty_message(session, url):
    pub, sub = joined(session, url, b"")
    for body in (b"", b"a", b"\x00\xff" * 1000):
        pub.send(body)
    assert receive(sub, 3) == [b"", b"a", b"\x00\xff" * 1000]


def test_a_str_topic_is_encoded_as_utf8(session, url):
    pub, sub = joined(session, url, "météo")
    pub.send("météo: soleil".encode())
    pub.send(b"m\xe9t\xe9o latin-1, not the same bytes")
    pub.send("météo: pluie".encode())
    assert receive(sub, 2) == ["météo: soleil".encode(), "météo: pluie".encode()]


def test_topics_added_and_removed_apply_to_the_following_messages(session, url):
    pub, sub = joined(session, url, b"a")
    for body in (b"a1", b"b1", b"a2"):
        pub.send(body)
    assert receive(sub, 2) == [b"a1", b"a2"]  # so b1 went through the filter before "b"

    sub.subscribe(b"b")
    pub.send(b"b2")
    assert sub.recv() == b"b2"

    sub.unsubscribe(b"a")
    pub.send(b"a3")
    pub.send(b"b3")
    assert sub.recv() == b"b3"
    nothing_more(sub)


def test_unsubscribe_purges_matching_messages_already_queued(session, url):
    pub, sub = joined(session, url, b"a", b"b")
    for body in (b"a1", b"b1", b"a2", b"b2"):
        pub.send(body)
    wait_until(lambda: sub.stats.get("msgs_received", 0) == 4, what="four messages queued")

    sub.unsubscribe("a")

    assert receive(sub, 2) == [b"b1", b"b2"]
    nothing_more(sub)
    assert sub.stats["purged_unmatched"] == 2  # four queued: two delivered, two purged


def test_a_message_queued_before_an_unsubscribe_stays_gone_when_the_topic_comes_back(
        session, url):
    # Dropped only at recv() time, it came back once the topic was subscribed again
    # (nng drops it at the unsubscribe).
    pub, sub = joined(session, url, b"a")
    pub.send(b"a-old")
    wait_until(lambda: sub.stats.get("msgs_received", 0) == 1, what="the message queued")

    sub.unsubscribe(b"a")
    assert sub.stats["purged_unmatched"] == 1
    sub.subscribe(b"a")
    pub.send(b"a-new")

    assert sub.recv() == b"a-new"
    nothing_more(sub)


def test_try_recv_purges_after_unsubscribe_as_recv_does(session, url):
    # try_recv's fast path hands queued messages over unchecked until the first unsubscribe.
    pub, sub = joined(session, url, b"", b"b")
    for body in (b"a1", b"b1", b"a2"):
        pub.send(body)
    wait_until(lambda: sub.stats.get("msgs_received", 0) == 3, what="three messages queued")
    assert sub.try_recv() == b"a1"
    with pytest.raises(ValueError):
        sub.unsubscribe(b"c")  # refused: the fast path stays
    assert sub.try_recv() == b"b1"

    sub.unsubscribe(b"")

    assert sub.try_recv() is None  # a2 matches no topic left
    assert sub.stats["purged_unmatched"] == 1
    pub.send(b"a3")
    pub.send(b"b3")
    assert sub.recv() == b"b3"
    assert sub.try_recv() is None


def test_try_recv_many_purges_after_unsubscribe_as_recv_does(session, url):
    # Before the first unsubscribe a batch is taken in one go; after it, message by
    # message through the policy, which drops what no topic matches any more.
    pub, sub = joined(session, url, b"", b"b")
    for body in (b"a1", b"b1", b"a2", b"b2", b"a3"):
        pub.send(body)
    wait_until(lambda: sub.stats.get("msgs_received", 0) == 5, what="five messages queued")
    assert sub.try_recv_many(limit=2) == [b"a1", b"b1"]

    sub.unsubscribe(b"")

    assert sub.try_recv_many() == [b"b2"]
    assert sub.stats["purged_unmatched"] == 2
    assert sub.try_recv_many() == []


def test_unsubscribing_an_unknown_topic_raises_value_error_naming_it(session):
    sub = session.socket(sp.Sub)
    sub.subscribe(b"abc")
    with pytest.raises(ValueError, match=r"not subscribed to topic b'ab'"):
        sub.unsubscribe(b"ab")
    sub.unsubscribe("abc")
    with pytest.raises(ValueError, match=r"not subscribed to topic b'abc'"):
        sub.unsubscribe(b"abc")


def test_a_topic_must_be_bytes_or_str(session):
    sub = session.socket(sp.Sub)
    with pytest.raises(TypeError, match="a topic is bytes or str, not int"):
        sub.subscribe(42)
    with pytest.raises(TypeError, match="a topic is bytes or str, not NoneType"):
        sub.unsubscribe(None)


def test_subscriptions_after_close_raise_closed(session):
    sub = session.socket(sp.Sub)
    sub.close()
    with pytest.raises(sp.Closed):
        sub.subscribe(b"a")
    with pytest.raises(sp.Closed):
        sub.unsubscribe(b"a")


# ---------------------------------------------------------------- publishing


def test_pub_fans_out_every_message_to_every_sub(session, url):
    pub = session.socket(sp.Pub)
    subs = [session.socket(sp.Sub, recv_timeout=5.0) for _ in range(3)]
    ep = pub.bind(url)
    for sub in subs:
        sub.subscribe(b"")
        sub.connect(ep.url)
    pipes_of(pub, 3)

    for n in range(100):
        pub.send(b"%d" % n)

    for sub in subs:
        assert receive(sub, 100) == [b"%d" % n for n in range(100)]


def test_pub_with_no_subscriber_drops_and_counts(session):
    pub = session.socket(sp.Pub, send_timeout=0)
    for _ in range(3):
        pub.send(b"nobody listens")  # send_timeout=0: would raise WouldBlock if it could block
    wait_until(lambda: pub.stats.get("dropped_no_subscriber", 0) == 3, what="three drops")


def test_pub_never_blocks_and_a_slow_sub_loses_messages_instead_of_growing_memory(session, url):
    """The SUB never reads while 100 MiB are published: its receive queue (2 MiB), the
    kernel buffers and the PUB's pipe queue (4 MiB) fill up, then the PUB drops what the
    pipe cannot take. What arrives is a bounded, in-order subset."""
    size, count = 256 * 1024, 400
    pub, sub = joined(session, url, b"", recv_max_size=0)
    filler = bytes(size - 4)
    for start in range(0, count, 16):
        for n in range(start, start + 16):
            pub.send(n.to_bytes(4, "big") + filler, block=False)  # never WouldBlock
        # Pace the test, not the PUB: keep our own outbox small (the PUB never waits).
        wait_until(lambda s=start: pub.stats.get("msgs_sent", 0) == s + 16, what="the PUB to publish")

    dropped = pub.stats.get("dropped_slow_subscriber", 0)
    assert dropped > 0
    arrived = count - dropped
    assert arrived * size <= 64 * 1024 * 1024  # bounded by queues and buffers, not by 100 MiB
    numbers = [int.from_bytes(sub.recv()[:4], "big") for _ in range(arrived)]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0  # in order, no duplicate
    nothing_more(sub)


# ---------------------------------------------------------------- what goes on the wire


def raw_connect(url: str):
    """A plain stream socket to our listener on ``url``."""
    if url.startswith("tcp://"):
        host, port = url[len("tcp://"):].rsplit(":", 1)
        conn = socket.create_connection((host, int(port)), timeout=5.0)
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        conn.connect(url[len("ipc://"):])
    return conn


def frame(url: str, payload: bytes) -> bytes:
    prefix = struct.pack(">Q", len(payload))
    return (b"\x01" + prefix if url.startswith("ipc://") else prefix) + payload


def read_exactly(conn, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes: {data!r}"
        data += chunk
    return data


def read_until_eof(conn) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


@pytest.mark.raw_wire(("tcp", "ipc"))
def test_sub_never_writes_a_byte_beyond_its_header(session, url):
    sub = session.socket(sp.Sub, recv_timeout=5.0)
    sub.subscribe(b"t")
    ep = sub.bind(url)
    with raw_connect(ep.url) as peer:
        peer.sendall(PUB_HEADER + frame(ep.url, b"t hello"))
        assert sub.recv() == b"t hello"
        sub.subscribe(b"")  # subscription changes are not sent either (WIRE.md)
        sub.unsubscribe(b"t")
        peer.sendall(frame(ep.url, b"other"))
        assert sub.recv() == b"other"

        sub.close()
        assert read_until_eof(peer) == SUB_HEADER


@pytest.mark.raw_wire(("tcp", "ipc"))
def test_data_sent_to_a_pub_closes_that_connection_and_is_logged(session, url, caplog):
    pub = session.socket(sp.Pub)
    ep = pub.bind(url)
    with raw_connect(ep.url) as peer, caplog.at_level(logging.WARNING, logger="scaproust"):
        peer.sendall(SUB_HEADER)
        pipes_of(pub)
        pub.send(b"news")
        expected = PUB_HEADER + frame(ep.url, b"news")
        assert read_exactly(peer, len(expected)) == expected
        peer.sendall(frame(ep.url, b"a subscription, wrongly"))
        assert read_until_eof(peer) == b""  # closed by the PUB
    assert "a SUB peer sent 1 message(s) to this PUB" in caplog.text
    assert pub.stats["pipes_rejected"] == 1 and pub.stats["dropped_unexpected"] == 1

    sub = session.socket(sp.Sub, recv_timeout=5.0)
    sub.subscribe(b"")
    sub.connect(ep.url)
    pipes_of(pub, 2)
    pub.send(b"still publishing")
    assert sub.recv() == b"still publishing"


# ---------------------------------------------------------------- raw


def test_raw_sub_receives_everything_unfiltered(session, url):
    pub, sub = joined(session, url, raw_sub=True)
    for body in (b"a", b"", b"b"):
        pub.send(body)
    assert receive(sub, 3) == [b"a", b"", b"b"]
    pub.send(b"c")
    assert sub.recv_msg() == sp.Message(b"c")  # no header


def test_raw_sub_has_no_subscriptions(session):
    sub = session.socket(sp.Sub, raw=True)
    with pytest.raises(sp.NotSupported, match="raw sp.Sub receives everything"):
        sub.subscribe(b"a")
    with pytest.raises(sp.NotSupported):
        sub.unsubscribe(b"a")


def test_raw_pub_publishes_like_a_cooked_pub(session, url):
    pub, sub = joined(session, url, b"k", raw_pub=True)
    pub.send(b"k1")
    pub.send_msg(sp.Message(b"x2"))
    pub.send_msg(sp.Message(b"k3"))
    assert receive(sub, 2) == [b"k1", b"k3"]


def test_a_raw_device_forwards_from_one_pub_to_another_unfiltered(session, tmp_path):
    """raw SUB -> raw PUB, as a forwarding device does; the end SUB filters."""
    upstream = session.socket(sp.Pub)
    device_in = session.socket(sp.Sub, raw=True, recv_timeout=5.0)
    device_out = session.socket(sp.Pub, raw=True)
    end = session.socket(sp.Sub, recv_timeout=5.0)
    end.subscribe(b"x")
    device_in.connect(upstream.bind("tcp://127.0.0.1:0").url)
    end.connect(device_out.bind(f"ipc://{tmp_path}/out.ipc").url)
    pipes_of(upstream)
    pipes_of(device_out)

    for body in (b"x1", b"y1", b"x2"):
        upstream.send(body)
    for _ in range(3):
        device_out.send_msg(device_in.recv_msg())

    assert receive(end, 2) == [b"x1", b"x2"]


# ---------------------------------------------------------------- what each side cannot do


def test_pub_cannot_receive_and_sub_cannot_send(session):
    with pytest.raises(sp.NotSupported):
        session.socket(sp.Pub).recv()
    with pytest.raises(sp.NotSupported):
        session.socket(sp.Sub).send(b"x")
    with pytest.raises(sp.NotSupported):
        session.socket(sp.Sub, raw=True).send(b"x")


@pytest.mark.parametrize("kind", [sp.Pub, sp.Push, sp.Pull, sp.Pair])
def test_only_a_sub_has_subscriptions(session, kind):
    sock = session.socket(kind)
    with pytest.raises(sp.NotSupported, match="has no subscriptions"):
        sock.subscribe(b"a")
    with pytest.raises(sp.NotSupported, match="has no subscriptions"):
        sock.unsubscribe(b"a")
