"""Tests of the reactor loop.

Nothing here sleeps to wait for a condition: cross-thread checks poll with a deadline, and
timer tests advance a fake clock and call ``run_once(0)``.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.reactor.loop import Loop
from scaproust.reactor.timers import COMPACT_MIN

DEADLINE = 5.0  # seconds; generous, only reached when a test is about to fail


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


def wait_until(predicate, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.0005)  # a poll interval, not a wait for the condition


def run_until(loop: Loop, predicate, timeout: float = DEADLINE) -> None:
    """Drive a loop that has no thread until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        loop.run_once(0.01)


def count_wakeups(loop: Loop) -> list[int]:
    """Wrap the loop's wake-up write; the returned list's one item counts the calls."""
    count = [0]
    real = loop._wakeup.wakeup

    def counting() -> None:
        count[0] += 1
        real()

    loop._wakeup.wakeup = counting
    return count


# --- cross-thread posting ---------------------------------------------------------------------


def test_callbacks_posted_from_another_thread_run_in_order_on_the_loop_thread(started):
    seen = []

    def record(i):
        seen.append((i, threading.get_ident(), started.in_loop_thread()))

    def poster():
        for i in range(1000):
            started.call_soon_threadsafe(record, i)

    t = threading.Thread(target=poster)
    t.start()
    t.join()
    wait_until(lambda: len(seen) == 1000)
    assert [i for i, _, _ in seen] == list(range(1000))
    assert {ident for _, ident, _ in seen} == {started._thread.ident}
    assert all(in_loop for _, _, in_loop in seen)
    assert not started.in_loop_thread()


def test_a_busy_loop_is_never_woken_by_posts(started):
    entered, release = threading.Event(), threading.Event()
    started.call_soon_threadsafe(lambda: (entered.set(), release.wait(DEADLINE)))
    assert entered.wait(DEADLINE)
    wakeups = count_wakeups(started)
    seen = []

    def poster():
        for i in range(1000):
            started.call_soon_threadsafe(seen.append, i)

    t = threading.Thread(target=poster)
    t.start()
    t.join()
    assert wakeups[0] == 0  # the loop was running a callback the whole time
    release.set()
    wait_until(lambda: len(seen) == 1000)
    assert seen == list(range(1000))
    # Back from the callback, the loop found the posts before sleeping: still no wake-up.
    assert wakeups[0] == 0


def test_the_loop_says_it_sleeps_only_while_it_has_no_work(started):
    # A caller's spin reads it to give way to the loop (core/caller_reader.py).
    wait_until(lambda: started.sleeping)  # asleep in select()
    entered, release = threading.Event(), threading.Event()
    started.call_soon_threadsafe(lambda: (entered.set(), release.wait(DEADLINE)))
    assert entered.wait(DEADLINE)
    assert not started.sleeping  # running a callback
    release.set()
    wait_until(lambda: started.sleeping)


def test_a_post_to_a_sleeping_loop_writes_one_wakeup_byte(started):
    wakeups = count_wakeups(started)
    wait_until(lambda: started._idle)  # asleep in select() with no timeout
    done = threading.Event()
    started.call_soon_threadsafe(done.set)
    assert done.wait(DEADLINE)
    assert wakeups[0] == 1


def test_a_quiet_post_waits_for_the_sleeping_loops_next_turn_and_a_nudge_starts_it(started):
    wakeups = count_wakeups(started)
    wait_until(lambda: started._idle)  # asleep in select() with no timeout
    done = threading.Event()

    started.call_soon_quietly(done.set)

    # The loop looked at its posts before it slept: nothing ends that sleep but a wake-up.
    assert wakeups[0] == 0 and not done.is_set()
    started.nudge()
    assert done.wait(DEADLINE)
    assert wakeups[0] == 1


