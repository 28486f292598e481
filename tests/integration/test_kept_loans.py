"""A recv() whose wait ended with a message keeps its loan of the socket's pipes for the
next wait (core/caller_reader.py, "kept"), and whatever needs them read meanwhile gets
them back first: a receive or a poll that does not wait in recv(), another waiter, a
context, an event loop, the peer's end of stream, the socket's close, an unused loan's
check. Nothing sleeps to wait for a condition; where a loan kept too long would only be
given back by its check, the check is set far beyond the test's own waits.
"""

from __future__ import annotations

import asyncio
import select
import threading

import pytest

import scaproust as sp
from scaproust.core import caller_reader
from scaproust.core.caller_reader import CallerReader
from tests.integration.conftest import wait_until
from tests.integration.test_caller_thread import pull_with_a_push, read_by_a_wait


@pytest.fixture
def no_check(monkeypatch):
    """A kept loan is never given back by its check during the test: only the mechanism
    under test can give it back in time."""
    monkeypatch.setattr(caller_reader, "KEPT_CHECK", 60.0)


def _pair_kept(session, url="tcp://127.0.0.1:0"):
    """PAIR ``a`` and ``b`` past a first message, ``b``'s loan kept, and ``b``'s pipe."""
    a = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
    b = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
    b.connect(a.bind(url).url)
    read_by_a_wait(b, a.send, b"hello")
    return a, b, next(iter(b._core.pipes))


def _in_the_kernel(pipe) -> bool:
    """Whether bytes wait in the pipe's stream (nobody has read them yet)."""
    return bool(select.select([pipe.stream], [], [], 0)[0])


def _lent(pipe) -> bool:
    return pipe._lent or pipe.loop._regs[pipe.stream].lent


def test_the_next_recv_reuses_the_loan_its_wait_kept(session, no_check, monkeypatch):
    a, b, pipe = _pair_kept(session)
    loop = b._core.loop
    assert b._core.reader.kept == [pipe.lender] and _lent(pipe)
    lends, returns = [], []
    for name, calls in (("lend_reader", lends), ("return_reader", returns)):
        real = getattr(loop, name)
        monkeypatch.setattr(loop, name, lambda stream, *args, real=real, calls=calls: (
            stream is pipe.stream and calls.append(stream), real(stream, *args))[1])
    for i in range(20):
        a.send(b"%d" % i)
        assert b.recv() == b"%d" % i
        b.send(b"ack %d" % i)
        assert a.recv() == b"ack %d" % i
    assert lends == [] and returns == []  # b's one loan served every wait


def test_a_wait_that_ends_without_a_message_gives_its_loan_back(session, no_check):
    a, b, pipe = _pair_kept(session)
    with pytest.raises(sp.Timeout):
        b.recv(timeout=0.01)
    assert b._core.reader.kept is None and not _lent(pipe)
    a.send(b"read by the I/O thread")
    wait_until(lambda: b._channel.inbox.count, what="the I/O thread's delivery")
    assert b.try_recv() == b"read by the I/O thread"


@pytest.mark.parametrize("receive", ["try_recv", "recv_no_block", "try_recv_many"])
def test_a_receive_that_does_not_wait_reads_what_came_for_a_kept_loan(session, no_check,
                                                                      receive):
    a, b, pipe = _pair_kept(session)
    a.send(b"in the kernel")
    wait_until(lambda: _in_the_kernel(pipe), what="the message in b's stream")
    assert b._channel.inbox.count == 0  # nobody read it: the loan is kept
    if receive == "try_recv":
        assert b.try_recv() == b"in the kernel"
    elif receive == "recv_no_block":
        assert b.recv(block=False) == b"in the kernel"
    else:
        assert b.try_recv_many() == [b"in the kernel"]
    assert b._core.reader.kept is None and not _lent(pipe)  # the I/O thread reads again
    a.send(b"next")
    wait_until(lambda: b._channel.inbox.count, what="the I/O thread's delivery")


def test_a_poll_gets_a_kept_loan_back_and_hears_what_comes_later(session, no_check):
    a, b, pipe = _pair_kept(session)

    def send_once_polled():
        wait_until(lambda: b._channel.watchers, what="the poll's watcher")
        a.send(b"for the poller")

    sender = threading.Thread(target=send_once_polled)
    sender.start()
    try:
        assert sp.poll({b: sp.POLLIN}, timeout=5) == {b: sp.POLLIN}
    finally:
        sender.join(5)
    assert b._core.reader.kept is None
    assert b.try_recv() == b"for the poller"


def test_a_thread_waiting_on_the_channel_stops_the_reading_wait_from_keeping(
        session, no_check, monkeypatch):
    # Two threads in recv(): one borrows the pipes, the other waits on the channel for
    # what the I/O thread delivers. The first keeps no loan when its wait ends, else the
    # second would hear nothing until its timeout.
    a, b, pipe = _pair_kept(session)
    kept_at_end: list[bool] = []
    real_end = CallerReader._end

    def end(self, lent, owned=False):
        real_end(self, lent, owned)
        kept_at_end.append(self.kept is not None)

    monkeypatch.setattr(CallerReader, "_end", end)
    got: list[bytes] = []

    def receive():
        got.append(b.recv(timeout=5))

    threads = [threading.Thread(target=receive) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: b._core.reader.busy and len(b._channel._can_recv._waiters) == 1,
               what="one thread reading, the other waiting on the channel")
    a.send(b"one")
    wait_until(lambda: got, what="the first message")
    assert kept_at_end[0] is False
    a.send(b"two")
    for thread in threads:
        thread.join(5)
    assert sorted(got) == [b"one", b"two"]


