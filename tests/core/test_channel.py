"""The channel between user threads and the I/O thread (core/channel.py): send credit, the
outbox and inbox, receive backpressure, and waking the backend only when needed.

Cross-thread tests never sleep to wait: a waiter's condition variable is swapped for one that
signals an Event as the waiter goes to sleep on it, and every wait has a deadline that is
reached only when a test is about to fail.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

import pytest

from scaproust.core import channel as channel_module
from scaproust.core.channel import Channel
from scaproust.core.condition import Condition
from scaproust.core.inbox import Inbox
from scaproust.errors import Closed, Timeout, WouldBlock
from scaproust.reactor.loop import Loop
from tests.core.interleave import RunsAStepOnce, switch_points_before_pops

DEADLINE = 5.0  # seconds; only reached when a test is about to fail


class Recorder:
    """Counts calls of the backend callbacks (wake_backend, resume_reading)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


class SignallingCondition(Condition):
    """A Condition that sets ``sleeping`` each time a thread is about to wait on it."""

    def __init__(self, lock) -> None:
        super().__init__(lock)
        self.sleeping = threading.Event()

    def wait(self, timeout=None):
        self.sleeping.set()  # the lock is still held: a notify cannot slip in before wait()
        return super().wait(timeout)


class Waiter:
    """Runs ``fn`` in a thread and keeps its result or exception."""

    def __init__(self, fn) -> None:
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self.result = fn()
        except BaseException as err:  # handed to the test thread
            self.error = err

    def join(self) -> Waiter:
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the waiter is still blocked"
        return self


@pytest.fixture
def wake() -> Recorder:
    return Recorder()


@pytest.fixture
def resume() -> Recorder:
    return Recorder()


@pytest.fixture
def channel(wake, resume) -> Channel:
    return Channel(wake_backend=wake, resume_reading=resume, recv_high=8)


def watch_putters(channel: Channel) -> SignallingCondition:
    channel._can_send = SignallingCondition(channel._lock)
    return channel._can_send


def watch_getters(channel: Channel) -> SignallingCondition:
    channel._can_recv = SignallingCondition(channel._lock)
    return channel._can_recv


# ---------------------------------------------------------------- send credit


def test_put_without_credit_and_a_zero_timeout_would_block(channel, wake):
    with pytest.raises(WouldBlock):
        channel.put(b"x", timeout=0)

    assert not channel.outbox
    assert wake.calls == 0


def test_put_without_credit_times_out_after_its_timeout(channel):
    with pytest.raises(Timeout, match="send timed out after 0.05 s"):
        channel.put(b"x", timeout=0.05)

    assert not channel.outbox
    assert channel.credit == 0


def test_put_with_credit_takes_one_unit_and_queues_the_item(channel):
    channel.grant(2)

    channel.put(b"a", timeout=0)

    assert channel.credit == 1
    assert list(channel.outbox) == [b"a"]


class InterruptedSize(bytes):
    """A message whose size is asked as a Ctrl-C lands (Python raises one just after a
    call returns: here, as ``len()`` does)."""

    def __len__(self) -> int:
        raise KeyboardInterrupt


def test_an_interrupt_as_put_sizes_its_message_takes_no_credit(channel):
    # The credit went before the size was known, the byte credit after: an interrupt in
    # between lost the message credit for good (a REQ then never sent again).
    channel.revoke(0, channel.credit_bytes)  # a protocol that states a byte capacity
    channel.grant(2, 100)
    with pytest.raises(KeyboardInterrupt):
        channel.put(InterruptedSize(b"a"), timeout=0)
    assert (channel.credit, channel.credit_bytes) == (2, 100)
    assert not channel.outbox


def test_a_grant_wakes_a_putter_waiting_for_credit(channel):
    cond = watch_putters(channel)
    putter = Waiter(lambda: channel.put(b"late", timeout=DEADLINE))
    assert cond.sleeping.wait(DEADLINE), "the putter never waited"

    channel.grant(1)

    assert putter.join().error is None
    assert list(channel.outbox) == [b"late"]
    assert channel.credit == 0


def test_a_message_needs_byte_credit_and_the_last_one_may_overdraw(channel):
    channel.revoke(0, channel.credit_bytes)  # a protocol that states a byte capacity
    channel.grant(10, 100)
    channel.put(b"x" * 150, timeout=0)  # overdraws: it was the byte credit's last message
    assert (channel.credit, channel.credit_bytes) == (9, -50)
    with pytest.raises(WouldBlock):
        channel.put(b"y", timeout=0)
    channel.grant(0, 51)
    channel.put(b"y", timeout=0)
    assert (channel.credit, channel.credit_bytes) == (8, 0)


