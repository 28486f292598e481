"""The session lock: who owns the loop's machines, and what an owner in a caller's thread
leaves for the I/O thread (docs/ARCHITECTURE.md, "One owner at a time").

Loops here run in a real thread where a test needs one; nothing sleeps to wait for a
condition (polls with a deadline, as test_loop.py).
"""

from __future__ import annotations

import threading

import pytest

from scaproust.reactor.loop import MAX_SLEEP, RELEASE_ROUNDS, Loop
from tests.reactor.test_loop import FakeClock, run_until, wait_until


def test_a_caller_owns_the_loop_while_it_sleeps_and_not_while_it_runs_a_callback(started):
    assert started.own(0)
    assert started.owned()
    started.release()
    assert not started.owned()
    inside, leave = threading.Event(), threading.Event()
    started.call_soon_threadsafe(lambda: (inside.set(), leave.wait(5.0)))
    assert inside.wait(5.0)
    try:
        assert not started.own(0)  # the I/O thread holds the lock while it runs callbacks
        assert not started.own(0.01)
    finally:
        leave.set()
    wait_until(lambda: started.own(0))
    started.release()


def test_an_owner_cannot_own_again_and_a_closed_loop_cannot_be_owned(loop):
    assert loop.own(0)
    try:
        assert not loop.own(0) and not loop.own(None)  # no re-entry: the caller falls back
    finally:
        loop.release()
    loop.stop()
    assert not loop.own(0) and not loop.own(None)


def test_release_runs_what_the_section_left_for_the_end_of_the_batch_in_the_owners_thread(loop):
    ran_in = []
    assert loop.own(0)
    loop.call_after_batch(lambda: ran_in.append(threading.get_ident()))
    loop.release()
    assert ran_in == [threading.get_ident()]


def test_release_runs_what_its_callbacks_leave_for_the_batch_end_a_bounded_number_of_rounds(loop):
    # An in-process send's flush leaves the receiving pipe's read for the end of the batch:
    # release runs that too, in the owner's thread; a chain that never ends is left to
    # the I/O thread after RELEASE_ROUNDS rounds.
    ran = []

    def chain(depth):
        ran.append(depth)
        loop.call_after_batch(chain, depth + 1)

    assert loop.own(0)
    loop.call_after_batch(chain, 1)
    loop.release()
    assert ran == list(range(1, RELEASE_ROUNDS + 1))
    loop.run_once(0)
    assert ran == list(range(1, RELEASE_ROUNDS + 2))


def test_release_without_flush_leaves_the_batch_to_the_loop(loop):
    ran = []
    assert loop.own(0)
    loop.call_after_batch(ran.append, "flushed")
    loop.release(flush=False)
    assert ran == []
    loop.run_once(0)
    assert ran == ["flushed"]


def test_an_exception_in_an_owners_callback_is_logged_and_the_lock_released(loop, caplog):
    assert loop.own(0)
    loop.call_after_batch(lambda: 1 / 0)
    loop.release()
    assert "ZeroDivisionError" in caplog.text
    assert loop.own(0)
    loop.release()


def interrupted_once(ran: list):
    """A callback that a Ctrl-C interrupts the first time it is called, as it is called
    (before any of it runs); it runs the next time."""
    def callback():
        if "interrupted" not in ran:
            ran.append("interrupted")
            raise KeyboardInterrupt
        ran.append("ran")
    return callback


def test_a_keyboard_interrupt_in_an_owners_callback_reaches_the_caller_and_frees_the_lock(loop):
    ran = []
    assert loop.own(0)
    loop.call_after_batch(interrupted_once(ran))
    with pytest.raises(KeyboardInterrupt):
        loop.release()
    assert not loop.owned() and loop.own(0)
    loop.release()  # the next owner's end of batch runs it again
    assert ran == ["interrupted", "ran"]


def test_the_interrupted_callback_and_those_after_it_are_kept_for_the_next_end_of_batch(loop):
    # Each is a pipe's flush or read marked scheduled until it runs: dropped, that pipe
    # would never write (or read) again.
    ran = []
    assert loop.own(0)
    loop.call_after_batch(ran.append, "before")
    loop.call_after_batch(interrupted_once(ran))
    loop.call_after_batch(ran.append, "after")
    loop.call_after_batch(ran.append, "last")
    with pytest.raises(KeyboardInterrupt):
        loop.release()
    assert ran == ["before", "interrupted"]
    loop.run_once(0)
    assert ran == ["before", "interrupted", "ran", "after", "last"]