def test_a_quiet_post_runs_when_a_timer_ends_the_loops_sleep(started):
    # What bounds a gathering's wait (core/channel.py): the timer armed with it.
    wakeups = count_wakeups(started)
    fired, done = threading.Event(), threading.Event()
    started.call_soon_threadsafe(lambda: started.call_later(0.25, fired.set))
    wait_until(lambda: started._idle and len(started._timers) == 1)  # asleep until it
    before = wakeups[0]

    started.call_soon_quietly(done.set)

    assert done.wait(DEADLINE) and fired.is_set()
    assert wakeups[0] == before


def test_a_nudge_to_a_busy_loop_writes_nothing(loop):
    wakeups = count_wakeups(loop)
    loop.nudge()  # not running, so not asleep in select()
    assert wakeups[0] == 0


def test_the_loop_drains_every_pending_wakeup_byte(loop):
    for _ in range(100):
        loop._wakeup.wakeup()  # more than the tiny send buffer may hold: extras are dropped
    loop.run_once(0)  # readable: drained in one go
    assert loop._selector.select(0) == []


def test_a_post_made_while_draining_runs_in_the_next_iteration(loop):
    seen = []

    def repost(n):
        seen.append(n)
        loop.call_soon_threadsafe(repost, n + 1)

    loop.call_soon_threadsafe(repost, 0)
    loop.call_soon_threadsafe(seen.append, "second")
    loop.run_once(0)
    assert seen == [0, "second"]
    loop.run_once(0)
    assert seen == [0, "second", 1]


def test_a_self_reposting_callback_does_not_starve_io(started, pair):
    a, b = pair
    readable = threading.Event()
    spins = [0]

    def spin():
        spins[0] += 1
        if not readable.is_set():
            started.call_soon_threadsafe(spin)

    def on_readable():
        a.recv(10)
        readable.set()
        started.remove_reader(a)

    started.call_soon_threadsafe(started.add_reader, a, on_readable)
    started.call_soon_threadsafe(spin)
    b.send(b"x")
    assert readable.wait(DEADLINE)


