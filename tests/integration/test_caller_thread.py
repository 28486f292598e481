"""One owner at a time: a caller's thread reads and writes its socket's pipes itself when
that saves a hand-off to the I/O thread (docs/ARCHITECTURE.md, "One owner at a time").

These tests check who did the work (the I/O thread's iteration count, the thread a write
ran in) and that nothing the I/O thread used to notice is missed meanwhile. Nothing sleeps
to wait for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket as pysocket
import struct
import threading
import time

import pytest

import scaproust as sp
from scaproust.core import caller_reader
from scaproust.core.caller_reader import CallerReader
from scaproust.core.inbox import Inbox
from scaproust.core.pipe import Pipe
from scaproust.protocols._resend import ResendTimer
from scaproust.reactor.loop import MAX_SLEEP
from tests.integration.conftest import wait_until

MESSAGES = 20


@pytest.fixture
def flush_threads(monkeypatch):
    """The thread of every pipe flush (one ``sendmsg``), in order."""
    threads: list[int] = []
    original = Pipe._flush

    def recorded(self):
        threads.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(Pipe, "_flush", recorded)
    return threads


@contextlib.contextmanager
def two_sessions(listener, dialer, url):
    """A socket in each of two sessions, as two processes would have them (each side owns
    its own session's lock), connected and past a first message."""
    with sp.Session() as left, sp.Session() as right:
        a = left.socket(listener, recv_timeout=5.0, send_timeout=5.0)
        b = right.socket(dialer, recv_timeout=5.0, send_timeout=5.0)
        b.connect(a.bind(url).url)
        b.send(b"warm-up")
        assert a.recv() == b"warm-up"
        yield a, b, left._core.loop, right._core.loop


def pull_with_a_push(session):
    """A PULL on TCP, its URL, and a PUSH connected to it, past a first message."""
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    url = pull.bind("tcp://127.0.0.1:0").url
    first = session.socket(sp.Push, send_timeout=5.0)
    first.connect(url)
    read_by_a_wait(pull, first.send, b"one")
    return pull, url, first


def read_by_a_wait(sock, send, first: bytes) -> None:
    """``send(first)`` once ``sock``'s own ``recv()`` reads its pipe, and return once it
    has: its wait then keeps the loan (unless something gives it back since). A ``recv()``
    called after the send could find the message delivered already (the I/O thread reads
    the pipe until a wait borrows it, and under load it may get there first), and keep
    nothing."""
    wait_until(lambda: len(sock._core.pipes) == 1, what="the receiver's pipe")
    thread, got = recv_in_a_thread(sock)
    send(first)
    thread.join(5.0)
    assert got == [first]


def past_a_first_message(session, listener, dialer, first: bytes = b"first"):
    """A ``listener`` socket and a ``dialer`` connected to it over TCP, the dialer's first
    message (``first``) received."""
    a = session.socket(listener, recv_timeout=5.0)
    b = session.socket(dialer, recv_timeout=5.0)
    b.connect(a.bind("tcp://127.0.0.1:0").url)
    b.send(first)
    assert a.recv() == first
    return a, b


def settled(*loops) -> None:
    """Return once each I/O loop has run a callback posted now: what it had pending from
    the set-up (a readiness selected before a loan, a wake-up byte) is then behind it,
    not counted as work done later."""
    for loop in loops:
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)
        assert done.wait(5.0), "the I/O loop never ran"


def recv_in_a_thread(sock):
    """A thread blocked in ``sock.recv()``, returned once it reads the socket's pipes
    itself, with the list its message will land in."""
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(sock.recv()))
    thread.start()
    wait_until(lambda: sock._core.reader.busy, what="a caller reading its pipes itself")
    return thread, got


def test_a_caller_reading_its_pipes_is_not_counted_among_the_receives_waiting_for_a_delivery(
        session):
    # Channel.recv_waiters counts the receives that wait for others to deliver: what a
    # reading caller asks before it keeps its loan. The reading caller itself is not one,
    # before or after its message (it leaves without a lock section to uncount it).
    pull, _, push = pull_with_a_push(session)
    channel = pull._channel
    thread, got = recv_in_a_thread(pull)
    wait_until(lambda: channel.reader_waiting, what="the caller asleep on its pipes")
    assert channel.recv_waiters == 0

    push.send(b"two")
    thread.join(5.0)
    assert got == [b"two"] and channel.recv_waiters == 0
    assert pull._core.reader.kept is not None  # nobody else waited: the loan is kept