def test_revoke_takes_back_only_unused_credit(channel):
    channel.grant(3)
    channel.put(b"a", timeout=0)

    assert channel.revoke(5) == (2, 0)
    assert channel.credit == 0
    with pytest.raises(WouldBlock):
        channel.put(b"b", timeout=0)


@pytest.mark.parametrize(("credit", "credit_bytes", "asked", "taken", "left"), [
    (3, 300, (2, 100), (2, 100), (1, 200)),  # less than there is
    (3, 300, (5, 500), (3, 300), (0, 0)),  # more: what there is
    (0, -40, (1, 100), (0, 0), (0, -40)),  # none, the byte credit overdrawn: nothing
])
def test_revoke_takes_back_what_is_unused_and_never_more(channel, credit, credit_bytes,
                                                         asked, taken, left):
    channel.revoke(0, channel.credit_bytes)
    channel.credit, channel.credit_bytes = credit, credit_bytes

    assert channel.revoke(*asked) == taken
    assert (channel.credit, channel.credit_bytes) == left


# ---------------------------------------------------------------- closing


def test_close_wakes_a_waiting_putter_with_closed(channel):
    cond = watch_putters(channel)
    putter = Waiter(lambda: channel.put(b"x", timeout=None))
    assert cond.sleeping.wait(DEADLINE), "the putter never waited"

    channel.close()

    assert isinstance(putter.join().error, Closed)
    assert not channel.outbox


def test_close_wakes_a_waiting_getter_with_closed(channel):
    cond = watch_getters(channel)
    getter = Waiter(lambda: channel.get(timeout=None))
    assert cond.sleeping.wait(DEADLINE), "the getter never waited"

    channel.close()

    assert isinstance(getter.join().error, Closed)


def test_put_after_close_raises_closed_even_with_credit(channel):
    channel.grant(1)
    channel.close()

    with pytest.raises(Closed):
        channel.put(b"x", timeout=0)


def test_what_was_received_before_close_stays_readable(channel):
    channel.push_many([b"a", b"b"])
    channel.close()

    assert channel.get(timeout=0) == b"a"
    assert channel.get(timeout=0) == b"b"
    with pytest.raises(Closed):
        channel.get(timeout=0)


# ---------------------------------------------------------------- receiving


def test_get_returns_items_in_the_order_they_were_pushed(channel):
    channel.push_many([b"1", b"2"])
    channel.push_many([b"3"])

    assert [channel.get(timeout=0) for _ in range(3)] == [b"1", b"2", b"3"]


def test_get_on_an_empty_inbox_with_a_zero_timeout_would_block(channel):
    with pytest.raises(WouldBlock):
        channel.get(timeout=0)


def test_get_on_an_empty_inbox_times_out_after_its_timeout(channel):
    with pytest.raises(Timeout, match="recv timed out"):
        channel.get(timeout=0.05)


def test_a_push_wakes_a_waiting_getter(channel):
    # No timeout: only the push's notify can end this wait (a getter with a deadline
    # would find the item when its wait times out, notified or not).
    cond = watch_getters(channel)
    getter = Waiter(lambda: channel.get(timeout=None))
    assert cond.sleeping.wait(DEADLINE), "the getter never waited"
    assert (channel.recv_waiters, channel.recv_sleepers) == (1, 1)

    channel.push_many([b"hello"])

    assert getter.join().result == b"hello"
    assert (channel.recv_waiters, channel.recv_sleepers) == (0, 0)


def test_a_push_notifies_nobody_when_no_getter_sleeps(channel, monkeypatch):
    # A receiver counted in recv_waiters but not asleep (the thread that reads the pipes
    # and delivers to itself) looks at the inbox before it sleeps: no notify for it.
    notified = []
    monkeypatch.setattr(Condition, "notify", lambda cond, n=1: notified.append(n))
    channel.recv_waiters = 1

    channel.push_many([b"hello"])

    assert notified == []
    assert channel.take() == b"hello"


def test_a_reading_caller_catches_one_lone_message_for_an_empty_inbox_only(channel):
    # Channel.caught: what the reading caller's own reads deliver, one lone message into
    # an empty inbox, is kept for that caller; anything behind it, or anything that would
    # overtake messages already queued, is queued as usual.
    channel.catching = True
    assert channel.push_many([b"a1", b"a2"]) == 4  # two at once: queued
    assert channel.push_many([b"b1"]) == 2  # the inbox holds older ones: queued behind
    assert channel.caught is None and channel.catching
    assert [channel.take() for _ in range(3)] == [b"a1", b"a2", b"b1"]

    assert channel.push_many([b"lone"]) == 4
    assert channel.caught == b"lone" and not channel.catching  # one only
    assert channel.push_many([b"next"]) == 4
    assert channel.caught == b"lone" and channel.take() == b"next"
    assert channel.inbox_bytes == 0