def test_call_soon_runs_in_the_next_iteration_without_sleeping(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    started_at = time.monotonic()
    loop.run_once(DEADLINE)  # a ready callback makes the select timeout 0
    assert seen == [1]
    assert time.monotonic() - started_at < DEADLINE / 2


def test_call_soon_from_a_callback_waits_for_the_next_iteration(loop):
    seen = []
    loop.call_soon(lambda: (seen.append("a"), loop.call_soon(seen.append, "b")))
    loop.run_once(0)
    assert seen == ["a"]
    loop.run_once(0)
    assert seen == ["a", "b"]


def test_call_after_batch_runs_after_the_batch_and_before_the_next_select(loop):
    seen = []

    def first():
        seen.append("first")
        loop.call_after_batch(seen.append, "end")
        loop.call_soon(seen.append, "next iteration")

    loop.call_soon(first)
    loop.call_soon(seen.append, "second")
    loop.run_once(0)
    assert seen == ["first", "second", "end"]
    loop.run_once(0)
    assert seen == ["first", "second", "end", "next iteration"]


def test_work_scheduled_after_the_batch_makes_the_next_select_timeout_zero(loop):
    seen = []
    loop.call_soon(lambda: loop.call_after_batch(lambda: loop.call_after_batch(seen.append, 2)))
    loop.run_once(0)
    started_at = time.monotonic()
    loop.run_once(DEADLINE)
    assert seen == [2]
    assert time.monotonic() - started_at < DEADLINE / 2


def test_a_post_before_run_once_makes_the_select_timeout_zero(loop):
    seen = []
    loop.call_soon_threadsafe(seen.append, 1)
    started_at = time.monotonic()
    loop.run_once(DEADLINE)
    assert seen == [1]
    assert time.monotonic() - started_at < DEADLINE / 2


# --- timers -----------------------------------------------------------------------------------


def test_timers_fire_in_time_order_then_scheduling_order(fake_loop, clock):
    fired = []
    fake_loop.call_later(2, fired.append, "c")
    fake_loop.call_later(1, fired.append, "a")
    fake_loop.call_at(clock.now + 1, fired.append, "b")  # same time as "a", scheduled after
    fake_loop.run_once(0)
    assert fired == []
    clock.advance(0.999)
    fake_loop.run_once(0)
    assert fired == []
    clock.advance(0.001)
    fake_loop.run_once(0)
    assert fired == ["a", "b"]
    clock.advance(5)
    fake_loop.run_once(0)
    assert fired == ["a", "b", "c"]


def test_a_cancelled_timer_does_not_fire(fake_loop, clock):
    fired = []
    handle = fake_loop.call_later(1, fired.append, "x")
    fake_loop.call_later(1, fired.append, "y")
    handle.cancel()
    handle.cancel()  # twice is harmless
    assert handle.cancelled
    clock.advance(1)
    fake_loop.run_once(0)
    assert fired == ["y"]


def test_a_timer_cancelled_by_an_earlier_callback_of_the_same_batch_does_not_fire(fake_loop, clock):
    fired = []
    victim = None

    def first():
        fired.append("first")
        victim.cancel()

    fake_loop.call_later(1, first)
    victim = fake_loop.call_later(1, fired.append, "victim")
    clock.advance(1)
    fake_loop.run_once(0)
    assert fired == ["first"]


def test_cancelling_a_fired_timer_does_nothing(fake_loop, clock):
    fired = []
    handle = fake_loop.call_later(1, fired.append, 1)
    other = fake_loop.call_later(5, fired.append, 5)
    clock.advance(1)
    fake_loop.run_once(0)
    handle.cancel()
    assert fake_loop._timers._ncancelled == 0
    assert len(fake_loop._timers) == 1
    clock.advance(4)
    fake_loop.run_once(0)
    assert fired == [1, 5]
    assert not other.cancelled


def test_a_timer_scheduled_from_a_timer_with_zero_delay_fires_next_iteration(fake_loop, clock):
    fired = []
    fake_loop.call_later(1, lambda: fake_loop.call_later(0, fired.append, "inner"))
    clock.advance(1)
    fake_loop.run_once(0)
    assert fired == []
    fake_loop.run_once(0)
    assert fired == ["inner"]


def test_the_select_timeout_is_capped_by_the_next_timer(fake_loop, clock):
    fired = []
    fake_loop.call_later(1, fired.append, 1)
    clock.advance(2)
    started_at = time.monotonic()
    fake_loop.run_once(DEADLINE)  # the timer is overdue: select must not wait
    assert fired == [1]
    assert time.monotonic() - started_at < DEADLINE / 2


def test_a_real_clock_timer_ends_the_select_early(loop):
    fired = []
    loop.call_later(0.01, fired.append, 1)
    started_at = time.monotonic()
    while not fired and time.monotonic() - started_at < DEADLINE:
        loop.run_once(DEADLINE)
    assert fired == [1]
    assert time.monotonic() - started_at < DEADLINE / 2


def test_a_cancel_heavy_timer_load_compacts_the_heap(fake_loop, clock):
    fired = []
    handles = [fake_loop.call_later(1 + i, fired.append, i) for i in range(1000)]
    for h in handles[:500]:
        h.cancel()
    assert len(fake_loop._timers) == 1000  # exactly half cancelled: lazy, kept
    handles[500].cancel()  # now more than half: rebuilt without the dead entries
    assert len(fake_loop._timers) == 499
    assert fake_loop._timers._ncancelled == 0
    clock.advance(2000)
    fake_loop.run_once(0)
    assert fired == list(range(501, 1000))
    assert len(fake_loop._timers) == 0


def test_post_if_open_posts_while_the_loop_runs_and_does_nothing_once_it_stopped(fake_loop):
    ran = []
    assert fake_loop.post_if_open(ran.append, 1)
    fake_loop.run_once(0)
    assert ran == [1]

    fake_loop.stop()  # call_soon_threadsafe raises from now on; post_if_open never does
    with pytest.raises(RuntimeError):
        fake_loop.call_soon_threadsafe(ran.append, 2)
    assert fake_loop.post_if_open(ran.append, 2) is False
    assert ran == [1]


def test_a_small_heap_keeps_its_dead_entries_until_they_reach_the_top(fake_loop, clock):
    # A REQ cancels its resend timer and starts another at every request: a heap of a few
    # entries is not rebuilt for that, the dead ones go when they reach the top.
    fired = []
    handles = [fake_loop.call_later(1 + i, fired.append, i) for i in range(COMPACT_MIN)]
    for h in handles[:-1]:
        h.cancel()
    assert len(fake_loop._timers) == COMPACT_MIN
    assert fake_loop._timers._ncancelled == COMPACT_MIN - 1
    assert fake_loop._timers.next_when() == clock() + COMPACT_MIN  # the live one, dead dropped
    assert len(fake_loop._timers) == 1
    clock.advance(COMPACT_MIN)
    fake_loop.run_once(0)
    assert fired == [COMPACT_MIN - 1]


def test_cancelled_timers_on_top_of_the_heap_are_discarded_when_computing_the_timeout(
    fake_loop, clock
):
    fired = []
    early = fake_loop.call_later(1, fired.append, "early")
    fake_loop.call_later(1000, fired.append, "late")
    fake_loop.call_later(1001, fired.append, "later")
    fake_loop.call_later(1002, fired.append, "latest")
    early.cancel()
    fake_loop.run_once(0)
    assert len(fake_loop._timers) == 3
    assert fake_loop._timers._ncancelled == 0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=20), st.booleans()),
        max_size=60,
    ),
    st.lists(st.integers(min_value=0, max_value=25), max_size=10),
)
def test_timers_fire_like_a_sorted_list_of_the_uncancelled_ones(schedule, steps):
    clock = FakeClock(0.0)
    loop = Loop(clock=clock)
    try:
        fired = []
        handles = [loop.call_at(when, fired.append, i) for i, (when, _) in enumerate(schedule)]
        for handle, (_, cancel) in zip(handles, schedule, strict=True):
            if cancel:
                handle.cancel()
        for step in [*steps, 100]:
            clock.now = max(clock.now, step)
            loop.run_once(0)
            expected = sorted(
                (when, i)
                for i, (when, cancel) in enumerate(schedule)
                if not cancel and when <= clock.now
            )
            assert fired == [i for _, i in expected]
    finally:
        loop.stop()