@pytest.mark.streams_only
def test_a_message_for_a_waiting_caller_costs_the_io_threads_nothing(url):
    count = 2 * MESSAGES
    with two_sessions(sp.Pair, sp.Pair, url) as (a, b, *loops):
        settled(*loops)
        before = sum(loop.iterations for loop in loops)
        started = time.monotonic()
        for i in range(count):
            reader, got = recv_in_a_thread(a)
            # A lone send, as a request after a wait is: b never waits, so Channel.put
            # would tell it from a burst by the time since its last send alone, and a
            # thread started and ready within DIRECT_SPACING made it one of a burst,
            # drained by the I/O thread (seen on a loaded machine).
            b._channel.last_put = float("-inf")
            b.send(b"%d" % i)  # written by this thread, read by the waiting one
            reader.join(5.0)
            assert got == [b"%d" % i]
        iterations = sum(loop.iterations for loop in loops) - before
        ticks = len(loops) * (int((time.monotonic() - started) / MAX_SLEEP) + 1)
    # Neither I/O thread had anything to do: handing each message over would cost at least
    # one iteration per message. An idle loop still wakes once every MAX_SLEEP. (Without
    # ``settled`` the set-up's leftovers, a readiness selected just before the first loan
    # and a wake-up byte, ran now and then inside the count: up to two iterations a loop.)
    assert iterations <= ticks < count // 2


@pytest.mark.parametrize("kinds", [(sp.Rep, sp.Req), (sp.Pair, sp.Pair)], ids=["reqrep", "pair"])
def test_an_in_process_round_trip_between_two_threads_costs_the_io_thread_nothing(
        session, kinds):
    # Each side's send runs in its own thread and delivers straight into the other's
    # queue; the sleeper is woken once the sender has let go of the session, runs at once,
    # and its answer is often queued before the sender's recv(), which then does not wait:
    # taking that last message counts as having waited, so the next send is a lone one
    # too, not one of a burst handed to the I/O thread (docs/ARCHITECTURE.md, "One owner
    # at a time", its paragraph *Waking a sleeper*). No send here is marked as quiet. Both
    # threads on one core, as the bench runs them: there the woken thread runs at once.
    server_kind, client_kind = kinds
    server = session.socket(server_kind, recv_timeout=5.0)
    client = session.socket(client_kind, recv_timeout=5.0)
    client.connect(server.bind("inproc://two-threads").url)
    count = 5 * MESSAGES

    def echo():
        for _ in range(count + 1):
            server.send(server.recv())

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})  # this thread's, and the echo's it starts
    try:
        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        client.send(b"warm-up")
        assert client.recv() == b"warm-up"
        loop = session._core.loop
        settled(loop)
        before = loop.iterations
        started = time.monotonic()
        for i in range(count):
            client.send(b"%d" % i)
            assert client.recv() == b"%d" % i
        iterations = loop.iterations - before
        ticks = int((time.monotonic() - started) / MAX_SLEEP) + 1
        thread.join(5.0)
        assert not thread.is_alive()
    finally:
        os.sched_setaffinity(0, affinity)
    # Handing a message to the I/O thread would cost an iteration; an idle loop still
    # wakes once every MAX_SLEEP.
    assert iterations <= ticks < count // 2


def test_a_send_after_a_wait_is_written_from_the_callers_thread(session, flush_threads):
    rep, req = past_a_first_message(session, sp.Rep, sp.Req, b"question")
    flush_threads.clear()
    rep.send(b"answer")  # right after a wait: the reply leaves from this thread
    assert flush_threads == [threading.get_ident()]
    assert req.recv() == b"answer"