def test_the_io_thread_is_woken_for_the_callbacks_an_interrupted_owner_left(started):
    ran = []
    woken = []
    wait_until(lambda: started._idle)  # asleep in its select, with nothing due
    assert started.own(None)
    wakeup = started._wakeup.wakeup
    started._wakeup.wakeup = lambda: (woken.append(True), wakeup())  # not MAX_SLEEP later
    started.call_after_batch(interrupted_once(ran))
    started.call_after_batch(lambda: ran.append(threading.get_ident()))
    with pytest.raises(KeyboardInterrupt):
        started.release()
    assert woken == [True]
    wait_until(lambda: len(ran) == 3)
    assert ran == ["interrupted", "ran", started._thread.ident]


def test_the_loop_never_sleeps_longer_than_max_sleep():
    clock = FakeClock()
    lp = Loop(clock=clock)
    try:
        assert lp._select_timeout(None) == MAX_SLEEP
        assert lp._sleep_until == clock.now + MAX_SLEEP
        lp.call_later(0.25, lambda: None)
        assert lp._select_timeout(None) == 0.25
    finally:
        lp.stop()


def test_an_owner_wakes_a_sleeping_loop_for_a_callback_and_an_early_timer(started):
    fired = threading.Event()
    wait_until(lambda: started._idle)
    assert started.own(0)
    started.call_later(0.0, fired.set)  # due before the loop meant to wake (MAX_SLEEP)
    started.release()
    assert fired.wait(MAX_SLEEP / 2)  # not the 1 s wake-up of an idle loop: woken at once
    called = threading.Event()
    wait_until(lambda: started._idle)
    assert started.own(0)
    started.call_soon(called.set)
    started.release()
    assert called.wait(MAX_SLEEP / 2)


def test_a_timer_due_after_the_loops_own_wake_up_costs_no_wake_up(started):
    wait_until(lambda: started._idle)
    assert started.own(0)
    started.call_later(60.0, lambda: None)  # a REQ resend timer: the loop wakes by itself first
    assert not started._timer_wake
    started.release()


def test_a_lent_reader_is_not_called_by_the_loop_and_is_called_again_once_returned(loop, pair):
    a, b = pair
    calls = []
    loop.add_reader(a, lambda: calls.append(a.recv(100)))
    assert loop.lend_reader(a)
    assert not loop.lend_reader(a)  # lent already
    b.send(b"x")
    loop.run_once(0.05)
    assert calls == []  # readable, but lent: the kernel is not even asked
    loop.return_reader(a)
    run_until(loop, lambda: calls)
    assert calls == [b"x"]


def test_a_hang_up_on_a_lent_reader_calls_its_alarm_not_its_reader(loop, pair):
    # The kernel is asked only for the peer's end of stream about a lent reader with an
    # alarm, and reports an error or a hang-up all the same: whoever borrowed it is told
    # (a loan kept between two receives is read by nobody), and the reader is not called.
    a, b = pair
    reads, alarms = [], []
    loop.add_reader(a, lambda: reads.append(1))
    assert loop.lend_reader(a, lambda: (alarms.append(1), loop.return_reader(a)))
    b.send(b"x")
    loop.run_once(0.02)
    assert alarms == [] and reads == []  # readable only: nothing reported
    b.close()  # the peer is gone: a hang-up
    run_until(loop, lambda: alarms)
    assert alarms == [1] and reads == []
    run_until(loop, lambda: reads)  # given back by the alarm: read as usual


def test_a_lent_reader_with_an_alarm_hears_the_peers_end_of_stream(loop, pair):
    # The peer shuts its side down (a FIN, not a hang-up): readable, so nothing for a lent
    # reader without an alarm (its borrower polls it and reads the end itself), the alarm
    # for one with (a loan kept between two receives: nobody polls it).
    import socket

    a, b = pair
    reads, alarms = [], []
    loop.add_reader(a, lambda: reads.append(a.recv(100)))
    assert loop.lend_reader(a)
    b.shutdown(socket.SHUT_WR)
    loop.run_once(0.02)
    assert reads == [] and alarms == []
    loop.return_reader(a)
    run_until(loop, lambda: reads)
    assert reads[0] == b""  # the end of stream, read once given back
    loop.remove_reader(a)
    reads.clear()

    c, d = socket.socketpair()
    try:
        loop.add_reader(c, lambda: reads.append(c.recv(100)))
        assert loop.lend_reader(c, lambda: (alarms.append(1), loop.return_reader(c)))
        d.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: alarms)
        assert alarms == [1] and reads == []
        run_until(loop, lambda: reads)  # given back by the alarm: read as usual
        assert reads[0] == b""
        loop.remove_reader(c)
    finally:
        c.close()
        d.close()


def test_a_returned_or_removed_reader_forgets_its_alarm(loop, pair):
    a, b = pair
    alarms = []
    loop.add_reader(a, lambda: None)
    assert loop.lend_reader(a, lambda: alarms.append(1))
    loop.return_reader(a)
    assert loop._regs[a].alarm is None
    assert loop.lend_reader(a, lambda: alarms.append(1))
    loop.add_reader(a, lambda: None)  # replaces the lent reader
    assert loop._regs[a].alarm is None
    assert loop.lend_reader(a, lambda: alarms.append(1))
    assert loop.remove_reader(a)
    loop.add_reader(a, lambda: None)
    assert loop._regs[a].alarm is None
    assert alarms == []