def test_time_is_the_injected_clock(fake_loop, clock):
    assert fake_loop.time() == clock.now
    clock.advance(3)
    assert fake_loop.time() == clock.now


# --- readers and writers ----------------------------------------------------------------------


def test_a_reader_fires_when_its_socket_is_readable(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(100)))
    loop.run_once(0)
    assert got == []
    b.send(b"hello")
    run_until(loop, lambda: got)
    assert got == [b"hello"]
    assert loop.remove_reader(a)
    assert not loop.remove_reader(a)
    b.send(b"again")
    loop.run_once(0.01)
    assert got == [b"hello"]


def test_re_adding_a_reader_replaces_its_callback(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, lambda: got.append("old"))
    loop.add_reader(a, lambda: got.append(a.recv(100)))
    b.send(b"x")
    run_until(loop, lambda: got)
    assert got == [b"x"]


def test_writer_interest_is_added_and_removed(loop, pair):
    a, _ = pair
    calls = []
    loop.add_writer(a, lambda: calls.append("w"))
    run_until(loop, lambda: calls)
    assert loop.remove_writer(a)
    assert not loop.remove_writer(a)
    n = len(calls)
    loop.run_once(0)
    loop.run_once(0)
    assert len(calls) == n
    with pytest.raises(KeyError):
        loop._selector.get_key(a)