@pytest.fixture(params=["get", "take", "take_many"])
def take_one(request):
    """Every way a receive takes a queued item: ``get`` (the full path), ``take`` (the
    fast path of a message already queued) and ``take_many`` asked for one (the fast path
    of a batch); pausing and resuming must not tell them apart."""
    if request.param == "get":
        return lambda channel: channel.get(timeout=0)
    if request.param == "take_many":
        return lambda channel: (channel.take_many(1) or [None])[0]
    return lambda channel: channel.take()


def test_take_returns_the_queued_items_in_order_then_none(channel):
    assert channel.take() is None
    channel.push_many([b"a", b"b"])
    assert (channel.take(), channel.take(), channel.take()) == (b"a", b"b", None)
    assert channel.inbox_bytes == 0


def test_get_and_take_serve_the_best_priority_first_and_count_what_is_left(channel, take_one):
    # take pops from the inbox's head queue itself (no Inbox.popleft call): the order and
    # the counts must be those of get, which pops through the inbox.
    channel.push_many([b"low1", b"low2"], 16)
    channel.push_many([b"high"], 1)
    assert take_one(channel) == b"high"
    channel.push_many([b"mid"], 8)
    assert [take_one(channel) for _ in range(3)] == [b"mid", b"low1", b"low2"]
    assert (len(channel.inbox), channel.inbox_bytes) == (0, 0)
    assert channel.take() is None
    channel.push_many([b"again"], 16)
    assert take_one(channel) == b"again"


def test_take_many_takes_up_to_its_limit_across_priorities_in_the_order_take_would(channel):
    assert channel.take_many(5) == []
    channel.push_many([b"low1", b"low2"], 16)
    channel.push_many([b"mid1", b"mid2", b"mid3"], 8)
    channel.push_many([b"high"], 1)

    assert channel.take_many(3) == [b"high", b"mid1", b"mid2"]  # one queue and part of the next
    assert (len(channel.inbox), channel.inbox_bytes) == (3, 12)
    channel.push_many([b"high2"], 1)
    assert channel.take_many(100) == [b"high2", b"mid3", b"low1", b"low2"]
    assert (len(channel.inbox), channel.inbox_bytes) == (0, 0)
    assert channel.take_many(1) == [] and channel.take() is None
    channel.push_many([b"again"])
    assert channel.take() == b"again"


def test_a_batch_that_drains_a_paused_inbox_resumes_reading_once(channel, resume):
    channel.push_many([b"m%d" % n for n in range(8)])  # 8 == recv_high
    assert channel.recv_paused

    assert channel.take_many(3) == [b"m0", b"m1", b"m2"]  # 5 left: still above half
    assert channel.recv_paused and resume.calls == 0
    assert channel.take_many(8) == [b"m3", b"m4", b"m5", b"m6", b"m7"]
    assert not channel.recv_paused and resume.calls == 1


def test_reading_pauses_at_recv_high_and_resumes_once_when_drained_to_half(channel, resume,
                                                                           take_one):
    channel.push_many([b"m%d" % n for n in range(7)])
    assert not channel.recv_paused

    channel.push_many([b"m7"])  # 8 == recv_high
    assert channel.recv_paused

    for _ in range(3):  # 5 left: still above half
        take_one(channel)
    assert channel.recv_paused
    assert resume.calls == 0

    take_one(channel)  # 4 left == recv_high // 2
    assert not channel.recv_paused
    assert resume.calls == 1

    for _ in range(4):
        take_one(channel)
    assert resume.calls == 1


def test_reading_pauses_on_bytes_too_and_resumes_below_half_of_them(wake, resume, take_one):
    channel = Channel(wake_backend=wake, resume_reading=resume, recv_high=100, recv_high_bytes=1000)
    channel.push_many([b"x" * 600])
    assert not channel.recv_paused
    channel.push_many([b"y" * 400])  # 1000 bytes == recv_high_bytes
    assert channel.recv_paused and channel.inbox_bytes == 1000
    take_one(channel)  # 400 bytes left: below half
    assert not channel.recv_paused and resume.calls == 1 and channel.inbox_bytes == 400


def test_reading_is_never_resumed_when_it_was_never_paused(channel, resume, take_one):
    channel.push_many([b"a", b"b"])

    take_one(channel)
    take_one(channel)

    assert resume.calls == 0


# ---------------------------------------------------------------- waking the backend


def test_the_backend_is_woken_only_when_the_outbox_goes_from_empty_to_non_empty(channel, wake):
    channel.grant(10)

    channel.put(b"a", timeout=0)
    channel.put(b"b", timeout=0)
    channel.put(b"c", timeout=0)
    assert wake.calls == 1

    batch = channel.take_outbox()
    assert list(batch) == [b"a", b"b", b"c"]
    assert not channel.outbox

    channel.put(b"d", timeout=0)
    assert wake.calls == 2
    channel.put(b"e", timeout=0)
    assert wake.calls == 2