def test_a_lone_send_never_goes_through_the_outbox(session, monkeypatch):
    rep, req = past_a_first_message(session, sp.Rep, sp.Req, b"question")
    channel = rep._core.channel
    taken: list[int] = []
    original = channel.take_outbox
    monkeypatch.setattr(channel, "take_outbox",
                        lambda: (taken.append(threading.get_ident()), original())[1])
    rep.send(b"answer")  # right after a wait: from put's hand to the pipe, this thread
    assert req.recv() == b"answer"
    assert taken == []
    assert rep.stats["msgs_sent"] == 1


def test_a_lone_send_that_cannot_own_the_session_soon_is_handed_to_the_io_thread(
        session, flush_threads):
    rep, req = past_a_first_message(session, sp.Rep, sp.Req, b"question")
    loop = rep._core.loop
    held, done = threading.Event(), threading.Event()

    def hold_the_session():
        assert loop.own(5.0)
        held.set()
        done.wait(5.0)
        loop.release()

    holder = threading.Thread(target=hold_the_session)
    holder.start()
    try:
        assert held.wait(5.0)
        flush_threads.clear()
        rep.send(b"answer")  # waits OWN_WAIT for the session, then queues it
        assert [item.body for item in rep._core.channel.outbox] == [b"answer"]
    finally:
        done.set()
        holder.join(5.0)
    assert req.recv() == b"answer"
    assert threading.get_ident() not in flush_threads  # written by the I/O thread
    assert rep.stats["msgs_sent"] == 1


def test_a_callers_send_writes_before_its_bookkeeping(session, monkeypatch):
    # The reply leaves for the kernel before the drain's refill (for a REP, a credit grant
    # and its lock section) and its traffic count: those are no longer between the reply
    # and the wire.
    rep, req = past_a_first_message(session, sp.Rep, sp.Req, b"question")
    steps: list[str] = []
    core = rep._core
    original_flush, original_refill = Pipe._flush, core.ctx.refill
    monkeypatch.setattr(Pipe, "_flush", lambda pipe: (steps.append("flush"),
                                                      original_flush(pipe))[1])
    monkeypatch.setattr(core.ctx, "refill", lambda: (steps.append("refill"),
                                                     original_refill())[1])
    rep.send(b"answer")
    assert steps == ["flush", "refill"]
    assert req.recv() == b"answer"


def test_a_lone_requests_frame_is_in_the_kernel_before_the_protocol_sets_its_resend_deadline(
        session, monkeypatch):
    # The pipe writes the frame as REQ's send_request queues it (Pipe._write_early): what
    # the protocol does after that (the resend deadline, the credit) is off the path to the
    # peer. A bare peer looks, from inside that very step, whether the bytes have come.
    req = session.socket(sp.Req, recv_timeout=5.0)
    host, port = req.bind("tcp://127.0.0.1:0").url.rsplit("/", 1)[1].rsplit(":", 1)
    me = threading.get_ident()
    with pysocket.create_connection((host, int(port)), timeout=5.0) as peer:
        peer.sendall(b"\0SP\0\0\x31\0\0")  # a REP's header
        assert peer.recv(8, pysocket.MSG_WAITALL) == b"\0SP\0\0\x30\0\0"
        wait_until(lambda: len(req._core.pipes) == 1, what="the pipe")
        arrived: list[bytes | None] = []
        original = ResendTimer.start

        def start(timer):
            if threading.get_ident() != me:
                arrived.append(None)  # handed to the I/O thread: not a lone send's write
            else:
                ready, _, _ = select.select([peer], [], [], 5.0)  # bounded: no hang
                arrived.append(peer.recv(100, pysocket.MSG_PEEK) if ready else b"")
            original(timer)

        monkeypatch.setattr(ResendTimer, "start", start)
        # A lone send runs in this thread unless the I/O thread held the session then (it
        # still settles the pipe's arrival): a few tries at most. Each send is marked as
        # following a quiet spell, which a request after a wait is; here no reply came.
        for _ in range(20):
            settled(session._core.loop)
            req._channel.last_put = float("-inf")
            req.send(b"question")
            request = peer.recv(20, pysocket.MSG_WAITALL)  # written once: 20 bytes
            if arrived[-1] is not None:
                break
        assert arrived[-1] == request
        assert request[:8] == struct.pack(">Q", 12) and request[12:] == b"question"
        peer.sendall(struct.pack(">Q", 11) + request[8:12] + b"answer!")
        assert req.recv() == b"answer!"
        # Not written a second time by the flush after the batch (which ran before send()
        # returned, long before the reply).
        assert select.select([peer], [], [], 0)[0] == []


