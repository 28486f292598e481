"""PUSH and PULL between our own sockets over TCP and IPC."""

from __future__ import annotations

import threading

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


def test_push_delivers_to_pull_in_order(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind(url)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(ep.url)
    sent = [f"message {i}".encode() for i in range(1000)]
    for body in sent:
        push.send(body)
    assert [pull.recv() for _ in sent] == sent


def test_the_endpoint_url_carries_the_port_the_system_chose(session):
    pull = session.socket(sp.Pull)
    ep = pull.bind("tcp://127.0.0.1:0")
    host, port = ep.url.rsplit(":", 1)
    assert host == "tcp://127.0.0.1" and int(port) > 0
    assert pull.endpoints == [ep]


def test_zero_length_and_one_mebibyte_messages_arrive_intact(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    big = bytes(range(256)) * 4096  # exactly 1 MiB: the default limit is inclusive
    push.send(b"")
    push.send(big)
    push.send(bytearray(b"after"))
    assert pull.recv() == b""
    assert pull.recv() == big
    assert pull.recv() == b"after"


def test_push_round_robins_over_two_pulls(session):
    pulls = [session.socket(sp.Pull, recv_timeout=5.0) for _ in range(2)]
    push = session.socket(sp.Push, send_timeout=5.0)
    for pull in pulls:
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: push.stats.get("pipes_opened", 0) == 2, what="two pipes")
    for i in range(10):
        push.send(str(i).encode())
    got = [sorted(int(p.recv()) for _ in range(5)) for p in pulls]
    assert sorted(got) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_pull_fair_queues_from_two_pushes(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind(url)
    pushes = [session.socket(sp.Push, send_timeout=5.0) for _ in range(2)]
    for n, push in enumerate(pushes):
        push.connect(ep.url)
        for i in range(50):
            push.send(f"{n}:{i}".encode())
    got = [pull.recv().decode() for _ in range(100)]
    for n in range(2):
        mine = [int(m.split(":")[1]) for m in got if m.startswith(f"{n}:")]
        assert mine == list(range(50))  # every message, each sender in order


def test_push_with_no_peer_blocks_until_the_send_timeout(session):
    push = session.socket(sp.Push, send_timeout=0.05)
    with pytest.raises(sp.Timeout):
        push.send(b"nobody")
    with pytest.raises(sp.WouldBlock):
        push.send(b"nobody", block=False)
    assert push.try_send(b"nobody") is False


def test_a_push_blocked_without_peer_proceeds_when_a_pull_arrives(session):
    push = session.socket(sp.Push, send_timeout=5.0)
    ep = push.bind("tcp://127.0.0.1:0")
    errors = []

    def sender():
        try:
            push.send(b"waited")
        except Exception as err:  # reported below
            errors.append(err)

    thread = threading.Thread(target=sender)
    thread.start()
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    pull.connect(ep.url)
    assert pull.recv() == b"waited"
    thread.join(5)
    assert errors == [] and not thread.is_alive()


def test_a_slow_receiver_pushes_back_without_losing_anything(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    count = 20000
    received = []

    def receiver():
        for _ in range(count):
            received.append(pull.recv())

    thread = threading.Thread(target=receiver)
    thread.start()
    for i in range(count):
        push.send(i.to_bytes(4, "big") * 16)
    thread.join(30)
    assert [int.from_bytes(m[:4], "big") for m in received] == list(range(count))


def test_a_burst_of_large_messages_blocks_instead_of_queueing_without_bound(session):
    pull = session.socket(sp.Pull, recv_max_size=0)  # never reads until the end
    push = session.socket(sp.Push, send_timeout=0.3)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    body = b"m" * (1024 * 1024)
    accepted = 0
    with pytest.raises(sp.Timeout):
        for _ in range(1000):
            push.send(body)
            accepted += 1
    # Pipe queue (4 MiB), kernel buffers and the receiver's queue (2 MiB) are bounded.
    assert 4 <= accepted <= 40, accepted
    # The receiver reads ahead two bodies (core/channel.py, RECV_HIGH_BYTES), a third at
    # most (the read under way as the second paused it); the rest waits in the kernel.
    channel = pull._core.channel
    wait_until(lambda: channel.inbox_bytes >= 2 * len(body), what="two bodies read ahead")
    assert channel.inbox_bytes <= 3 * len(body)
    assert [len(pull.recv(timeout=5.0)) for _ in range(accepted)] == [len(body)] * accepted


def _gathering_push(session, monkeypatch) -> tuple[sp.Socket, sp.Socket, list[int]]:
    """A PUSH with a small window, connected to a PULL, and the list its quiet drain posts
    (core/channel.py, "Gathering") count into."""
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0, send_buffer=16)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"first")
    assert pull.recv() == b"first"
    gatherer, quiet = push._core.channel.gatherer, []
    post_quietly = gatherer.post_quietly
    monkeypatch.setattr(gatherer, "post_quietly", lambda: (quiet.append(1), post_quietly())[1])
    return push, pull, quiet


def test_the_last_messages_of_a_burst_that_gathered_go_out_once_it_stops(session, monkeypatch):
    push, pull, quiet = _gathering_push(session, monkeypatch)
    count = 3000
    for i in range(count):  # a burst: it runs out of its 16 slots again and again
        push.send(b"%d" % i)
    # Nothing more is sent: the last gathering's drain runs when its timer ends it.
    assert [pull.recv() for _ in range(count)] == [b"%d" % i for i in range(count)]
    assert quiet, "no drain of the burst gathered"
    assert push.stats["msgs_sent"] == count + 1


def test_a_close_right_after_a_gathering_burst_sends_all_of_it(session, monkeypatch):
    # No timer ends a gathering here: the close, posted behind the quiet drain, brings it.
    monkeypatch.setattr("scaproust.core.socket.GATHER", 60.0)
    push, pull, quiet = _gathering_push(session, monkeypatch)
    count = 3000
    for i in range(count):
        push.send(b"%d" % i)

    push.close()

    assert [pull.recv() for _ in range(count)] == [b"%d" % i for i in range(count)]
    assert quiet, "no drain of the burst gathered"
    assert "dropped_closed" not in push.stats


def test_once_closed_every_send_and_receive_raises_closed_a_queued_message_included(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"queued")
    wait_until(lambda: sp.poll({pull: sp.POLLIN}, 0), what="the message to be queued")

    pull.close()
    push.close()

    for call in (pull.try_recv, pull.recv, lambda: pull.recv(block=False),
                 lambda: push.send(b"x"), lambda: push.try_send(b"x")):
        with pytest.raises(sp.Closed):
            call()


def test_recv_times_out_and_try_recv_returns_none(session):
    pull = session.socket(sp.Pull, recv_timeout=0.05)
    with pytest.raises(sp.Timeout) as info:
        pull.recv()
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(sp.WouldBlock):
        pull.recv(block=False)
    assert pull.try_recv() is None
    with pytest.raises(sp.Timeout):
        pull.recv(timeout=0.01)


def test_try_recv_many_takes_what_is_queued_in_order_up_to_its_limit(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    assert pull.try_recv_many() == []
    sent = [b"m%d" % n for n in range(10)]
    for body in sent:
        push.send(body)
    wait_until(lambda: pull.stats.get("msgs_received", 0) == 10, what="ten messages queued")

    assert pull.try_recv_many(limit=4) == sent[:4]
    assert pull.try_recv() == b"m4"
    assert pull.try_recv_many() == sent[5:]
    assert pull.try_recv_many() == []
    push.send(bytearray(b"later"))
    assert pull.recv() == b"later"


def test_try_recv_many_refuses_a_limit_under_one_and_raises_closed_once_closed(session):
    pull = session.socket(sp.Pull)
    for limit in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match=f"limit must be an int of at least 1, not {limit!r}"):
            pull.try_recv_many(limit)
    pull.close()
    with pytest.raises(sp.Closed):
        pull.try_recv_many()


def test_try_recv_many_on_a_raw_socket_hands_out_bodies(session, url):
    rep = session.socket(sp.Rep, raw=True)
    req = session.socket(sp.Req, send_timeout=5.0)
    req.connect(rep.bind(url).url)
    req.send(b"question")
    wait_until(lambda: rep.stats.get("msgs_received", 0) == 1, what="the request queued")
    assert rep.try_recv_many() == [b"question"]


def test_push_cannot_receive_and_pull_cannot_send(session):
    with pytest.raises(sp.NotSupported):
        session.socket(sp.Push).recv()
    with pytest.raises(sp.NotSupported):
        session.socket(sp.Pull).send(b"x")


def test_a_message_over_recv_max_size_closes_that_pipe_and_is_logged(session, url, caplog):
    pull = session.socket(sp.Pull, recv_timeout=5.0, recv_max_size=100)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    push.send(b"small")
    assert pull.recv() == b"small"
    with caplog.at_level("WARNING", logger="scaproust"):
        push.send(b"x" * 101)
        wait_until(lambda: pull.stats.get("dropped_oversize", 0) == 1, what="the oversize drop")
        # The I/O thread counts the drop, then logs it: the line may come a moment later.
        wait_until(lambda: "a 101-byte message exceeds recv_max_size=100" in caplog.text,
                   what="the warning")
    # The dialer reconnects: the next small message still arrives. Sent once the PUSH has
    # its new pipe: sent before it saw the old one die, it would go down with it (a pipe
    # lost with messages in it loses them), which under load made this test flaky.
    wait_until(lambda: push.stats.get("pipes_opened", 0) == 2, what="the redialed pipe")
    assert push.stats.get("pipes_closed", 0) == 1
    push.send(b"after")
    assert pull.recv() == b"after"


def test_recv_max_size_zero_means_unlimited(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0, recv_max_size=0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    big = b"z" * (3 * 1024 * 1024)
    push.send(big)
    assert pull.recv() == big


def test_memoryview_and_message_bodies_are_sent(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(memoryview(b"view"))
    push.send_msg(sp.Message(b"msg"))
    assert pull.recv() == b"view"
    assert pull.recv_msg() == sp.Message(b"msg")


def test_send_rejects_str_with_a_clear_error(session):
    push = session.socket(sp.Push)
    with pytest.raises(TypeError, match="encode it first"):
        push.send("text")


@pytest.mark.parametrize("url", ["inproc://message-parts", "tcp://127.0.0.1:0"])
def test_a_messages_bytes_like_parts_are_sent_as_bytes_and_str_parts_refused(session, url):
    # sp.Message checks nothing: a bytearray body reached the receiver as is (its recv()
    # failed, the message lost), a str one failed the socket in the I/O thread.
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    push.send(sp.Message(bytearray(b"array")))
    push.send_msg(sp.Message(memoryview(b"view")))
    for bad in (sp.Message("text"), sp.Message(b"body", header="text")):
        with pytest.raises(TypeError, match="encode it first"):
            push.send(bad)
    assert [pull.recv(), pull.recv()] == [b"array", b"view"]
    push.send(b"still open")
    assert pull.recv() == b"still open"


def test_a_raw_messages_bytes_like_header_is_sent_as_bytes(session):
    rep = session.socket(sp.Rep, raw=True, recv_timeout=5.0)
    req = session.socket(sp.Req, recv_timeout=5.0)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    req.send(b"question")
    request = rep.recv_msg()
    rep.send(sp.Message(bytearray(b"answer"), header=bytearray(request.header)))
    assert req.recv() == b"answer"
