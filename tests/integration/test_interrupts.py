"""A Ctrl-C in the main thread while it does the session's work itself (docs/ARCHITECTURE.md,
"One owner at a time"; core/guard.py, "Interrupts").

Python raises ``KeyboardInterrupt`` where it next checks for signals, between any two calls.
Each test makes one of the places where that once left the session stuck raise it on
purpose (a deterministic stand-in for a signal landing there), then checks that the
interrupt reaches the caller and that the socket still works: nothing stays locked, lent or
posted for ever, and a pipe whose I/O was cut in the middle is closed and redialed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import scaproust as sp
from scaproust.core import caller_reader
from scaproust.core.caller_reader import _Poller

from .conftest import wait_until


def _once(real, *, after=False):
    """``real`` that raises KeyboardInterrupt on its first call (before it runs, or with
    ``after`` once it has run: the signal landing just after it returned)."""
    calls = []

    def interrupted(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return real(*args, **kwargs)  # signal handlers run in the main thread only
        calls.append(args)
        if len(calls) == 1:
            if after:
                real(*args, **kwargs)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    interrupted.calls = calls
    return interrupted


def _pair(session):
    a = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
    b = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
    b.connect(a.bind("tcp://127.0.0.1:0").url)
    a.send(b"hello")
    assert b.recv() == b"hello"  # connected both ways
    return a, b


def _send_once_lent(sender, receiver, body: bytes) -> threading.Thread:
    """Send ``body`` from another thread as soon as ``receiver``'s caller (this thread,
    about to call recv) has borrowed its pipes: the message is then read in this thread."""
    def send():
        wait_until(lambda: receiver._core.reader.busy, what="the pipes lent to the caller")
        sender.send(body)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _lock_is_free(loop) -> bool:
    """Whether another thread can own the session within a second."""
    taken = []

    def own_and_release():
        taken.append(loop.own(1.0))
        if taken[0]:
            loop.release()

    thread = threading.Thread(target=own_and_release)
    thread.start()
    thread.join(5)
    return taken == [True]


class _LockInterruptedOnce:
    """The session's lock, whose first ``acquire`` in the main thread raises
    KeyboardInterrupt once it holds the lock: the signal landing just as ``acquire()``
    returned, before ``Loop.own`` recorded its owner."""

    def __init__(self, real) -> None:
        self._real = real
        self.acquire = _once(real.acquire, after=True)

    def __getattr__(self, name: str):
        return getattr(self._real, name)  # release, _is_owned: the real lock's


def _interrupt_the_lock(monkeypatch, loop) -> None:
    monkeypatch.setattr(loop, "lock", _LockInterruptedOnce(loop.lock))


def test_an_interrupt_just_after_the_session_lock_is_taken_leaves_it_free(session, monkeypatch):
    a, b = _pair(session)
    loop = a._core.loop
    _interrupt_the_lock(monkeypatch, loop)

    with pytest.raises(KeyboardInterrupt):
        assert loop.own(1.0)

    assert loop._owner is None
    assert _lock_is_free(loop)  # held, the I/O thread and every caller would hang


def test_an_interrupt_before_the_drain_is_handed_to_anyone_still_sends(session, monkeypatch):
    a, b = _pair(session)
    channel = a._core.channel
    monkeypatch.setattr(channel, "_wake_backend", _once(channel._wake_backend))
    channel.last_put = time.monotonic() + 60  # as if a send came just now: a burst queues

    with pytest.raises(KeyboardInterrupt):
        a.send(b"lost?")  # queued, marked posted, then interrupted before any wake-up

    assert b.recv() == b"lost?"  # the I/O thread was handed the drain
    a.send(b"next")
    assert b.recv() == b"next"


def _lone_send_cut(session, cut):
    """A lone send (written at once, in this thread) interrupted where ``cut(socket)``
    makes it raise, before the protocol took the message: the send raises, the message is
    queued for the I/O thread and sent once, nothing stays held."""
    a, b = _pair(session)
    cut(a)
    before = a.stats["msgs_sent"]
    # Quiet for long: a lone send, written at once in this thread. Left to the clock, a
    # send within DIRECT_SPACING of _pair's went to the outbox (seen on one core).
    a._core.channel.last_put = float("-inf")

    with pytest.raises(KeyboardInterrupt):
        a.send(b"lost?")

    assert b.recv() == b"lost?"
    a.send(b"next")
    assert b.recv() == b"next"  # not a second "lost?"
    assert a.stats["msgs_sent"] == before + 2
    assert _lock_is_free(a._core.loop)


def test_an_interrupt_while_a_lone_send_owns_the_session_queues_it(session, monkeypatch):
    # own() gives the lock back and raises (see the first test): put still holds it.
    _lone_send_cut(session, lambda sock: _interrupt_the_lock(monkeypatch, sock._core.loop))


def test_an_interrupt_as_a_lone_send_begins_its_work_queues_it(session, monkeypatch):
    # Owned, then interrupted before the message left put's hand: released, and queued.
    _lone_send_cut(session, lambda sock: monkeypatch.setattr(
        sock._core, "_send_in_hand", _once(sock._core._send_in_hand)))


def _drain_cut_at_the_second(monkeypatch, loop, machine, drain, sends) -> None:
    """Own the session, make the ``sends`` (they queue: the drain posted to a loop that
    must wait), then ``drain()`` with ``machine.cmd_send`` interrupted in the middle of
    the second message."""
    assert loop.own(5)
    try:
        for send in sends:
            send()
        real_send = machine.cmd_send
        taken = []

        def cut(item):
            taken.append(item)
            if len(taken) == 2:
                raise KeyboardInterrupt
            return real_send(item)

        monkeypatch.setattr(machine, "cmd_send", cut)
        with pytest.raises(KeyboardInterrupt):
            drain()
        monkeypatch.setattr(machine, "cmd_send", real_send)
    finally:
        loop.release()


def test_an_interrupt_in_the_middle_of_a_drained_batch_requeues_what_was_not_taken(
        session, monkeypatch):
    push = session.socket(sp.Push, send_timeout=5)
    pull = session.socket(sp.Pull, recv_timeout=5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: push._core.pipes, what="the pipe")
    core = push._core
    _drain_cut_at_the_second(monkeypatch, core.loop, core.proto, core._drain_outbox,
                             [lambda n=n: push.send(b"m%d" % n) for n in range(4)])

    # The first went out, the second was the one interrupted, the rest went back to the
    # front of the outbox in order and left with the next drain.
    assert [pull.recv() for _ in range(3)] == [b"m0", b"m2", b"m3"]
    assert push.stats["msgs_sent"] == 4


def test_an_interrupt_in_the_middle_of_a_contexts_drained_batch_requeues_the_rest(
        session, monkeypatch):
    rep = session.socket(sp.Rep, recv_timeout=5)
    req = session.socket(sp.Req, send_timeout=5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: req._core.pipes, what="the pipe")
    ctx = req.context()
    core = ctx._core_context
    _drain_cut_at_the_second(monkeypatch, req._core.loop, core.machine, core.drain,
                             [lambda n=n: ctx.send(b"r%d" % n) for n in range(4)])

    # A context's new request replaces its last, but each one went out: the first, then
    # the two put back in front of the outbox, in order; the interrupted one never did.
    assert [rep.recv() for _ in range(3)] == [b"r0", b"r2", b"r3"]
    assert req.stats["msgs_sent"] == 4
    rep.send(b"answer")
    assert ctx.recv() == b"answer"  # the reply to the last request, r3


def test_an_interrupt_while_an_event_loop_borrows_the_pipes_gives_them_back(
        session, monkeypatch):
    push = session.socket(sp.Push, send_timeout=5)
    pull = session.socket(sp.Pull, recv_timeout=5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"warm-up")
    assert pull.recv() == b"warm-up"
    reader = pull._core.reader

    async def main():
        aloop = asyncio.get_running_loop()
        monkeypatch.setattr(aloop, "add_reader", _once(aloop.add_reader, after=True))
        with pytest.raises(KeyboardInterrupt):
            await pull.arecv()  # the duplicate watched, then interrupted
        # Taken back whole: nothing lent, nothing watched, the duplicate closed.
        assert reader.park is None and not reader.busy and reader._stale == []
        assert not any(pipe._lent for pipe in pull._core.pipes)
        assert len(aloop._selector.get_map()) == 1  # its own wake-up only
        task = asyncio.create_task(pull.arecv())
        await asyncio.sleep(0)
        push.send(b"after")
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == b"after"


@pytest.mark.parametrize("after", [False, True], ids=["before-the-read", "after-the-read"])
def test_an_interrupt_in_the_middle_of_a_pipes_read_closes_that_pipe_and_it_is_redialed(
        session, monkeypatch, caplog, after):
    a, b = _pair(session)
    pipe = next(iter(b._core.pipes))
    # The chunk taken from the kernel and never decoded: the pipe's framing is lost.
    monkeypatch.setattr(pipe, "_feed", _once(pipe._feed, after=after))
    sender = _send_once_lent(a, b, b"cut")

    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"), \
            pytest.raises(KeyboardInterrupt):
        b.recv()  # this thread reads the pipe itself, and is interrupted there
    sender.join(5)

    assert pipe.state == "dead"
    assert b.stats["pipes_interrupted"] == 1 and "pipe_errors" not in b.stats
    assert any("KeyboardInterrupt in the middle of its work" in r.getMessage()
               for r in caplog.records)
    wait_until(lambda: len(a._core.pipes) == 1 and len(b._core.pipes) == 1
               and next(iter(b._core.pipes)) is not pipe, what="the redial")
    if after:
        assert b.recv() == b"cut"  # decoded and queued before the interrupt: kept
    a.send(b"again")
    assert b.recv() == b"again"


def _interrupted_wait_gives_the_pipes_back(a, b) -> None:
    """``b.recv()`` raises the interrupt its wait was set up to take; then nothing is lent,
    and the next message comes through."""
    with pytest.raises(KeyboardInterrupt):
        b.recv()

    assert not b._core.reader.busy
    assert not any(pipe._lent for pipe in b._core.pipes)
    a.send(b"read by the loop or by the next recv")
    assert b.recv() == b"read by the loop or by the next recv"


def test_an_interrupt_while_a_caller_polls_its_pipes_gives_them_back(session, monkeypatch):
    a, b = _pair(session)
    reader = b._core.reader
    monkeypatch.setattr(reader, "_poller", _Poller())
    monkeypatch.setattr(_Poller, "readable", _once(_Poller.readable))

    _interrupted_wait_gives_the_pipes_back(a, b)


def test_an_interrupt_while_a_caller_spins_on_its_pipes_gives_them_back(session, monkeypatch):
    # The spin before the sleep (recv_spin) runs Python between its polls: the signal lands
    # there, with the pipes lent and the reader busy, as it may in the poll.
    a, b = _pair(session)
    reader = b._core.reader
    monkeypatch.setattr(caller_reader, "SPIN_CPUS", True)
    poller = _Poller(b._core.loop)
    poller._last = float("inf")  # as if a wait had just ended: this one spins (SPIN_GAP)
    monkeypatch.setattr(reader, "_poller", poller)
    monkeypatch.setattr(caller_reader, "_yield", _once(caller_reader._yield))

    _interrupted_wait_gives_the_pipes_back(a, b)


def test_a_message_the_caller_caught_for_itself_survives_an_interrupt_before_it_returns(
        session, monkeypatch):
    # The caller's thread read the message and kept it for itself (Channel.caught), not in
    # the inbox; the interrupt lands once the wait is over, before recv() returns it.
    a, b = _pair(session)
    reader = b._core.reader
    monkeypatch.setattr(reader, "_end", _once(reader._end, after=True))
    sender = _send_once_lent(a, b, b"caught")

    with pytest.raises(KeyboardInterrupt):
        b.recv()
    sender.join(5)

    channel = b._core.channel
    assert channel.caught is None and channel.inbox.count == 1  # back in front of the inbox
    assert channel.recv_waiters == 0
    a.send(b"behind it")
    assert b.recv() == b"caught"
    assert b.recv() == b"behind it"


def test_a_give_back_cut_short_is_made_by_the_next_loan(session, monkeypatch):
    a, b = _pair(session)
    loop = b._core.loop
    monkeypatch.setattr(loop, "return_reader", _once(loop.return_reader))

    with pytest.raises(KeyboardInterrupt):
        # Nothing comes: interrupted giving the pipe back to the loop (a wait that ends
        # with a message keeps its loan instead; the next test).
        b.recv(timeout=0.01)

    pipe = next(iter(b._core.pipes))
    assert pipe._lent and pipe.state == "active"  # left marked: the next loan repairs it
    a.send(b"second")
    assert b.recv() == b"second"
    assert b._core.reader.kept == [pipe.lender]  # lent afresh, and kept
    assert b.try_recv() is None  # which gives it back
    assert not pipe._lent
    assert not loop._regs[pipe.stream].lent



def _interrupt_release(monkeypatch, loop, nth: int = 1) -> list:
    """Make the session's ``nth`` ``release()`` in the main thread from now raise
    KeyboardInterrupt as it is called, before any of it runs (a signal is looked for as a
    function is entered): the main thread's calls, as they come."""
    real = loop.release
    calls: list = []

    def release(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            calls.append(args)
            if len(calls) == nth:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "release", release)
    return calls


