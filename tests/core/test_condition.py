"""The channel's condition variable: threading.Condition's wait and notify, for a caller that
holds the lock, and ``take``, which chooses sleepers for the caller to wake once it holds no
lock (core/condition.py)."""

from __future__ import annotations

import threading
import time

import pytest

from scaproust.core.condition import Condition
from scaproust.reactor.waker import thread_waker, wake_all

T = 5.0  # bound of every wait that a notify must end


def _sleeper(lock, cond, results):
    """A thread that waits once on ``cond`` (no timeout), recording what wait returned."""
    def run():
        with lock:
            results.append(cond.wait())
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until_asleep(lock, cond, count):
    deadline = time.monotonic() + T
    while True:
        with lock:
            if len(cond._waiters) == count:
                return
        assert time.monotonic() < deadline, "the waiters never slept"
        time.sleep(0.001)


def test_notify_wakes_one_waiter_at_a_time_the_longest_waiting_first():
    lock = threading.Lock()
    cond = Condition(lock)
    order: list[str] = []

    def run(name):
        with lock:
            assert cond.wait() is True
            order.append(name)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    _wait_until_asleep(lock, cond, 1)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    _wait_until_asleep(lock, cond, 2)
    with lock:
        cond.notify()
    first.join(T)
    assert order == ["first"] and second.is_alive()
    with lock:
        cond.notify()
    second.join(T)
    assert order == ["first", "second"]


def test_notify_n_and_notify_all_wake_that_many():
    lock = threading.Lock()
    cond = Condition(lock)
    results: list[bool] = []
    threads = [_sleeper(lock, cond, results)]
    _wait_until_asleep(lock, cond, 1)
    threads += [_sleeper(lock, cond, results) for _ in range(2)]
    _wait_until_asleep(lock, cond, 3)
    with lock:
        cond.notify(2)
        assert len(cond._waiters) == 1
    threads += [_sleeper(lock, cond, results)]
    _wait_until_asleep(lock, cond, 2)
    with lock:
        cond.notify_all()
        assert not cond._waiters
    for thread in threads:
        thread.join(T)
    assert results == [True] * 4


def test_a_notify_with_nobody_waiting_is_not_kept_for_a_later_wait():
    lock = threading.Lock()
    cond = Condition(lock)
    with lock:
        cond.notify()
        cond.notify_all()
        assert cond.wait(0) is False
        assert not cond._waiters


@pytest.mark.parametrize("timeout", [0, -1, 0.01])
def test_a_wait_that_times_out_returns_false_holding_the_lock_and_leaves_no_waiter(timeout):
    lock = threading.Lock()
    cond = Condition(lock)
    with lock:
        assert cond.wait(timeout) is False
        assert lock.locked() and not cond._waiters
        assert not lock.acquire(False)  # still this thread's


class _InterruptedSleep:
    """A thread's waker whose sleep raises (a Ctrl-C raised while asleep)."""

    taken = False

    def sleep(self, timeout):
        raise KeyboardInterrupt


def test_an_interrupted_wait_leaves_holding_the_lock_with_no_waiter_left(monkeypatch):
    lock = threading.Lock()
    cond = Condition(lock)
    monkeypatch.setattr("scaproust.core.condition.thread_waker", _InterruptedSleep)
    with lock:
        with pytest.raises(KeyboardInterrupt):
            cond.wait(1.0)
        assert lock.locked() and not cond._waiters


class _InterruptedAfter:
    """A stand-in whose method ``name`` raises KeyboardInterrupt just after the real one
    ran: a Ctrl-C handled as that call in C returned."""

    def __init__(self, real, name: str) -> None:
        self._real = real
        self._name = name

    def __getattr__(self, attr: str):
        method = getattr(self._real, attr)
        if attr != self._name:
            return method

        def interrupted(*args):
            method(*args)
            raise KeyboardInterrupt
        return interrupted


@pytest.mark.parametrize("step", ["the waiter listed", "the lock let go"])
def test_a_wait_interrupted_between_its_steps_leaves_holding_the_lock_with_no_waiter(step):
    # Listed for ever, the waiter was a ghost the next notify chose instead of a sleeper;
    # with the lock let go and not taken back, the caller's `with` raised RuntimeError.
    lock = threading.Lock()
    cond = Condition(lock)
    if step == "the waiter listed":
        cond._waiters = _InterruptedAfter(cond._waiters, "append")
    else:
        cond._lock = _InterruptedAfter(lock, "release")
    with lock:
        with pytest.raises(KeyboardInterrupt):
            cond.wait(1.0)
        assert lock.locked() and not lock.acquire(False)  # held, by this thread's section
        assert not getattr(cond._waiters, "_real", cond._waiters)


def test_take_chooses_sleepers_that_stay_asleep_until_woken():
    # What Loop.notify_after_release does: choose under the lock, wake once no lock is held.
    lock = threading.Lock()
    cond = Condition(lock)
    results: list[bool] = []
    thread = _sleeper(lock, cond, results)
    _wait_until_asleep(lock, cond, 1)
    with lock:
        (chosen,) = cond.take(5)
        assert chosen.taken and not cond._waiters
    assert thread.is_alive() and not results  # nothing written to its waker yet
    wake_all([chosen])
    thread.join(T)
    assert results == [True]


def test_a_late_wake_up_makes_the_next_wait_return_early_once_and_leaves_no_waiter(cores):
    # A wake-up meant for an earlier wait of this thread (it timed out as a notify chose
    # it) ends the next wait at once: not a notify, and that wait must not stay listed,
    # where a later notify would choose it instead of a real sleeper.
    cores(1)  # a thread's own descriptor, the waker kept between sleeps
    lock = threading.Lock()
    cond = Condition(lock)
    thread_waker().wake()
    with lock:
        assert cond.wait(T) is False
        assert not cond._waiters
        assert cond.wait(0) is False  # the wake-up was used up


def test_a_waiter_chosen_as_its_wait_ends_says_it_was_notified_and_is_not_listed(monkeypatch):
    # The notify took it (under the lock) while its sleep was timing out: the wake-up
    # comes later, and the notify is not lost to a waiter that is no longer listed.
    lock = threading.Lock()
    cond = Condition(lock)

    class ChosenAsItTimesOut:
        taken = False

        def sleep(self, timeout):
            with lock:
                assert cond.take(1) == [self]
            return False

    waiter = ChosenAsItTimesOut()
    monkeypatch.setattr("scaproust.core.condition.thread_waker", lambda: waiter)
    with lock:
        assert cond.wait(0.01) is True
        assert not cond._waiters