def test_taking_an_empty_outbox_rearms_the_wakeup(channel, wake):
    channel.grant(2)
    channel.take_outbox()

    channel.put(b"a", timeout=0)

    assert wake.calls == 1


# ---------------------------------------------------------------- a burst without the lock


class Untouchable:
    """Stands for the channel's lock where a step must not take it: entering it fails."""

    def __enter__(self):
        raise AssertionError("the lock was taken")

    def __exit__(self, *exc):
        return False


@contextmanager
def lock_untouchable(channel: Channel):
    """Within the block, the channel's lock fails if entered (``Untouchable``)."""
    lock, channel._lock = channel._lock, Untouchable()
    try:
        yield
    finally:
        channel._lock = lock


def test_a_burst_behind_a_posted_drain_takes_its_credit_and_queues_without_the_lock(
        channel, wake):
    # (This channel has no backend to send at once: every put queues.)
    channel.revoke(0, channel.credit_bytes)
    channel.grant(10, 1000)
    channel.put(b"a", timeout=0)  # posts the drain (under the lock)
    assert wake.calls == 1
    channel.last_put = float("-inf")  # the step must stamp it: what tells a burst
    with lock_untouchable(channel):
        channel.put(b"bb", timeout=0)
        channel.put(b"ccc", timeout=None)

    assert list(channel.outbox) == [b"a", b"bb", b"ccc"]
    assert (channel.credit, channel.credit_bytes) == (7, 1000 - 6)
    assert channel.last_put > float("-inf")  # the next send within DIRECT_SPACING: a burst
    assert wake.calls == 1  # the drain posted takes them: nobody woken again


def test_a_burst_takes_the_lock_where_threads_may_run_python_at_once(
        channel, wake, monkeypatch):
    # A free-threaded interpreter: the step is one lock section, as any other put.
    monkeypatch.setattr(channel_module, "LOCKLESS_BURST", False)
    channel.grant(10)
    channel.put(b"a", timeout=0)
    with lock_untouchable(channel), pytest.raises(AssertionError, match="the lock was taken"):
        channel.put(b"b", timeout=0)
    assert list(channel.outbox) == [b"a"]


@pytest.mark.parametrize("stop", ["no credit", "no byte credit", "closed", "drain taken"])
def test_a_burst_goes_the_locked_way_when_its_step_cannot_be_taken(channel, wake, stop):
    channel.revoke(0, channel.credit_bytes)
    channel.grant(1 if stop == "no credit" else 10, 4)
    channel.put(b"aaaa", timeout=0)  # posts the drain; the byte credit is used up
    if stop == "no credit":
        channel.grant(0, 100)
    elif stop == "closed":
        channel.grant(0, 100)
        channel.close()
    elif stop == "drain taken":
        channel.grant(0, 100)
        assert list(channel.take_outbox()) == [b"aaaa"]
    error = {"no credit": WouldBlock, "no byte credit": WouldBlock, "closed": Closed}
    if stop in error:
        with pytest.raises(error[stop]):
            channel.put(b"b", timeout=0)
        return
    channel.put(b"b", timeout=0)  # posts a drain of its own
    assert list(channel.outbox) == [b"b"]
    assert wake.calls == 2


def test_a_burst_without_the_lock_loses_no_message_and_no_credit_across_threads():
    # A sender puts while another thread plays the I/O thread: woken, it takes the outbox
    # and grants back the credit of what it took. The interpreter switches threads every
    # microsecond, so each step of the one meets every step of the other. Every message
    # arrives once, in order, and the credit adds up. And no message is ever left in an
    # outbox with no drain posted for it, which the sender looks at after each put (a
    # message appended just after the drainer took the outbox: the next put would post a
    # drain that takes it, but a last message would wait for ever).
    # A window as large as the run: a sender that waited for credit would let the drainer
    # take the outbox only while nothing is put, and nothing would meet.
    count = window = 200_000
    woken = threading.Event()
    channel = Channel(wake_backend=woken.set, resume_reading=lambda: None)
    channel.grant(window)
    messages = [b"%d" % i for i in range(count)]
    drained: list[bytes] = []

    def drain() -> None:
        while len(drained) < count:
            if not woken.wait(DEADLINE):
                return  # stranded: the test fails below
            woken.clear()
            batch = channel.take_outbox()
            drained.extend(batch)
            channel.grant(len(batch))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        stranded = 0
        for message in messages:
            channel.put(message, timeout=DEADLINE)
            # Both read with no call in between: no drainer step comes between them.
            if channel.outbox and not channel._drain_posted:
                stranded += 1
        drainer.join(DEADLINE)
    finally:
        sys.setswitchinterval(interval)
    assert stranded == 0, f"{stranded} messages queued with no drain posted"
    assert len(drained) == count, f"{count - len(drained)} messages left in the outbox"
    assert drained == messages
    assert channel.credit == window and not channel.outbox