def _released_after(loop, calls) -> None:
    assert calls, "release() was never reached"
    # Not owned by this thread: the work left over goes to the I/O thread, which may own
    # the session for it right now.
    assert not loop.owned()
    assert _lock_is_free(loop)  # held, the I/O thread and every close would hang


def test_an_interrupt_as_a_lone_send_releases_the_session_still_frees_it(session, monkeypatch):
    a, b = _pair(session)
    loop = a._core.loop
    a._core.channel.last_put = float("-inf")  # quiet for long: written at once, here
    calls = _interrupt_release(monkeypatch, loop)

    with pytest.raises(KeyboardInterrupt):
        a.send(b"sent")  # written, then interrupted as the section ends

    _released_after(loop, calls)
    assert b.recv() == b"sent"
    a.send(b"next")
    assert b.recv() == b"next"


def test_an_interrupt_as_a_reading_recv_releases_the_session_still_frees_it(
        session, monkeypatch):
    a, b = _pair(session)
    loop = b._core.loop
    sender = _send_once_lent(a, b, b"read here")
    # The first release lets the session go for the poll; the second ends the wait.
    calls = _interrupt_release(monkeypatch, loop, nth=2)

    with pytest.raises(KeyboardInterrupt):
        b.recv()  # the message read in this thread, then interrupted at the last release
    sender.join(5)

    _released_after(loop, calls)
    assert b.recv() == b"read here"  # back in front of the inbox
    a.send(b"next")
    assert b.recv() == b"next"