def test_a_writer_added_to_a_lent_registration_does_not_wake_its_reader(loop, pair):
    a, b = pair
    reads, writes = [], []
    loop.add_reader(a, lambda: reads.append(1))
    assert loop.lend_reader(a)
    b.send(b"x")
    loop.add_writer(a, lambda: (writes.append(1), loop.remove_writer(a)))
    run_until(loop, lambda: writes)
    loop.run_once(0.02)
    assert reads == []  # the writer's mask change left the lent reader unasked
    loop.return_reader(a)
    run_until(loop, lambda: reads)


def test_removing_a_lent_reader_drops_it_and_return_reader_is_then_harmless(loop, pair):
    a, b = pair
    loop.add_reader(a, lambda: None)
    assert loop.lend_reader(a)
    assert loop.remove_reader(a)
    loop.return_reader(a)
    assert a not in loop._regs
    assert not loop.lend_reader(a)  # nothing to lend


def test_a_new_reader_that_replaces_a_lent_one_is_watched(loop, pair):
    a, b = pair
    old, new = [], []
    loop.add_reader(a, lambda: old.append(1))
    assert loop.lend_reader(a)
    loop.add_reader(a, lambda: new.append(a.recv(100)))
    b.send(b"y")
    run_until(loop, lambda: new)
    assert new == [b"y"] and old == []


class _Sleepers:
    """A condition (``Loop.notify_after_release``'s interface) whose chosen sleepers record
    how they are woken: by which thread, and whether the session lock was free then.
    ``defer``: they sleep on descriptors of their own (a thread on one core)."""

    def __init__(self, loop: Loop, count: int, defer: bool = True) -> None:
        self.defer = defer
        self.loop = loop
        self.count = count
        self.woken: list[tuple[int, bool]] = []
        self.notified_now = 0

    def take(self, n: int) -> list:
        taken, self.count = min(n, self.count), self.count - min(n, self.count)
        return [self] * taken

    def notify(self, n: int) -> None:
        self.notified_now += n

    def wake(self) -> None:
        # The waking thread is the owner that chose them: it must have let go of the lock.
        free = not self.loop.lock._is_owned() and not self.loop.owned()
        self.woken.append((threading.get_ident(), free))


def test_an_owner_wakes_the_sleepers_it_chose_once_its_section_ends_holding_no_lock(loop):
    # Woken in the section, a sleeper would find the session lock (and the interpreter
    # lock) taken and sleep again: core/condition.py.
    sleepers = _Sleepers(loop, 3)
    assert loop.own(0)
    loop.notify_after_release(sleepers, 2)
    loop.call_after_batch(lambda: loop.notify_after_release(sleepers, 1))
    assert sleepers.woken == [] and sleepers.count == 1
    loop.release()
    me = threading.get_ident()
    assert sleepers.woken == [(me, True)] * 3 and not sleepers.notified_now


def test_an_owner_wakes_at_once_the_sleepers_that_sleep_on_a_lock(loop):
    # Threads that may run on other cores than their wakers (reactor/waker.py): woken
    # there at once, they are on their way while the owner finishes.
    sleepers = _Sleepers(loop, 2, defer=False)
    assert loop.own(0)
    try:
        loop.notify_after_release(sleepers, 2)
        me = threading.get_ident()
        assert sleepers.woken == [(me, False)] * 2  # in the section
    finally:
        loop.release()


def test_a_thread_that_does_not_own_the_session_wakes_at_once(loop):
    sleepers = _Sleepers(loop, 3)
    loop.notify_after_release(sleepers, 2)
    assert sleepers.notified_now == 2 and sleepers.woken == []


def test_the_io_thread_wakes_the_sleepers_its_batch_chose_after_the_batch(loop):
    sleepers = _Sleepers(loop, 1)
    seen = []

    def deliver():
        loop.notify_after_release(sleepers, 1)
        loop.call_after_batch(lambda: seen.append(list(sleepers.woken)))

    loop.call_soon_threadsafe(deliver)
    run_until(loop, lambda: sleepers.woken)
    assert seen == [[]]  # not during the batch
    assert sleepers.woken == [(threading.get_ident(), True)]


def test_an_owner_interrupted_in_its_section_still_wakes_the_sleepers_it_chose(loop):
    sleepers = _Sleepers(loop, 1)

    def interrupt():
        raise KeyboardInterrupt

    assert loop.own(0)
    loop.notify_after_release(sleepers, 1)
    loop.call_after_batch(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.release()
    assert sleepers.woken == [(threading.get_ident(), True)]