# ---------------------------------------------------------------- a receive without the lock


def test_a_receive_that_finds_a_message_takes_it_without_the_lock(channel):
    channel.push_many([b"a", b"bb"])
    channel.push_many([b"ccc"])
    with lock_untouchable(channel):
        taken = [channel.take(), channel.take()]
        assert (len(channel.inbox), channel.inbox_bytes) == (1, 3)
        taken += [channel.take(), channel.take()]
    assert taken == [b"a", b"bb", b"ccc", None]
    assert (len(channel.inbox), channel.inbox_bytes) == (0, 0)
    channel.push_many([b"next"])  # the head stays on the one priority queued: found again
    assert channel.take() == b"next"


def test_a_receive_takes_the_lock_where_threads_may_run_python_at_once(channel, monkeypatch):
    monkeypatch.setattr(channel_module, "LOCKLESS_TAKE", False)
    channel.push_many([b"a"])
    with lock_untouchable(channel), pytest.raises(AssertionError, match="the lock was taken"):
        channel.take()
    assert channel.take() == b"a"


class CountingLock:
    """Stands for the channel's lock and counts the sections entered."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.entered = 0

    def __enter__(self):
        self.entered += 1
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def test_a_paused_inbox_takes_the_lock_only_once_down_to_half_to_resume_reading(
        channel, resume):
    channel.push_many([b"m%d" % n for n in range(8)])  # 8 == recv_high
    assert channel.recv_paused
    lock = channel._lock = CountingLock(channel._lock)
    assert [channel.take() for _ in range(3)] == [b"m0", b"m1", b"m2"]
    assert (lock.entered, channel.recv_paused) == (0, True)  # 5 left: above half
    assert channel.take() == b"m3"  # 4 left: half
    assert (lock.entered, channel.recv_paused, resume.calls) == (1, False, 1)
    assert [channel.take() for _ in range(5)] == [b"m4", b"m5", b"m6", b"m7", None]
    assert (lock.entered, resume.calls) == (1, 1)


@pytest.mark.parametrize("stop", ["two priorities", "head emptied"])
def test_a_receive_takes_the_lock_when_its_step_cannot_be_taken(channel, resume, stop):
    if stop == "two priorities":  # a pop may have to move the head on
        channel.push_many([b"low"], 16)
        channel.push_many([b"high"], 1)
        expected = b"high"
    else:  # counted, not yet queued (the I/O thread between the two, under the lock)
        channel.inbox.count += 1
        expected = None
    with lock_untouchable(channel), pytest.raises(AssertionError, match="the lock was taken"):
        channel.take()
    assert channel.take() == expected
    if stop == "two priorities":
        assert channel.take() == b"low"
        channel.push_many([b"one"], 16)  # one priority again: no lock
        with lock_untouchable(channel):
            assert channel.take() == b"one"


@pytest.mark.parametrize("step", [Channel.take, Channel._pop, Inbox.popleft, Inbox.take],
                         ids=lambda step: step.__qualname__)
def test_no_call_comes_between_a_receives_look_at_the_queue_and_its_pop(step):
    # What a receive without the lock relies on: from the test that finds ``head`` not
    # empty to ``head.popleft()``, nothing where the interpreter could let another thread
    # run (a call, a backward jump), so nobody pops in between. Read from the bytecode.
    windows = switch_points_before_pops(step)
    assert windows and windows == [[]] * len(windows), windows


class PausingItem(bytes):
    """A message whose sizing, as a receive takes it, stands for the I/O thread pausing
    reading at that moment (a full inbox)."""

    channel: Channel | None = None

    def __len__(self) -> int:
        if self.channel is not None:
            self.channel.recv_paused = True
        return super().__len__()


def test_reading_paused_while_a_receive_took_without_the_lock_resumes_from_that_receive(
        channel, resume):
    item = PausingItem(b"last")
    channel.push_many([item])
    item.channel = channel  # armed once queued
    assert channel.take() == b"last"
    # Nothing is left to take: no later receive would resume it.
    assert not channel.recv_paused and resume.calls == 1
    assert (len(channel.inbox), channel.inbox_bytes) == (0, 0)


class SizingRuns(RunsAStepOnce, bytes):
    """A message whose sizing runs ``step`` once: another thread's step, run where the
    interpreter may switch threads (a call) in the receive that sizes it."""

    def __len__(self) -> int:
        self.run_step()
        return super().__len__()


def test_a_receive_sizing_its_message_loses_no_other_receives_count(channel, take_one):
    # Each of a receive's updates of the inbox's count and bytes is a read and a write with
    # no call between them: another receive without the lock, run at the sizing's call,
    # is not undone by the write that follows.
    first = SizingRuns(b"first")
    channel.push_many([first, b"second"])
    other: list[bytes | None] = []
    first.step = lambda: other.append(channel.take())  # armed once queued
    assert take_one(channel) == b"first" and other == [b"second"]
    assert (len(channel.inbox), channel.inbox_bytes) == (0, 0)


def interrupt() -> None:
    raise KeyboardInterrupt  # a Ctrl-C, as Python raises it just after a call returns


@pytest.mark.parametrize("receive", ["take", "get", "take_many"])
def test_a_receive_interrupted_as_it_sizes_the_message_that_takes_a_paused_inbox_to_half_resumes_reading(  # noqa: E501
        channel, resume, receive):
    # take: without the lock; get: _pop, under it; take_many: a batch. Interrupted before
    # it could tell that reading must resume, the receive tells on its way out: the
    # messages left may be the last, and no later receive would.
    items = [SizingRuns(b"m%d" % n) for n in range(8)]
    channel.push_many(items)  # 8 == recv_high: reading paused
    assert [channel.take() for _ in range(3)] == [b"m0", b"m1", b"m2"]  # 5 left
    items[3].step = interrupt
    with pytest.raises(KeyboardInterrupt):
        {"take": channel.take, "get": lambda: channel.get(timeout=0),
         "take_many": lambda: channel.take_many(1)}[receive]()
    assert (channel.recv_paused, resume.calls) == (False, 1)
    # The interrupted message is lost, as from a queue.Queue.get() interrupted there.
    assert [channel.take() for _ in range(5)] == [b"m4", b"m5", b"m6", b"m7", None]
    assert resume.calls == 1


@pytest.mark.parametrize("priorities", ["one", "two"])
def test_receives_with_and_without_the_lock_take_every_message_once_across_threads(
        wake, resume, priorities):
    # One thread plays the I/O thread and pushes; five receive at once, three the way
    # without the lock (take), one waiting under it (get), one by batches (take_many,
    # a whole queue at a time). The interpreter switches threads every microsecond, so each
    # step meets every other. Every message arrives once, each receiver's in order, and the
    # inbox's count and bytes come back to zero. With two priorities (one batch in 16 of a
    # better one), receives take the lock while both are queued, and not once emptied.
    count = 30_000
    channel = Channel(wake_backend=wake, resume_reading=resume, recv_high=64)
    messages = [b"%d" % i for i in range(count)]
    got: dict[str, list[bytes]] = {"take": [], "take 2": [], "take 3": [], "get": [],
                                   "take_many": []}

    def push() -> None:
        # Mostly one at a time, so that receivers meet on a last item, and some batches.
        start = 0
        while start < count:
            size = 1 if start % 10 else 5
            better = priorities == "two" and start % 16 == 0
            channel.push_many(messages[start:start + size], 3 if better else 8)
            start += size

    def receive(how: str) -> None:
        out = got[how]
        while True:
            if how.startswith("take") and how != "take_many":
                item = channel.take()
                if item is not None:
                    out.append(item)
                elif channel.closed:
                    return
            elif how == "get":
                try:
                    out.append(channel.get(timeout=DEADLINE))
                except Closed:
                    return
            else:
                out.extend(channel.take_many(2))
                if channel.closed and not channel.inbox.count:
                    return

    def received() -> int:
        return sum(map(len, got.values()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        receivers = [Waiter(lambda how=how: receive(how)) for how in got]
        Waiter(push).join()
        deadline = time.monotonic() + DEADLINE
        while received() < count and time.monotonic() < deadline:
            time.sleep(0.001)  # polled with a deadline: three threads share the work
        channel.close()
        for receiver in receivers:
            receiver.join()
    finally:
        sys.setswitchinterval(interval)
    assert [r.error for r in receivers] == [None] * len(got)
    every = [item for items in got.values() for item in items]
    assert sorted(every, key=int) == messages, f"{received()} received of {count}"
    if priorities == "one":
        for items in got.values():
            assert items == sorted(items, key=int)
    assert (channel.inbox.count, channel.inbox_bytes) == (0, 0)
    assert not channel.recv_paused


# ---------------------------------------------------------------- gathering a burst


class Gathering:
    """A channel's gatherer (SocketCore's part), counted: ``armed`` (the timer armed
    again), ``quiet`` (drains posted without a wake-up), ``nudged``."""

    def __init__(self, channel: Channel) -> None:
        self.armed, self.quiet, self.nudged = Recorder(), Recorder(), Recorder()
        self.quiet_unlocked = 0  # quiet posts made without the channel's lock
        self._channel = channel
        channel.gatherer = self

    def gather(self) -> None:
        self.armed()

    def post_quietly(self) -> None:
        # Under the lock, or the timer's end_gathering could come between the check of
        # the gathering and the post, and leave the post in a loop asleep for good.
        self.quiet_unlocked += not self._channel._lock.locked()
        self.quiet()

    def nudge(self) -> None:
        self.nudged()

    def counts(self) -> tuple[int, int, int]:
        return self.armed.calls, self.quiet.calls, self.nudged.calls


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every put at one instant: each send after the first is one of a burst
    (DIRECT_SPACING); the first, after none, is a lone one."""
    class Frozen:
        @staticmethod
        def monotonic() -> float:
            return 1000.0

    monkeypatch.setattr("scaproust.core.channel.time", Frozen)