def test_a_message_the_caller_reads_itself_never_goes_through_the_inbox(session, monkeypatch):
    # Delivered by the very thread that waits for it (Channel.caught): no inbox push and
    # pop, each a lock section and the queue's steps.
    a, b = past_a_first_message(session, sp.Pair, sp.Pair)
    inbox = a._core.channel.inbox
    pushed: list[object] = []
    original = Inbox.extend

    def extend(self, items, *rest):
        if self is inbox:
            pushed.extend(items)
        original(self, items, *rest)

    monkeypatch.setattr(Inbox, "extend", extend)
    for i in range(MESSAGES):
        reader, got = recv_in_a_thread(a)
        b.send(b"%d" % i)
        reader.join(5.0)
        assert got == [b"%d" % i]
    assert pushed == []
    assert a._core.channel.caught is None


def test_messages_that_arrive_together_for_a_reading_caller_all_come_out_in_order(session):
    # Two frames in one read: one delivery of two messages, which the caller cannot keep
    # for itself alone (Channel.caught takes a lone one): both go through the inbox.
    pair = session.socket(sp.Pair, recv_timeout=5.0)
    url = pair.bind("tcp://127.0.0.1:0").url
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    with pysocket.create_connection((host, int(port)), timeout=5.0) as peer:
        peer.sendall(b"\0SP\0\0\x10\0\0")  # SP header, PAIR v0
        assert peer.recv(8, pysocket.MSG_WAITALL)[:4] == b"\0SP\0"
        wait_until(lambda: pair.stats.get("pipes_opened") == 1, what="the pipe")
        reader, got = recv_in_a_thread(pair)
        peer.sendall(b"".join(struct.pack(">Q", len(body)) + body for body in (b"one", b"two")))
        reader.join(5.0)
        assert got == [b"one"]
        assert pair.recv() == b"two"
        assert pair._core.channel.caught is None


def test_a_receive_with_only_inproc_pipes_waits_without_taking_the_session(session,
                                                                          monkeypatch):
    # An in-process pipe has nothing to poll: the receive goes straight to the channel's
    # wait, without owning the session to find nothing to lend.
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("inproc://lendable-hint").url)
    push.send(b"first")
    assert pull.recv() == b"first"
    assert pull._core.reader.lendable == 0
    owners: list[int] = []
    loop = pull._core.loop
    original = loop.own
    monkeypatch.setattr(loop, "own", lambda timeout: (owners.append(threading.get_ident()),
                                                      original(timeout))[1])
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pull.recv()))
    reader.start()
    wait_until(lambda: pull._core.channel.recv_sleepers == 1, what="the receive asleep")
    push.send(b"second")
    reader.join(5.0)
    assert got == [b"second"]
    assert reader.ident not in owners


def test_an_arecv_with_only_inproc_pipes_lends_its_event_loop_nothing(session, monkeypatch):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("inproc://lendable-aio").url)
    wait_until(lambda: len(pull._core.pipes) == 1, what="the pipe")
    owned: list[object] = []
    loop = pull._core.loop
    original = loop.own
    monkeypatch.setattr(loop, "own", lambda timeout: (owned.append(timeout),
                                                      original(timeout))[1])

    async def lend():
        return pull._core.reader.lend_to_event_loop(asyncio.get_running_loop())

    assert asyncio.run(lend()) is None  # nothing to lend: the I/O thread delivers
    assert owned == []
    push.send(b"delivered all the same")
    assert asyncio.run(pull.arecv()) == b"delivered all the same"