def test_reader_and_writer_share_one_registration(loop, pair):
    a, _ = pair
    loop.add_reader(a, lambda: None)
    assert loop._selector.get_key(a).events == selectors.EVENT_READ
    loop.add_writer(a, lambda: None)
    assert loop._selector.get_key(a).events == selectors.EVENT_READ | selectors.EVENT_WRITE
    assert loop.remove_reader(a)
    assert loop._selector.get_key(a).events == selectors.EVENT_WRITE
    assert loop.add_reader(a, lambda: None) is None
    assert loop.remove_writer(a)
    assert loop._selector.get_key(a).events == selectors.EVENT_READ
    assert loop.remove_reader(a)
    with pytest.raises(KeyError):
        loop._selector.get_key(a)
    assert a not in loop._regs


def test_re_adding_an_unchanged_interest_touches_no_syscall(loop, pair, monkeypatch):
    a, _ = pair
    changes = []
    for name in ("register", "modify", "unregister"):
        real = getattr(loop._selector, name)

        def counting(*args, _real=real, _name=name):
            changes.append(_name)
            return _real(*args)

        monkeypatch.setattr(loop._selector, name, counting)
    loop.add_reader(a, lambda: None)
    loop.add_writer(a, lambda: None)
    for _ in range(10):
        loop.add_writer(a, lambda: None)
        loop.add_reader(a, lambda: None)
    assert changes == ["register", "modify"]
    loop.remove_writer(a)
    loop.remove_writer(a)
    loop.remove_reader(a)
    assert changes == ["register", "modify", "modify", "unregister"]


def test_a_writer_removed_by_the_reader_of_the_same_batch_does_not_run(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append("r")
        loop.remove_writer(a)

    b.send(b"x")  # a is now readable and writable
    loop.add_reader(a, on_readable)
    loop.add_writer(a, lambda: calls.append("w"))
    run_until(loop, lambda: calls)
    assert calls == ["r"]


def test_a_socket_closed_before_its_removal_can_still_be_removed(loop, pair):
    a, _ = pair
    loop.add_reader(a, lambda: None)
    a.close()
    assert loop.remove_reader(a)
    assert a not in loop._regs


# --- errors -----------------------------------------------------------------------------------


def boom():
    raise ValueError("boom")


def test_an_exception_in_a_callback_is_logged_and_the_loop_goes_on(loop, caplog):
    seen = []
    loop.call_soon(boom)
    loop.call_soon(seen.append, "after")
    with caplog.at_level(logging.ERROR, logger="scaproust.reactor"):
        loop.run_once(0)
    assert seen == ["after"]
    [record] = caplog.records
    assert record.name == "scaproust.reactor"
    assert "boom" in record.getMessage()
    assert record.exc_info[0] is ValueError


def test_exceptions_in_timers_and_io_callbacks_are_logged_too(fake_loop, clock, pair, caplog):
    a, b = pair
    fake_loop.call_later(1, boom)
    fake_loop.add_reader(a, boom)
    b.send(b"x")
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="scaproust.reactor"):
        run_until(fake_loop, lambda: len(caplog.records) >= 2)
    assert all(r.exc_info[0] is ValueError for r in caplog.records)
    assert any("(readable)" in r.getMessage() for r in caplog.records)


def test_the_io_thread_survives_a_callback_exception(started, caplog):
    done = threading.Event()
    with caplog.at_level(logging.ERROR, logger="scaproust.reactor"):
        started.call_soon_threadsafe(boom)
        started.call_soon_threadsafe(done.set)
        assert done.wait(DEADLINE)
    assert started._thread.is_alive()
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)


def test_a_base_exception_in_the_loop_thread_is_logged_and_stops_the_loop(started, caplog):
    def leave():
        raise SystemExit(3)

    with caplog.at_level(logging.ERROR, logger="scaproust.reactor"):
        started.call_soon_threadsafe(leave)
        started._thread.join(DEADLINE)
    assert not started._thread.is_alive()
    assert started.closed
    assert not started.running
    assert any(r.exc_info and r.exc_info[0] is SystemExit for r in caplog.records)
    with pytest.raises(RuntimeError, match="closed"):
        started.call_soon_threadsafe(print)