def test_a_burst_that_ran_out_of_credit_gathers_its_next_messages_into_one_drain(
        channel, wake, frozen_clock):
    gathering = Gathering(channel)
    channel.grant(2)
    channel.put(b"a", timeout=0)
    channel.put(b"b", timeout=0)  # a burst: the first message posted its drain, woken
    assert wake.calls == 1
    assert list(channel.take_outbox()) == [b"a", b"b"]
    cond = watch_putters(channel)
    putter = Waiter(lambda: [channel.put(m, timeout=DEADLINE) for m in (b"c", b"d", b"e")])
    assert cond.sleeping.wait(DEADLINE), "the burst never ran out of credit"
    cond.sleeping.clear()
    assert channel.outran and gathering.counts() == (0, 0, 0)

    channel.grant(2)  # room again: the woken burst gathers

    assert cond.sleeping.wait(DEADLINE), "the burst never ran out of credit again"
    # c posted its drain without waking the backend, d joined it, e found no credit and
    # woke the backend for that drain before it slept.
    assert gathering.counts() == (1, 1, 1)
    assert wake.calls == 1
    assert list(channel.take_outbox()) == [b"c", b"d"]
    channel.grant(1)  # e ran out within the burst too: the next gathering
    assert putter.join().error is None
    assert gathering.counts() == (2, 2, 1)
    assert list(channel.outbox) == [b"e"] and wake.calls == 1
    assert gathering.quiet_unlocked == 0


