"""A thread's wake-up (reactor/waker.py): a descriptor written by whoever wakes it, read by
its sleep; both kinds (eventfd, and the pipe used where there is none) behave alike."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from scaproust.reactor import waker as waker_module
from scaproust.reactor.waker import (
    _EventfdWaker,
    _LockWaker,
    _PipeWaker,
    thread_waker,
    wake_all,
)

T = 5.0  # bound of every sleep that a wake-up must end

#: How each kind of waker is made; the lock is a sleep's own, where descriptors ran out.
FD_KINDS = [pytest.param(_PipeWaker.open, id="pipe")]
if hasattr(os, "eventfd"):
    FD_KINDS.insert(0, pytest.param(_EventfdWaker.open, id="eventfd"))
KINDS = [*FD_KINDS, pytest.param(_LockWaker, id="lock")]


@pytest.fixture(params=KINDS)
def waker(request):
    return request.param()


def test_a_sleep_with_nothing_written_ends_at_its_timeout_and_says_so(waker):
    assert waker.sleep(0) is False
    start = time.monotonic()
    assert waker.sleep(0.02) is False
    assert time.monotonic() - start >= 0.02  # poll's milliseconds round up: never early


def test_a_wake_up_written_before_the_sleep_ends_it_at_once(waker):
    waker.wake()
    assert waker.sleep(None) is True


def test_every_wake_up_written_so_far_makes_one_early_return_only(waker):
    # A wake-up meant for a wait that ended already (timed out as a notify chose it) makes
    # the next sleep return early, once: its caller looks at its predicate and sleeps on.
    for _ in range(3):
        waker.wake()
    assert waker.sleep(T) is True
    assert waker.sleep(0) is False


def test_a_wake_up_from_another_thread_ends_a_sleep_with_no_limit(waker):
    results = []
    sleeper = threading.Thread(target=lambda: results.append(waker.sleep(None)))
    sleeper.start()
    waker.wake()
    sleeper.join(T)
    assert results == [True]


def test_a_pipe_waker_whose_pipe_is_full_wakes_without_blocking_the_waker():
    waker = _PipeWaker.open()
    try:
        while True:
            os.write(waker._write_fd, b"\x01" * 4096)
    except BlockingIOError:
        pass
    waker.wake()  # would block: dropped, the sleeper has its wake-up already
    assert waker.sleep(0) is True


def test_each_thread_has_its_own_waker_kept_for_its_life_and_dropped_when_it_ends(cores):
    cores(1)
    mine = thread_waker()
    assert thread_waker() is mine
    theirs: list = []
    thread = threading.Thread(target=lambda: theirs.append(thread_waker()))
    thread.start()
    thread.join(T)
    assert theirs[0] is not mine
    # The thread is gone and its locals with it: this list holds the last reference.
    references = sys.getrefcount(theirs[0])
    assert references == 2  # the list's, and getrefcount's argument


@pytest.mark.parametrize("kind", FD_KINDS)
def test_a_waker_closes_its_descriptors_when_dropped(kind):
    waker = kind()
    fds = [waker.read_fd] + ([waker._write_fd] if isinstance(waker, _PipeWaker) else [])
    for fd in fds:
        os.fstat(fd)  # open
    del waker
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_forked_child_gets_wakers_of_its_own(cores):
    # The child inherits the parent's descriptors: a wake-up written to its copy of the
    # parent's waker would end the parent's sleep. The child makes its own instead.
    cores(1)
    mine = thread_waker()
    pid = os.fork()
    if pid == 0:  # the child: exits without running the rest of the test suite
        status = 1
        try:
            child = thread_waker()
            child.wake()
            status = 0 if child is not mine and child.sleep(0) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert mine.sleep(0) is False  # the child's wake-up stayed in the child


class _Recording:
    def __init__(self, fail_once: bool = False) -> None:
        self.woken = 0
        self.fail_once = fail_once

    def wake(self) -> None:
        self.woken += 1
        if self.fail_once:
            self.fail_once = False
            raise KeyboardInterrupt


def test_wake_all_wakes_every_one_even_when_interrupted_and_reraises():
    wakers = [_Recording(), _Recording(fail_once=True), _Recording()]
    with pytest.raises(KeyboardInterrupt):
        wake_all(wakers)  # type: ignore[arg-type]
    # Whoever was woken may be woken twice (harmless: an early return); nobody is left.
    assert [w.woken >= 1 for w in wakers] == [True, True, True]


def test_the_waker_kind_is_eventfd_where_linux_has_it():
    kind = _EventfdWaker if hasattr(os, "eventfd") else _PipeWaker
    assert waker_module._new_waker == kind.open


def test_out_of_descriptors_a_sleep_gets_a_lock_of_its_own_and_the_next_tries_again(
        monkeypatch, cores):
    # A receive must not fail for want of a descriptor (as the caller reader's wake-up):
    # that sleep is woken through a lock, and a later one makes the thread's waker.
    def out_of_descriptors():
        raise OSError(24, "Too many open files")

    results: list = []
    cores(1)
    new_waker = waker_module._new_waker

    def first_sleeps():
        monkeypatch.setattr(waker_module, "_new_waker", out_of_descriptors)
        one, two = thread_waker(), thread_waker()
        results.extend([type(one), one is two])
        monkeypatch.setattr(waker_module, "_new_waker", new_waker)
        results.append(type(thread_waker()))

    thread = threading.Thread(target=first_sleeps)
    thread.start()
    thread.join(T)
    assert results == [_LockWaker, False, waker_module._new_waker.__self__]


def test_on_more_cores_each_sleep_gets_a_lock_of_its_own_woken_at_once(cores):
    # Its wakers may run on another core, where a lock's wake-up starts it soonest: no
    # descriptor is made, and an owner wakes it at once (defer is False).
    cores(2)
    one, two = thread_waker(), thread_waker()
    assert type(one) is _LockWaker and one is not two
    assert not one.defer
    assert waker_module._local.waker is None


def test_the_cores_are_looked_at_again_after_the_recheck_interval(cores, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(waker_module, "_monotonic", lambda: now[0])
    cores(1)
    fd_waker = thread_waker()
    assert fd_waker.defer
    monkeypatch.setattr(waker_module, "_on_one_core", lambda: False)  # pinned no more
    assert thread_waker() is fd_waker  # within the interval: not looked at
    now[0] += waker_module.CORES_RECHECK
    first, second = thread_waker(), thread_waker()  # the look, then a sleep it covers
    assert type(first) is _LockWaker and type(second) is _LockWaker and first is not second
    monkeypatch.setattr(waker_module, "_on_one_core", lambda: True)
    now[0] += waker_module.CORES_RECHECK
    assert thread_waker() is fd_waker  # kept for the thread's life meanwhile