def test_an_interrupt_as_a_kept_loan_is_taken_back_still_frees_the_session(
        session, monkeypatch):
    a, b = _pair(session)
    loop = b._core.loop
    a.send(b"first")
    assert b.recv() == b"first"
    assert b._core.reader.kept is not None  # a poll or a try_recv takes it back
    calls = _interrupt_release(monkeypatch, loop)

    with pytest.raises(KeyboardInterrupt):
        b.try_recv()

    _released_after(loop, calls)
    a.send(b"next")
    assert b.recv() == b"next"


def test_an_interrupt_as_a_contexts_send_releases_the_session_still_frees_it(
        session, monkeypatch):
    rep = session.socket(sp.Rep, recv_timeout=5)
    req = session.socket(sp.Req, send_timeout=5, recv_timeout=5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: req._core.pipes, what="the pipe")
    ctx = req.context()
    loop = req._core.loop
    calls = _interrupt_release(monkeypatch, loop)

    with pytest.raises(KeyboardInterrupt):
        ctx.send(b"request")  # drained in this thread, then interrupted as it releases

    _released_after(loop, calls)
    assert rep.recv() == b"request"  # it went out, though send() did not return
    ctx.send(b"again")
    assert rep.recv() == b"again"
    rep.send(b"reply")
    assert ctx.recv() == b"reply"


