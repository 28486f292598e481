"""The channel's condition variable: threading.Condition's wait and notify, for a caller that
holds the lock (core/condition.py)."""

from __future__ import annotations

import threading
import time

import pytest

from scaproust.core.condition import Condition

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


def test_an_interrupted_wait_leaves_holding_the_lock_with_no_waiter_left(monkeypatch):
    # A Ctrl-C raised while asleep (stood in for by the waiter lock's acquire raising).
    lock = threading.Lock()
    cond = Condition(lock)

    class Interrupting:
        def __init__(self):
            self.real = threading.Lock()

        def acquire(self, *args):
            if args:
                raise KeyboardInterrupt
            return self.real.acquire()

        def release(self):
            self.real.release()

    monkeypatch.setattr("scaproust.core.condition.allocate_lock", Interrupting)
    with lock:
        with pytest.raises(KeyboardInterrupt):
            cond.wait(1.0)
        assert lock.locked() and not cond._waiters