def test_the_socket_counts_the_pipes_a_receive_could_borrow(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    url = pull.bind("tcp://127.0.0.1:0").url
    pull.bind("inproc://lendable-count")
    reader = pull._core.reader
    over_tcp = session.socket(sp.Push, send_timeout=5.0)
    over_tcp.connect(url)
    in_process = session.socket(sp.Push, send_timeout=5.0)
    in_process.connect("inproc://lendable-count")
    wait_until(lambda: len(pull._core.pipes) == 2, what="both pipes")
    assert reader.lendable == 1  # the TCP one
    over_tcp.close()
    wait_until(lambda: len(pull._core.pipes) == 1, what="the TCP pipe gone")
    assert reader.lendable == 0


def test_a_lone_send_is_written_from_the_callers_thread(session, flush_threads):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: push.stats.get("pipes_opened") == 1, what="the pipe")
    flush_threads.clear()
    push.send(b"alone")  # the socket's first send: no wait before it, but nothing recent
    assert flush_threads == [threading.get_ident()]
    assert pull.recv() == b"alone"


def test_senders_in_several_threads_lose_nothing_and_keep_each_threads_order(session,
                                                                            monkeypatch):
    # Lone sends (from put's hand, in the sender's thread) and sends in bursts (through
    # the outbox and the I/O thread) mix as the threads take turns: every message arrives
    # once, and each thread's in the order it sent them.
    pull, _, push = pull_with_a_push(session)
    threads, each = 4, 1500
    core, channel = push._core, push._core.channel
    drains, alone = [], []  # how the messages went: both ways, as the test means
    take_outbox, send_in_hand = channel.take_outbox, core._send_in_hand
    monkeypatch.setattr(channel, "take_outbox",
                        lambda: (drains.append(1), take_outbox())[1])
    monkeypatch.setattr(core, "_send_in_hand",
                        lambda hand, size: (alone.append(1), send_in_hand(hand, size))[1])
    channel.last_put = float("-inf")  # quiet for ever: the run's first send goes alone
    senders = [threading.Thread(target=lambda t=t: [push.send(b"%d:%d" % (t, i))
                                                   for i in range(each)])
               for t in range(threads)]
    for sender in senders:
        sender.start()
    got = [pull.recv() for _ in range(threads * each)]
    for sender in senders:
        sender.join(10.0)
    by_thread: dict[int, list[int]] = {}
    for msg in got:
        t, i = map(int, msg.split(b":"))
        by_thread.setdefault(t, []).append(i)
    assert by_thread == {t: list(range(each)) for t in range(threads)}
    assert push.stats["msgs_sent"] == 1 + threads * each
    assert drains and alone
    assert pull.try_recv() is None


def test_a_burst_of_sends_is_written_in_batches(session, flush_threads):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"first")
    assert pull.recv() == b"first"
    count = 2000
    got = []
    receiver = threading.Thread(target=lambda: got.extend(pull.recv() for _ in range(count)))
    receiver.start()
    flush_threads.clear()
    for i in range(count):
        push.send(b"%d" % i)
    receiver.join(10.0)
    assert got == [b"%d" % i for i in range(count)]
    # Far fewer writes than messages: within a burst the caller only queues, and whoever
    # writes next (the I/O thread, or the caller once DIRECT_SPACING has passed) takes
    # everything queued meanwhile in one sendmsg. One write per message would be 2000.
    assert len(flush_threads) < count // 4


def test_a_peer_that_closes_while_a_caller_reads_is_noticed_and_the_next_peer_is_paired(session):
    a = session.socket(sp.Pair, recv_timeout=5.0)
    b = session.socket(sp.Pair, send_timeout=5.0)
    ep = a.bind("tcp://127.0.0.1:0")
    b.connect(ep.url)
    b.send(b"one")
    assert a.recv() == b"one"
    reader, got = recv_in_a_thread(a)
    b.close()
    wait_until(lambda: a.stats.get("pipes_closed") == 1, what="the close to be noticed")
    assert reader.is_alive() and got == []
    c = session.socket(sp.Pair, send_timeout=5.0)
    c.connect(ep.url)
    c.send(b"two")
    reader.join(5.0)
    assert got == [b"two"] and a.stats.get("pipes_rejected", 0) == 0


def test_a_message_from_a_pipe_that_joins_while_a_caller_reads_wakes_it(session):
    pull, url, first = pull_with_a_push(session)
    reader, got = recv_in_a_thread(pull)
    second = session.socket(sp.Push, send_timeout=5.0)
    second.connect(url)
    second.send(b"two")  # read by the I/O thread (not lent), delivered, and the reader woken
    reader.join(5.0)
    assert got == [b"two"]