def test_a_base_exception_in_run_once_finishes_the_batch_then_stops(loop, caplog):
    seen = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    loop.call_soon(seen.append, "rest of the batch")
    with caplog.at_level(logging.ERROR, logger="scaproust.reactor"):
        loop.run_once(0)
    assert seen == ["rest of the batch"]
    assert loop._stopping
    assert "KeyboardInterrupt" in caplog.records[0].getMessage()


# --- start, stop, fork ------------------------------------------------------------------------


def test_stop_joins_the_thread_closes_everything_and_is_idempotent():
    loop = Loop()
    loop.start()
    assert loop.running
    thread = loop._thread
    assert thread.daemon and thread.name == "scaproust-io"
    loop.stop()
    assert not thread.is_alive()
    assert loop.closed and not loop.running
    assert loop._selector.get_map() is None
    assert loop._wakeup.read_sock.fileno() == -1
    assert loop._wakeup._write_sock.fileno() == -1
    loop.stop()
    loop.stop(timeout=None)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon_threadsafe(print)
    with pytest.raises(RuntimeError):
        loop.start()


def test_work_posted_before_stop_still_runs():
    loop = Loop()
    loop.start()
    seen = []
    for i in range(500):
        loop.call_soon_threadsafe(seen.append, i)
    loop.stop()
    assert seen == list(range(500))


def test_stop_right_after_start_waits_for_the_thread():
    loop = Loop()
    loop.start()
    loop.stop()
    assert loop.closed
    assert not loop._thread.is_alive()


def test_stop_from_the_loop_thread_ends_the_loop_after_the_iteration(started):
    seen = []

    def stop_then_more():
        started.stop()
        seen.append("same iteration")

    started.call_soon_threadsafe(stop_then_more)
    started._thread.join(DEADLINE)
    assert not started._thread.is_alive()
    assert seen == ["same iteration"]
    assert started.closed


def test_stop_on_a_loop_that_never_ran_closes_it():
    loop = Loop()
    loop.stop()
    assert loop.closed
    assert loop._wakeup.read_sock.fileno() == -1
    with pytest.raises(RuntimeError):
        loop.run_once(0)
    with pytest.raises(RuntimeError):
        loop.run_forever()


def test_stop_gives_up_after_its_timeout_when_a_callback_blocks(started, caplog):
    release = threading.Event()
    entered = threading.Event()
    started.call_soon_threadsafe(lambda: (entered.set(), release.wait(DEADLINE)))
    assert entered.wait(DEADLINE)
    with caplog.at_level(logging.WARNING, logger="scaproust.reactor"):
        started.stop(timeout=0.01)
    assert "did not stop" in caplog.records[0].getMessage()
    assert not started.closed
    release.set()
    started._thread.join(DEADLINE)
    assert started.closed


def test_run_forever_may_be_called_directly_in_any_thread():
    loop = Loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    wait_until(lambda: loop.running)
    seen = []
    loop.call_soon_threadsafe(seen.append, 1)
    loop.stop()
    thread.join(DEADLINE)
    assert seen == [1]
    assert loop.closed and not thread.is_alive()


def test_starting_twice_is_an_error(started):
    with pytest.raises(RuntimeError, match="already"):
        started.start()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_loop_refuses_to_be_used_in_a_forked_child(started):
    started.check_fork()
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only, never return into pytest
        code = 1
        try:
            try:
                started.call_soon_threadsafe(print)
            except RuntimeError as exc:
                if "after fork" in str(exc):
                    try:
                        started.check_fork()
                    except RuntimeError:
                        code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    done = threading.Event()
    started.call_soon_threadsafe(done.set)  # the parent's loop is unaffected
    assert done.wait(DEADLINE)
