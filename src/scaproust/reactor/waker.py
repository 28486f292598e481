"""How a thread sleeping on a condition is woken: on one core, through a file descriptor
of its own, which the waker writes to once it holds no lock; otherwise through a lock.

Releasing a lock wakes its sleeper while the notifier still holds the interpreter lock
(GIL). On a shared core the woken thread preempts the notifier, finds the GIL taken and
sleeps again; the notifier runs on to its own wait, and only then can the woken thread run:
three context switches where one would do. A write to a descriptor (``os.eventfd_write``,
or a pipe where Linux's eventfd is missing) releases the GIL for its system call: the woken
thread takes the GIL at once and runs, and the notifier, preempted in that call, goes on
once that thread sleeps. The notifier must also hold no other lock the woken thread will
want (the channel's, the session's): ``Loop.notify_after_release`` wakes such a sleeper
(``defer``) after the owner's section for that.

A thread that may run on other cores than its waker gains nothing from this: woken on
another core, it takes longer to start than the waker needs to finish, and the lock's
wake-up, at once, starts it soonest (the descriptor's, after the section, cost such round
trips about 4 µs). So a thread sleeps on its descriptor only while it runs on one core,
which it looks at every ``CORES_RECHECK`` seconds (``thread_waker``). Measured numbers:
docs/ARCHITECTURE.md, "One owner at a time" (its paragraph *Waking a sleeper*).

A thread keeps one descriptor waker for its whole life, closed when the thread ends. A
wake-up that comes after the sleep it was meant for ended (the sleep timed out, or was
interrupted, as a notify chose it) makes that thread's next sleep on it return at once,
once: its callers wait in a loop on their predicate.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

#: No one sleep of a caller's thread lasts longer, whatever timeout the user set: each
#: sleeps in a loop that looks at its own deadline, and a longer sleep overflowed the
#: kernel's limit (poll()'s 2**31 - 1 ms, 24.8 days) or the lock's (``TIMEOUT_MAX``) and
#: raised OverflowError out of recv(), send() and sp.poll() given a month or more.
LONGEST_SLEEP = 86400.0


def _poll_ms(timeout: float) -> float:
    """``timeout`` seconds as poll()'s milliseconds (poll rounds a fraction up: never
    early), at most ``LONGEST_SLEEP``'s."""
    if timeout > LONGEST_SLEEP:
        timeout = LONGEST_SLEEP
    return timeout * 1000.0 if timeout > 0 else 0


class _Waker:
    """What a sleeper of ``Condition`` sleeps on: ``sleep`` until ``wake``."""

    __slots__ = ("taken",)

    #: Whether an owner of the session wakes it only once its section ends
    #: (``Loop.notify_after_release``), or at once.
    defer = False

    def __init__(self) -> None:
        #: Set by ``Condition.take`` (under the condition's lock): a notify chose this
        #: sleeper, and will wake it.
        self.taken = False

    def sleep(self, timeout: float | None) -> bool:
        """Sleep until woken, or ``timeout`` seconds (None: no limit; 0: not at all);
        whether it was woken. The interpreter lock is released meanwhile."""
        raise NotImplementedError

    def wake(self) -> None:
        raise NotImplementedError


class _FdWaker(_Waker):
    """A thread's wake-up: a descriptor that ``wake`` makes readable and ``sleep`` reads.
    Made by ``open()`` once its descriptors are: a constructor that failed half way would
    leave a half-made object to close them."""

    __slots__ = ("read_fd", "_poller")

    defer = True

    def __init__(self, read_fd: int) -> None:
        super().__init__()
        self.read_fd = read_fd
        self._poller: select.poll | None = None

    def sleep(self, timeout: float | None) -> bool:
        # Every wake-up written so far is read: together they make one early return at most.
        if timeout is not None:
            poller = self._poller
            if poller is None:
                poller = self._poller = select.poll()
                poller.register(self.read_fd, select.POLLIN)
            if not poller.poll(_poll_ms(timeout)):
                return False
        self._read()  # blocking, and only this thread reads it
        return True

    def _read(self) -> None:
        raise NotImplementedError