def test_a_kept_loan_goes_back_for_a_thread_that_starts_waiting_on_the_channel(
        session, no_check):
    # The other order: the loan is kept first, then a thread waits without borrowing it
    # (here: the session is owned elsewhere just then, as when a callback receives).
    a, b, pipe = _pair_kept(session)
    loop = b._core.loop
    assert loop.own(1.0)
    try:
        reader = b._core.reader
        with pytest.raises(sp.Timeout):
            b.recv(timeout=0.01)  # owned by this thread: it cannot borrow, waits as is
        assert reader.kept is None and not _lent(pipe)
    finally:
        loop.release()
    a.send(b"read by the I/O thread")
    wait_until(lambda: b._channel.inbox.count, what="the I/O thread's delivery")


def test_a_peer_that_closes_while_the_loan_is_kept_is_noticed_at_once(session, no_check):
    # Nobody reads the kept stream, but the I/O thread hears the peer's end of stream
    # (the loan's alarm): the PAIR drops the dead peer and pairs with the next one.
    b = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
    url = b.bind("tcp://127.0.0.1:0").url
    a = session.socket(sp.Pair, send_timeout=5)
    a.connect(url)
    read_by_a_wait(b, a.send, b"hello")
    assert b._core.reader.kept is not None
    a.close()
    wait_until(lambda: not b._core.pipes, what="the dead peer dropped")
    assert b._core.reader.kept is None
    c = session.socket(sp.Pair, send_timeout=5)
    c.connect(url)
    c.send(b"from the next peer")
    assert b.recv() == b"from the next peer"


def test_an_alarm_for_a_readiness_seen_before_the_loan_leaves_it_kept(session, no_check):
    # The I/O thread's selector may report a stream readable just before a wait lends it,
    # and call the loan's alarm for it once lent: data, not the peer's end, so the loan
    # stays (taking it back would only cost the next wait a new loan).
    a, b, pipe = _pair_kept(session)
    a.send(b"data, not an end")
    wait_until(lambda: _in_the_kernel(pipe), what="the message in b's stream")
    loop = b._core.loop
    assert loop.own(1.0)
    try:
        loop._regs[pipe.stream].alarm()  # what _run_reader calls for a lent reader
    finally:
        loop.release()
    assert b._core.reader.kept == [pipe.lender]
    assert b.recv() == b"data, not an end"


def test_an_unused_kept_loan_goes_back_after_its_check(session, monkeypatch):
    monkeypatch.setattr(caller_reader, "KEPT_CHECK", 0.005)
    a, b, pipe = _pair_kept(session)
    # The check clears ``kept`` first, then gives the pipe back.
    wait_until(lambda: b._core.reader.kept is None and not _lent(pipe),
               what="the check to give it back")
    a.send(b"read by the I/O thread")
    wait_until(lambda: b._channel.inbox.count, what="the I/O thread's delivery")


def test_a_pipe_that_joins_is_lent_with_the_kept_one_by_the_next_wait(session, no_check):
    pull, url, first = pull_with_a_push(session)
    assert len(pull._core.reader.kept) == 1
    second = session.socket(sp.Push, send_timeout=5)
    second.connect(url)
    wait_until(lambda: len(pull._core.pipes) == 2, what="the second pipe")
    second.send(b"two")
    assert pull.recv() == b"two"  # read by the I/O thread, or by the wait lending both
    first.send(b"three")
    assert pull.recv() == b"three"
    assert len(pull._core.reader.kept) == 2


def test_a_socket_with_contexts_keeps_no_loan(session):
    rep = session.socket(sp.Rep, recv_timeout=5, send_timeout=5)
    req = session.socket(sp.Req, recv_timeout=5, send_timeout=5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    context = req.context()
    req.send(b"q")
    rep.send(rep.recv())
    assert req.recv() == b"q"
    assert req._core.reader.kept is None  # the context's receives need the I/O thread
    context.send(b"q2")
    rep.send(rep.recv())
    assert context.recv() == b"q2"
    context.close()


def test_a_rep_context_waiting_for_a_request_takes_a_kept_loan_back(session, no_check):
    # A REP context waits on its socket's channel without reading the pipes itself: the
    # loan the socket's own recv() kept goes back, and the I/O thread reads its request.
    rep = session.socket(sp.Rep, recv_timeout=5, send_timeout=5)
    req = session.socket(sp.Req, recv_timeout=5, send_timeout=5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    req.send(b"to the socket")
    assert rep.recv() == b"to the socket"
    rep.send(b"answered")
    assert req.recv() == b"answered"
    assert rep._core.reader.kept is not None
    context = rep.context()
    got: list[bytes] = []
    receiver = threading.Thread(target=lambda: got.append(context.recv(timeout=5)))
    receiver.start()
    wait_until(lambda: rep._core.reader.kept is None, what="the loan taken back")
    req.send(b"to the context")
    receiver.join(5)
    assert got == [b"to the context"]
    context.close()


def test_closing_the_socket_gives_a_kept_loan_back(session, no_check):
    a, b, pipe = _pair_kept(session)
    reader = b._core.reader
    assert reader._kept_check is not None
    b.close()
    assert reader.kept is None
    assert reader._kept_check is None  # its check goes with it


def test_an_arecv_takes_a_kept_loan_for_its_event_loop(session, no_check):
    a, b, pipe = _pair_kept(session)

    async def main():
        receiving = asyncio.ensure_future(b.arecv())
        await asyncio.sleep(0)
        assert b._core.reader.kept is None  # taken back, then lent to this event loop
        a.send(b"for the task")
        return await asyncio.wait_for(receiving, 5)

    assert asyncio.run(main()) == b"for the task"