def test_two_threads_receiving_on_one_socket_get_every_message_exactly_once(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind(url).url)
    count = 400
    got: list[bytes] = []
    lock = threading.Lock()

    def receive(n):
        for _ in range(n):
            msg = pull.recv()
            with lock:
                got.append(msg)

    threads = [threading.Thread(target=receive, args=(count // 2,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for i in range(count):
        push.send(b"%d" % i)
    for thread in threads:
        thread.join(10.0)
    assert sorted(got) == sorted(b"%d" % i for i in range(count))


def test_a_recv_reading_its_pipes_itself_still_times_out(session):
    a = session.socket(sp.Pair)
    b = session.socket(sp.Pair)
    b.connect(a.bind("tcp://127.0.0.1:0").url)
    b.send(b"hello")
    assert a.recv(timeout=5.0) == b"hello"
    with pytest.raises(sp.Timeout):
        a.recv(timeout=0.05)
    b.send(b"after")
    assert a.recv(timeout=5.0) == b"after"


def test_a_socket_with_more_pipes_than_lend_max_is_read_by_the_io_thread(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    url = pull.bind("tcp://127.0.0.1:0").url
    pushes = [session.socket(sp.Push, send_timeout=5.0) for _ in range(caller_reader.LEND_MAX + 1)]
    for push in pushes:
        push.connect(url)
    wait_until(lambda: pull.stats.get("pipes_opened") == len(pushes), what="every pipe")
    for i, push in enumerate(pushes):
        push.send(b"%d" % i)
    assert sorted(pull.recv() for _ in pushes) == sorted(b"%d" % i for i in range(len(pushes)))
    assert not any(pipe._lent for pipe in pull._core.pipes)


@pytest.mark.streams_only
def test_an_arecv_lends_the_pipes_to_its_event_loop_which_reads_them(url):
    with two_sessions(sp.Pull, sp.Push, url) as (pull, push, pull_loop, _):

        async def main():
            task = asyncio.create_task(pull.arecv())
            deadline = time.monotonic() + 5
            while not pull._core.reader.busy:  # the task lent the pipe to this event loop
                assert time.monotonic() < deadline
                await asyncio.sleep(0)
            settled(pull_loop)  # the set-up's leftovers run before the count (see above)
            before = pull_loop.iterations
            push.send(b"hello")
            got = await asyncio.wait_for(task, 5)
            return got, pull_loop.iterations - before

        got, iterations = asyncio.run(main())
        assert got == b"hello"
        assert iterations <= 1  # read by the event loop; the I/O thread at most ticked
        # The loan outlived the call, kept for a next receive; its event loop is closed
        # now, and the I/O thread's next look takes it back and reads the pipe again.
        push.send(b"after")
        assert pull.recv() == b"after"


def test_a_pipe_that_dies_while_lent_to_an_event_loop_leaves_it_and_the_next_peer_is_heard(session):
    pull, url, first = pull_with_a_push(session)

    async def main():
        task = asyncio.create_task(pull.arecv())
        deadline = time.monotonic() + 5
        while not pull._core.reader.busy:
            assert time.monotonic() < deadline
            await asyncio.sleep(0)
        park = pull._core.reader.park
        watched = park.watched[0]  # what the event loop watches: a duplicate descriptor
        first.close()  # the event loop reads the close, the pipe dies while lent
        while pull.stats.get("pipes_closed") != 1 or park.watched:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        # The loan was taken back: the event loop stopped watching the duplicate and
        # closed it, so that its number can serve again.
        assert park.revoked and watched.fileno() == -1
        second = session.socket(sp.Push, send_timeout=5.0)
        second.connect(url)
        second.send(b"two")
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == b"two"


def test_a_close_that_lands_as_a_reading_caller_gives_its_pipes_back_wakes_it_with_closed(
        session, monkeypatch):
    # The close wakes the reading caller through its wake-up and, in the race the soak
    # found, closes that wake-up as soon as the caller stops being busy. The caller must
    # have drained it by then: draining a closed socket raised EBADF out of recv().
    pull, _, _ = pull_with_a_push(session)
    reader = pull._core.reader
    real_end = CallerReader._end

    def end_then_close(self, lent, owned=False):
        alive = real_end(self, lent, owned)
        with_lock = self.loop.own(None)
        try:
            self.close()  # what the I/O thread's close does once the caller is not busy
        finally:
            if with_lock:
                self.loop.release()
        return alive

    monkeypatch.setattr(CallerReader, "_end", end_then_close)
    errors: list[BaseException] = []

    def receive():
        try:
            pull.recv()
        except BaseException as err:  # the test reads what recv() raised
            errors.append(err)

    thread = threading.Thread(target=receive)
    thread.start()
    wait_until(lambda: reader.busy, what="a caller reading its pipes itself")
    pull.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], sp.Closed), errors


@pytest.mark.parametrize("closing", ["the socket", "its dialer"])
def test_a_lent_pipe_that_dies_before_the_caller_polls_it_is_no_error(session, closing):
    # The caller takes the lent streams without the session lock, then polls them: a pipe
    # dying in between (the socket's close, its endpoint's, a write error) left a closed
    # stream, whose descriptor -1 poll() refused: recv() raised ValueError.
    a = session.socket(sp.Pair, send_timeout=5.0)
    b = session.socket(sp.Pair, recv_timeout=5.0)
    url = a.bind("tcp://127.0.0.1:0").url
    dialer = b.connect(url)
    wait_until(lambda: b._core.reader.lendable, what="a pipe to lend")
    entered, go = threading.Event(), threading.Event()

    class PausingPoller(caller_reader._Poller):
        __slots__ = ()

        def readable(self, streams, wakeup, deadline, spin=0.0):
            if not entered.is_set():  # the first poll only, its streams in hand
                entered.set()
                go.wait(5)
            return super().readable(streams, wakeup, deadline)

    b._core.reader._poller = PausingPoller()
    got: list[object] = []

    def receive():
        try:
            got.append(b.recv())
        except BaseException as err:  # the test reads what recv() raised
            got.append(err)

    thread = threading.Thread(target=receive)
    thread.start()
    assert entered.wait(5)
    if closing == "the socket":
        b.close()
    else:
        dialer.close()
    wait_until(lambda: all(pipe.stream is None for pipe in b._core.pipes), what="the pipe dead")
    go.set()
    if closing == "its dialer":  # the receive waits on, and the next peer is heard
        b.connect(url)
        wait_until(lambda: a.stats.get("pipes_opened", 0) == 2, what="a new pipe")
        a.send(b"after")
    thread.join(5)
    assert not thread.is_alive()
    if closing == "the socket":
        assert len(got) == 1 and isinstance(got[0], sp.Closed), got
    else:
        assert got == [b"after"]


def test_recv_spin_reaches_the_callers_poll_and_a_change_applies_to_the_next_wait(session):
    # The spin itself is tested on a fake poll (tests/core/test_caller_reader.py); here,
    # that the socket's option is what the reading caller's poll is given, wait by wait,
    # and that messages come through with it either way.
    a = session.socket(sp.Pair, send_timeout=5.0)
    b = session.socket(sp.Pair, recv_timeout=5.0)
    b.connect(a.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: b._core.reader.lendable, what="a pipe to lend")
    spins: list[float] = []

    class RecordingPoller(caller_reader._Poller):
        __slots__ = ()

        def readable(self, streams, wakeup, deadline, spin=0.0):
            spins.append(spin)
            return super().readable(streams, wakeup, deadline, spin)

    b._core.reader._poller = RecordingPoller(b._core.loop)
    assert b.recv_spin == 0.0002  # the default

    def exchange(body: bytes) -> None:
        sender = threading.Thread(target=lambda: (
            wait_until(lambda: b._core.reader.busy, what="b's caller reading"), a.send(body)))
        sender.start()
        assert b.recv() == body
        sender.join(5)

    exchange(b"spun")
    assert spins and set(spins) == {0.0002}
    spins.clear()
    b.recv_spin = 0
    exchange(b"slept")
    assert spins and set(spins) == {0.0}
    with pytest.raises(ValueError, match="recv_spin must be >= 0 seconds"):
        b.recv_spin = -1