@pytest.mark.parametrize("receive", ["recv", "try_recv"])
def test_an_interrupt_as_a_receive_resumes_reading_still_resumes_it(
        session, monkeypatch, receive):
    # The receive that brings a full queue down to half clears recv_paused, then asks the
    # backend to resume: interrupted in between, no later receive asked, and the pipes
    # stayed paused for ever.
    count, size = 40, 8000
    pull = session.socket(sp.Pull, recv_buffer=4, recv_timeout=5)
    push = session.socket(sp.Push, send_timeout=5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    channel = pull._core.channel

    def send_all():
        for i in range(count):
            push.send(b"%03d" % i + bytes(size))

    sender = threading.Thread(target=send_all)
    sender.start()
    wait_until(lambda: channel.recv_paused, what="the receive queue full, reading paused")
    resume = _once(channel._resume_reading)
    monkeypatch.setattr(channel, "_resume_reading", resume)

    got, interrupts = [], 0
    take = pull.recv if receive == "recv" else (lambda: pull.try_recv() or pull.recv())
    while len(got) + interrupts < count:
        try:
            got.append(int(take()[:3]))
        except KeyboardInterrupt:
            interrupts += 1  # the message it took is lost with it, as queue.Queue's would be
    sender.join(5)

    assert interrupts == 1 and len(resume.calls) >= 2  # asked again after the interrupt
    assert got == sorted(got) and len(set(got)) == count - 1