def test_a_lone_send_that_waited_for_credit_starts_no_gathering(channel, wake, frozen_clock):
    # The first send of a socket waits for its peer: nothing gathers behind it.
    gathering = Gathering(channel)
    cond = watch_putters(channel)
    putter = Waiter(lambda: [channel.put(m, timeout=DEADLINE) for m in (b"first", b"then")])
    assert cond.sleeping.wait(DEADLINE), "the send never waited"
    assert not channel.outran

    channel.grant(4)

    assert putter.join().error is None
    assert gathering.counts() == (0, 0, 0)
    assert wake.calls == 1 and list(channel.outbox) == [b"first", b"then"]


def test_a_burst_that_waits_for_credit_as_a_watcher_gathers_too(channel, wake, frozen_clock):
    # An asend, or a poll for POLLOUT, waits as a watcher, not in put.
    gathering = Gathering(channel)
    channel.grant(1)
    channel.put(b"a", timeout=0)
    channel.take_outbox()
    with pytest.raises(WouldBlock):
        channel.put(b"b", timeout=0)  # one of a burst, out of credit
    watcher = threading.Event()
    channel.add_watcher(watcher)

    channel.grant(2)

    assert watcher.is_set() and gathering.counts() == (1, 0, 0)
    channel.put(b"b", timeout=0)
    assert gathering.counts() == (1, 1, 0) and wake.calls == 1


def test_a_burst_that_gave_up_on_credit_starts_no_gathering_while_nobody_waits(
        channel, wake, frozen_clock):
    gathering = Gathering(channel)
    channel.grant(1)
    channel.put(b"a", timeout=0)
    channel.take_outbox()
    with pytest.raises(WouldBlock):
        channel.put(b"b", timeout=0)

    channel.grant(2)  # nobody waits for it

    assert gathering.counts() == (0, 0, 0)


def _gathering_started(channel: Channel) -> Gathering:
    # As a grant finds it when a burst's send waits for credit (the test above has the
    # threads); the notify finds nobody to wake.
    gathering = Gathering(channel)
    channel.outran, channel.send_waiters = True, 1
    channel.grant(4)
    channel.send_waiters = 0
    assert gathering.counts() == (1, 0, 0)
    return gathering


def test_once_the_gatherings_timer_ends_it_a_burst_wakes_the_backend_again(channel, wake):
    gathering = _gathering_started(channel)
    channel.put(b"a", timeout=0)
    assert gathering.counts() == (1, 1, 0) and wake.calls == 0
    channel.take_outbox()

    channel.end_gathering()

    channel.put(b"b", timeout=0)
    assert gathering.counts() == (1, 1, 0) and wake.calls == 1