class _EventfdWaker(_FdWaker):
    """A Linux eventfd: ``wake`` adds one to its count, ``sleep`` reads it back to 0."""

    __slots__ = ()

    @classmethod
    def open(cls) -> _EventfdWaker:
        return cls(os.eventfd(0, os.EFD_CLOEXEC))

    def _read(self) -> None:
        os.eventfd_read(self.read_fd)

    def wake(self) -> None:
        os.eventfd_write(self.read_fd, 1)

    def __del__(self) -> None:
        os.close(self.read_fd)


class _PipeWaker(_FdWaker):
    """Where there is no eventfd: a pipe, one byte a wake-up."""

    __slots__ = ("_write_fd",)

    def __init__(self, read_fd: int, write_fd: int) -> None:
        super().__init__(read_fd)
        self._write_fd = write_fd

    @classmethod
    def open(cls) -> _PipeWaker:
        waker = cls(*os.pipe())
        os.set_blocking(waker._write_fd, False)  # a full pipe wakes its sleeper already
        return waker

    def _read(self) -> None:
        os.read(self.read_fd, 64)  # every wake-up written so far, one byte each

    def wake(self) -> None:
        try:
            os.write(self._write_fd, b"\x01")
        except BlockingIOError:
            pass  # full: its sleeper wakes already

    def __del__(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


class _LockWaker(_Waker):
    """One sleep's wake-up on a lock its waker releases, ``threading.Condition``'s way:
    for a thread that may run on other cores than its wakers, and when the process is out
    of descriptors. Made for one sleep only: a wake-up that comes after that sleep ended
    finds a lock nobody waits on any more."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lock.acquire()

    def sleep(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        if timeout > LONGEST_SLEEP:
            timeout = LONGEST_SLEEP
        return self._lock.acquire(True, timeout) if timeout > 0 else self._lock.acquire(False)

    def wake(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            pass  # woken already


#: A thread's wake-up (for annotations).
Waker: TypeAlias = _Waker
#: How often a thread looks again at how many cores it may run on (its affinity can change).
CORES_RECHECK = 1.0
_monotonic = time.monotonic
_new_waker: Callable[[], _FdWaker] = (
    _EventfdWaker.open if hasattr(os, "eventfd") else _PipeWaker.open)

_local = threading.local()


def _on_one_core() -> bool:
    """Whether this thread may run on one CPU only (pinned, or a one-CPU machine). 0.3 µs."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) == 1
    return os.cpu_count() == 1


def thread_waker() -> Waker:
    """What this thread's next sleep waits on: its own descriptor (made on its first sleep,
    closed when the thread ends) while it runs on one core; otherwise a lock of this
    sleep's own, also when the process is out of descriptors (the next sleep tries again).
    The core count is looked at again every ``CORES_RECHECK`` seconds."""
    # ``local.waker``: the thread's descriptor, once made (kept for its life); ``local.use``:
    # what the sleeps until ``local.until`` wait on, that descriptor or None for a lock each.
    local = _local
    try:
        if _monotonic() < local.until:
            return local.use or _LockWaker()
    except AttributeError:
        local.waker = None
    return _look_again(local)


def _look_again(local: threading.local) -> Waker:
    local.until = _monotonic() + CORES_RECHECK
    local.use = None
    if not _on_one_core():
        # Its wakers may run on another core: woken there at once, the way a lock wakes,
        # it is on its way while they finish (see Loop.notify_after_release).
        return _LockWaker()
    if local.waker is None:
        try:
            local.waker = _new_waker()
        except OSError:  # EMFILE, ENFILE: a receive must not fail for it
            local.until = 0.0
            return _LockWaker()
    local.use = local.waker
    return local.use  # type: ignore[no-any-return]


def _forget_wakers() -> None:
    # A forked child shares its parent's descriptors: a wake-up of one would reach the
    # other's sleeper. The child's thread makes its own on its first sleep.
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_forget_wakers)


def wake_all(wakers: list[Waker]) -> None:
    """Wake ``wakers``, every one even if interrupted: a sleeper left unwoken could sleep
    for ever, and a wake-up too many is harmless."""
    try:
        for waker in wakers:
            waker.wake()
    except BaseException:
        for waker in wakers:
            waker.wake()
        raise