def test_an_interrupt_as_a_gathered_drain_is_posted_hands_it_to_the_backend_anyway(resume):
    posts = Recorder()
    channel = Channel(wake_backend=Recorder(), resume_reading=resume, post_backend=posts)
    gathering = _gathering_started(channel)

    def interrupted() -> None:
        raise KeyboardInterrupt

    gathering.post_quietly = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        channel.put(b"a", timeout=0)

    assert list(channel.outbox) == [b"a"] and posts.calls == 1  # woken for it, not lost


def test_purging_a_paused_inbox_resumes_reading(channel, resume):
    channel.push_many([b"m%d" % n for n in range(8)])  # recv_high: reading pauses
    assert channel.recv_paused
    assert channel.purge_inbox() == 8
    assert not channel.recv_paused and resume.calls == 1 and channel.inbox_bytes == 0


class UnlendingReader:
    """A CallerReader whose socket has no pipe to lend (e.g. in-process pipes only)."""

    def __init__(self) -> None:
        self.waited = False
        self.lendable = 0  # what the channel looks at before calling wait

    def wait(self, deadline) -> bool:
        return False


def test_a_getter_that_waits_on_the_channel_marks_the_reader_as_having_waited(channel):
    # Its next send then runs in its own thread (Channel.put, send_now): it likely answers.
    channel.reader = reader = UnlendingReader()
    cond = watch_getters(channel)
    getter = Waiter(lambda: channel.get(timeout=DEADLINE))
    assert cond.sleeping.wait(DEADLINE), "the getter never waited"
    assert reader.waited

    channel.push_many([b"hello"])
    assert getter.join().result == b"hello"


@pytest.mark.parametrize("receive", ["get", "take"])
def test_a_receive_that_takes_the_last_item_marks_the_reader_one_that_leaves_more_does_not(
        channel, receive):
    # Taking the last one, the caller keeps up with its peer: its next send likely answers
    # (in-process, a reply often arrives before recv() is called, and nothing waits).
    channel.reader = reader = UnlendingReader()
    channel.push_many([b"one", b"two"])
    take = (lambda: channel.get(timeout=DEADLINE)) if receive == "get" else channel.take
    assert take() == b"one"
    assert not reader.waited
    assert take() == b"two"
    assert reader.waited


# ---------------------------------------------------------------- waking after the owner


@pytest.fixture
def session_loop():
    loop = Loop()
    yield loop
    loop.stop()


def asleep_on(loop: Loop, wake, resume, sleeper: str = "receiver"):
    """A channel of ``loop``'s session, and a thread asleep on it: a receiver in ``get``
    or a sender without credit in ``put``; with the condition it sleeps on."""
    channel = Channel(wake_backend=wake, resume_reading=resume, recv_high=8,
                      notify_later=loop.notify_after_release)
    if sleeper == "receiver":
        cond = watch_getters(channel)
        waiter = Waiter(lambda: channel.get(timeout=DEADLINE))
    else:
        cond = watch_putters(channel)
        waiter = Waiter(lambda: channel.put(b"x", timeout=DEADLINE))
    assert cond.sleeping.wait(DEADLINE), "it never slept"
    return channel, cond, waiter


@pytest.mark.parametrize("sleeper", ["receiver", "sender"])
def test_an_owners_delivery_or_credit_wakes_the_sleeper_once_the_owners_section_ends(
        wake, resume, sleeper, cores, session_loop):
    # On one core, woken inside the section, the sleeper would find the session lock and
    # the interpreter lock taken, and sleep again (reactor/waker.py): the session's loop
    # wakes it as the owner lets go (Loop.notify_after_release).
    cores(1)
    channel, cond, waiter = asleep_on(session_loop, wake, resume, sleeper)
    assert session_loop.own(0)
    try:
        if sleeper == "receiver":
            channel.push_many([b"hello"])
        else:
            channel.grant(1)
        with channel._lock:
            assert not cond._waiters  # chosen...
        assert waiter._thread.is_alive()  # ...and not woken: nothing written yet
    finally:
        session_loop.release()
    waiter.join()
    assert waiter.error is None
    if sleeper == "receiver":
        assert waiter.result == b"hello"
    else:
        assert list(channel.outbox) == [b"x"]


def test_a_delivery_by_a_thread_that_owns_no_session_wakes_the_sleeper_at_once(
        wake, resume, cores, session_loop):
    cores(1)
    channel, _, waiter = asleep_on(session_loop, wake, resume)
    channel.push_many([b"hello"])
    assert waiter.join().result == b"hello"


def test_on_more_cores_an_owners_delivery_wakes_the_sleeper_within_the_section(
        wake, resume, cores, session_loop):
    # The sleeper may run on another core: woken at once, it is on its way while the owner
    # finishes, and takes its message without waiting for the section's end.
    cores(2)
    channel, _, waiter = asleep_on(session_loop, wake, resume)
    assert session_loop.own(0)
    try:
        channel.push_many([b"hello"])
        assert waiter.join().result == b"hello"
    finally:
        session_loop.release()
