"""The reactor: one I/O thread per session, and the session lock that says who owns the
machines (docs/ARCHITECTURE.md, "One owner at a time").

Theory of operation
-------------------

Owners. ``lock`` (the session lock) guards every socket, pipe, machine and timer of the
loop, and every structure below but ``_posted``. The I/O thread holds it for each iteration
except inside ``select()``. A caller's thread may take it (``own``) to run
machines itself when that saves a hand-off, and ends its section with ``release()``, which
runs what the section left for the end of the batch (a pipe's write) in that thread, and
wakes the loop if it sleeps and now has work. Whoever holds the lock may use ``call_soon``,
``call_after_batch``, the timers and ``add_reader``/``add_writer``. Nobody sleeps holding it.

Wake-ups after the lock. A thread that delivers to a sleeping receiver (or gives credit to a
sleeping sender) while it owns the session does not wake it there if the sleeper shares
its core: it would find the session lock and the interpreter lock taken, and sleep again
(see reactor/waker.py). ``notify_after_release`` keeps such sleepers chosen, and the owner
wakes them as its section ends (``release``, and the I/O thread after each batch), holding
no lock then.

Other threads hand the loop work with ``call_soon_threadsafe``, which appends ``(fn, args)``
to the ``_posted`` deque and takes no lock. ``call_soon_quietly`` appends without waking
a sleeping loop, for a poster that knows the loop turns soon anyway (a timer is armed, or
it will ``nudge`` it): a burst's drain, gathered rather than woken for at its first message
(core/channel.py, "Gathering").

One iteration (``run_once``):

1. choose the select timeout: 0 if a callback is already waiting, else the caller's timeout
   capped by the earliest live timer;
2. ``select()`` once;
3. queue the callbacks of ready file objects, then the due timers (in ``(when, seq)`` order),
   then every callback posted so far;
4. run exactly the callbacks queued at that point, in the one place that calls callbacks. What
   they schedule in turn (``call_soon``, a re-post, a zero-delay timer) waits for the next
   iteration, after another ``select(0)``: a callback that keeps re-posting itself cannot
   starve I/O.

The idle flag. Waking the loop costs a syscall on each side, so a poster writes to the wake-up
socketpair only when the loop may be asleep: the architecture brief measured 0.34 µs per post
this way against 0.9 µs when waking on every post. Before it selects with a non-zero timeout
the loop sets ``_idle`` and only then looks at ``_posted`` again; a poster appends first and
only then reads ``_idle``. Under the GIL these four steps happen in some single order, and in
every order either the loop sees the new item (and selects with timeout 0) or the poster sees
``_idle`` set (and writes a byte that ends the select). A byte can also be written needlessly
(the poster read ``_idle`` just before the loop cleared it); the loop then wakes once for
nothing and drains it. See ``wakeup.py`` for the socketpair itself.

Timers live in a heap with lazy deletion (``timers.py``). The clock is injected, so tests can
advance a fake clock and call ``run_once(0)`` to fire due timers without sleeping.

Errors. An ``Exception`` from a callback or timer is logged with its traceback on the
``scaproust.reactor`` logger and the loop carries on: the I/O thread must never die from one
bad callback. A ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``) is logged too and
stops the loop after the current iteration.

Closing. ``stop()`` posts its request behind everything already posted, so work posted before
``stop()`` still runs; the loop then closes its selector and wake-up sockets. From the moment
``stop()`` is called, ``call_soon_threadsafe`` raises ``RuntimeError``: a caller waiting for a
reply gets an error rather than hanging on a callback nobody will run. The layer above checks
its own closed flag first, so this is the backstop for a post that races with a close.

Fork. The I/O thread does not exist in a child process, and the wake-up socketpair is shared
with the parent's loop, so a loop must not be used after ``os.fork()``. ``check_fork()`` raises
in the child; ``call_soon_threadsafe`` calls it.
"""

from __future__ import annotations

import logging
import os
import reprlib
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeAlias, TypeVarTuple, cast

from scaproust.reactor.timers import TimerHandle, TimerQueue
from scaproust.reactor.waker import LONGEST_SLEEP, Waker, wake_all
from scaproust.reactor.wakeup import Wakeup

__all__ = ["HasFileno", "Loop", "TimerHandle"]


class HasFileno(Protocol):
    """Something the loop's selector (or a caller's ``poll()``) can watch."""

    def fileno(self) -> int: ...


class Notifiable(Protocol):
    """A condition whose sleepers can be chosen now and woken later (core/condition.py)."""

    def take(self, n: int) -> list[Waker]: ...
    def notify(self, n: int) -> None: ...


logger = logging.getLogger("scaproust.reactor")

Ts = TypeVarTuple("Ts")
#: A queued call: a callback and its arguments (each callback takes its own, checked where
#: it is scheduled: ``call_soon(fn, *args)``).
Call: TypeAlias = "tuple[Callable[..., object], tuple[object, ...]]"

#: The longest the loop sleeps in one select(), even with nothing to wait for. An owner in a
#: caller's thread that schedules a timer wakes the sleeping loop only if the timer is due
#: before the loop wakes by itself; with this cap a REQ's 60 s resend timer, rescheduled on
#: every request, never costs a wake-up (one wasted iteration a second costs nothing).
MAX_SLEEP = 1.0

#: How many rounds of end-of-batch callbacks ``release`` runs in the owner's thread before
#: it leaves the rest to the I/O thread (a send, then an in-process delivery, take two).
RELEASE_ROUNDS = 4

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_EPOLLIN = getattr(select, "EPOLLIN", 0)
_EPOLLOUT = getattr(select, "EPOLLOUT", 0)
_EPOLLRDHUP = getattr(select, "EPOLLRDHUP", 0)

# Incremented in every child process right after os.fork(). A loop remembers the value it was
# created with; a difference means "this is a child". Comparing two ints costs ~15 ns per post,
# where calling os.getpid() cost 185 ns here (it is a real syscall since glibc 2.25): half of
# the whole 0.34 µs budget of a post. (The facade's fast paths check not even that: a fork
# hook of their own clears their flags, facade/socket.py.)
_fork_generation = 0

#: Bound once: ``own`` runs on every receive and lone send's path.
_get_ident = threading.get_ident


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):  # POSIX only, and there is no fork anywhere else
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Registration:
    """The selector's ``data`` for one file object: its reader and writer callbacks.

    Reader and writer share one selector registration; the event mask is implied by which
    callbacks are set, and the registration exists only while at least one is.
    """

    __slots__ = ("reader", "writer", "lent", "alarm")

    def __init__(self) -> None:
        self.reader: Callable[[], object] | None = None
        self.writer: Callable[[], object] | None = None
        self.lent = False  # the reader is lent to a caller's thread: the kernel is not asked
        #: Called (instead of the reader) when the selector reports a lent reader anyway.
        self.alarm: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"<_Registration reader={self.reader!r} writer={self.writer!r}>"


# Readiness is queued as these two functions rather than the callbacks themselves, so that the
# callback is looked up when it runs: a callback that removes another one of the same batch
# (a reader that closes its pipe, dropping the writer too) must prevent it from running.


def _run_reader(reg: _Registration) -> None:
    callback = reg.reader
    if callback is not None:
        if not reg.lent:
            callback()
        elif reg.alarm is not None:
            # The kernel is asked only for the peer's end of stream about a lent reader,
            # so this is that, an error or a hang-up (or a readiness selected just before
            # the loan): whoever borrowed it may not be reading (caller_reader.py, a loan
            # kept between two receives).
            reg.alarm()


def _run_writer(reg: _Registration) -> None:
    callback = reg.writer
    if callback is not None:
        callback()


def _describe(fn: Callable[..., object], args: tuple[object, ...]) -> str:
    """A callback for an error message: the user's callback rather than our trampolines, and
    the arguments shortened (they may be message bodies)."""
    if fn is _run_reader or fn is _run_writer:
        reg = cast(_Registration, args[0])
        if fn is _run_reader:
            return f"{reg.reader!r} (readable)"
        return f"{reg.writer!r} (writable)"
    return f"{fn!r}{reprlib.repr(args)}"


class Loop:
    """A selector loop run by one daemon thread.

    ``start``, ``stop``, ``in_loop_thread``, ``time``, ``check_fork``, ``owned``,
    ``own``, ``call_soon_threadsafe``, ``call_soon_quietly``, ``nudge`` and the
    ``closed``/``running`` properties
    may be used from any thread. Everything else belongs to the owner of the session lock
    (for speed, this is not checked).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, name: str = "scaproust-io"
    ) -> None:
        #: The loop's clock (``time.monotonic`` unless another was injected), the clock
        #: itself rather than a method calling it: protocols read it on the path of a
        #: message (a REQ's resend deadline), where a frame less counts.
        self.time: Callable[[], float] = clock
        self._name = name
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup()
        # Keyed by the file object itself (identity hash for sockets): cheaper than asking
        # the selector, which calls fileno() on every lookup, and still works for a socket
        # that was closed before remove_reader (its fileno() is then -1).
        self._regs: dict[HasFileno, _Registration] = {}
        self._ready: deque[Call] = deque()  # the owner only
        # Run after the current batch, before the next select (the owner only).
        self._end_of_batch: list[Call] = []
        #: True while a caller's lone send runs its protocol's event (SocketCore's
        #: _send_in_hand): a pipe with nothing queued writes its frame at once, not after
        #: the batch (the owner only).
        self.writing_at_once = False
        self._posted: deque[Call] = deque()  # any thread
        self._timers = TimerQueue()
        self._idle = False  # True while the loop may sleep in select(): posters must wake it
        # When the sleeping select() ends at the latest (MAX_SLEEP at most); an owner that
        # schedules an earlier timer wakes the loop.
        self._sleep_until = 0.0
        self._timer_wake = False  # an owner scheduled a timer due before _sleep_until
        #: The session lock: whoever holds it owns every machine, pipe, timer and queue of
        #: the loop (see "Owners" above). The loop holds it except inside select().
        # Re-entrant only so that it can say whether this thread holds it (_is_owned): own()
        # never takes it twice. See own() for why that must be known.
        self.lock = threading.RLock()
        self._owner: int | None = None  # thread id of the holder, for owned() only
        # Sleepers the owner chose to wake once it holds no lock (notify_after_release).
        self._wakes: list[Waker] = []
        #: Iterations run so far: how often the I/O thread had to work (tests, diagnostics).
        self.iterations = 0
        self._stopping = False  # run_forever returns after the current iteration
        self._closing = False  # set by stop(): posts are refused from here on
        self._closed = False
        self._running = False
        self._done = threading.Event()  # set when run_forever has returned and closed
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._pid = os.getpid()
        self._fork_generation = _fork_generation
        # Lending a reader changes the kernel's interest without touching the selector's
        # bookkeeping: one epoll_ctl, where unregister + register through selectors cost
        # about 5 µs on the path of every message a caller reads itself.
        self._epoll: select.epoll | None = None
        if isinstance(self._selector, getattr(selectors, "EpollSelector", ())):
            self._epoll = self._selector._selector  # type: ignore[attr-defined]  # private
        self.add_reader(self._wakeup.read_sock, self._wakeup.drain)

    # --- any thread -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        return self._running

    @property
    def sleeping(self) -> bool:
        """True while the loop may sleep in ``select()``, with no work in hand. Read without
        the lock by a caller's spin (core/caller_reader.py), which gives way to the loop
        once it has work: a stale answer ends that spin a poll early or late."""
        return self._idle

    def in_loop_thread(self) -> bool:
        """True in the thread executing ``run_forever`` (False when tests drive ``run_once``)."""
        return threading.get_ident() == self._thread_id

    def forked(self) -> bool:
        """True in a child process forked after the loop was made."""
        return self._fork_generation != _fork_generation

    def check_fork(self) -> None:
        """Raise ``RuntimeError`` if called in a child process forked after the loop was made."""
        if self._fork_generation != _fork_generation:
            raise RuntimeError(
                f"scaproust session used after fork: its I/O thread lives in process "
                f"{self._pid}, not in this process ({os.getpid()}); create a new session in "
                f"the child"
            )

    def start(self) -> None:
        """Run ``run_forever`` in a new daemon thread."""
        self.check_fork()
        if self._closing:
            raise RuntimeError("scaproust I/O loop is closed")
        if self._running or self._thread is not None:
            raise RuntimeError("scaproust I/O loop is already started")
        # Set before the thread exists, so that a stop() called right after start() waits for
        # the thread instead of closing the selector under it.
        self._running = True
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0, *, wait: bool = True) -> None:
        """Finish the loop and close it; idempotent.

        From another thread: the stop request is queued behind every callback already posted,
        then this waits up to ``timeout`` seconds for the loop to close and its thread to end
        (a warning is logged if it does not). From the loop thread: the loop stops after the
        current iteration. On a loop that is not running: closes it at once. With
        ``wait=False`` it only queues the stop request (a garbage collector must not block).
        """
        if self._closed:
            return
        if not self._running:
            # Never started, or driven by run_once(): no thread owns the selector.
            self._close()
            return
        self._closing = True
        if self.in_loop_thread():
            self._stopping = True
            return
        self._posted.append((self._request_stop, ()))
        if self._idle:
            self._wakeup.wakeup()
        if not wait:
            return
        if not self._done.wait(timeout):
            logger.warning(
                "scaproust I/O loop %r did not stop within %s s; a callback may be blocked",
                self._name,
                timeout,
            )
            return
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def post_if_open(self, fn: Callable[[*Ts], object], *args: *Ts) -> bool:
        """``call_soon_threadsafe``, or nothing (False) once the loop is closed or in a
        forked child: for a way out of an interrupt, which must not raise anew."""
        try:
            self.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    def call_soon_threadsafe(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Run ``fn(*args)`` on the loop thread, after everything posted before it.

        Raises ``RuntimeError`` once ``stop()`` has been called, or in a forked child.
        """
        # Append first, read _idle second; run_once does the mirror image (set _idle, then
        # look at _posted). Under the GIL one of the two always sees the other's write, so a
        # post is never left waiting in a sleeping loop, and a busy loop costs no syscall.
        self.call_soon_quietly(fn, *args)
        if self._idle:
            self._wakeup.wakeup()

    def call_soon_quietly(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """``call_soon_threadsafe`` without the wake-up: ``fn`` runs at the loop's next
        turn, which a sleeping loop takes only when a timer is due, another post wakes it
        or someone calls ``nudge``. The caller must know one of them is coming."""
        if self._fork_generation != _fork_generation:
            self.check_fork()
        if self._closing:
            raise RuntimeError("scaproust I/O loop is closed")
        self._posted.append((fn, args))

    def nudge(self) -> None:
        """Wake the loop if it sleeps, for what ``call_soon_quietly`` left it."""
        if self._idle:
            self._wakeup.wakeup()

    # --- owners ----------------------------------------------------------------------------

    def owned(self) -> bool:
        """True in the thread that holds the session lock right now."""
        return self._owner == _get_ident()

    def own(self, timeout: float | None) -> bool:
        """Take the session lock, waiting up to ``timeout`` seconds (0: not at all; None: as
        long as the current owner keeps it, which is never long: nobody sleeps holding it).
        False on timeout, if this thread owns it already, or if the loop is closed or was
        forked."""
        me = _get_ident()
        if self._owner == me or self._closed or self._fork_generation != _fork_generation:
            return False
        lock = self.lock
        try:
            # Its steps inline, no call between them (a receive that reads for itself owns
            # the session twice, a lone send once, each right after a wake-up, where a call
            # costs most).
            # No min(): a lone send's own() is on the path to its write, and a builtin's
            # call costs there (see LONGEST_SLEEP for the cap).
            if not (lock.acquire() if timeout is None
                    else lock.acquire(True, (timeout if timeout <= LONGEST_SLEEP else LONGEST_SLEEP)
                                      if timeout > 0 else 0.0)):
                return False
            if self._closed:  # closed while we waited for the lock
                lock.release()
                return False
            self._owner = me
            return True
        except BaseException:
            # A Ctrl-C in the main thread raises where Python next checks for signals:
            # inside the wait (the lock not taken), or just after acquire() returned (taken,
            # nobody recorded as its owner). Held for ever, it would hang every thread of
            # the session, its close included; only the lock itself can tell which it was.
            if lock._is_owned():  # type: ignore[attr-defined]  # _thread.RLock's own test
                self._owner = None
                lock.release()
            raise

    def release(self, *, flush: bool = True) -> None:
        """End an owner section taken with ``own``.

        With ``flush``, what the section left for the end of the batch runs here, in the
        owner's thread: the pipes' flushes, which write what a caller's send queued (a
        lone send's frame went to the kernel already, as its pipe queued it: see
        ``writing_at_once``) and tell the machines the pipes have room again. Without
        it, the I/O thread runs it. Either way the I/O thread is woken if it sleeps and now
        has something to do: callbacks, or a timer due before it meant to wake; and the
        sleepers the section chose are woken once the lock is released
        (``notify_after_release``). The I/O thread ends each batch here too, without
        ``flush`` (it ran the batch's end itself).
        """
        try:
            if flush and self._end_of_batch:
                self.run_end_of_batch()
        finally:
            # Also after an interrupt in a callback of the batch's end: the callbacks it
            # did not reach are queued again (run_end_of_batch), for the I/O thread now.
            # No call before the lock goes (an interrupt lands just after one returns,
            # and would skip the release): truth tests only, no bool().
            wake = self._idle and (self._ready or self._end_of_batch or self._timer_wake)
            self._timer_wake = False
            # Inline, no call: every lone send and every receive that read for itself
            # ends here. The sleepers are taken before the lock goes: the next owner's go
            # into a new list.
            wakes = self._wakes
            if wakes:
                self._wakes = []
            self._owner = None
            self.lock.release()
            if wakes:
                try:
                    wake_all(wakes)
                except BaseException:
                    # A Ctrl-C as wake_all was called, before its own guard: none woken.
                    # (One inside it woke them all; a wake-up too many is harmless.)
                    wake_all(wakes)
                    raise
            if wake:
                self._wakeup.wakeup()

    def release_interrupted(self) -> None:
        """End the section this thread still holds after an interrupt raised out of
        ``release``: a Ctrl-C lands where Python next looks for signals, and entering a
        function is such a place, so ``release`` may not have begun (held for ever, the
        lock would hang the I/O thread and every close). Each ``release`` in a caller's
        thread is guarded so: ``try: release() except BaseException:
        release_interrupted(); raise``. What the section left for the end of the batch
        goes to the I/O thread. Nothing if ``release`` got as far as letting the lock go
        (then this thread is no longer the owner)."""
        if self._owner == _get_ident():
            self.release(flush=False)

    def notify_after_release(self, cond: Notifiable, n: int) -> None:
        """Wake up to ``n`` of ``cond``'s sleepers (its lock held): those that sleep on a
        descriptor (on one core, ``Waker.defer``) once this thread's owner section ends
        if it owns the session, the others now (reactor/waker.py says why)."""
        if self._owner != _get_ident():
            cond.notify(n)
            return
        for waker in cond.take(n):
            if waker.defer:
                self._wakes.append(waker)
            else:
                waker.wake()

    def run_end_of_batch(self) -> None:
        """Run, now, in an owner's thread, what the section left for the end of the batch
        (``call_after_batch``): its pipes' flushes. ``release`` does it; a caller's send calls
        it first, so that the flush (and an in-process delivery) comes before the send's
        bookkeeping.

        What those callbacks leave for the end of the batch runs here too, a few rounds
        deep: an in-process send's flush leaves the receiving pipe's read, and the whole
        delivery then happens in this thread. As ``_call``: an ``Exception`` is logged (it
        is a bug of ours, not the caller's), a ``BaseException`` such as
        ``KeyboardInterrupt`` reaches the caller, and never stops the loop. The interrupted
        callback and those after it are queued again, first: each is a pipe's flush or
        read, or a pause, marked scheduled until it runs, and dropped, it would never be
        scheduled again (its pipe would stop writing, or reading). The interrupted one
        again too: the interrupt may have come as it was called, before any of it ran
        (each is idempotent: a flush or a read finds nothing, a pause finds the pipes
        paused)."""
        rounds = RELEASE_ROUNDS
        while rounds and self._end_of_batch:
            rounds -= 1
            batch, self._end_of_batch = self._end_of_batch, []
            started = 0
            try:
                for fn, args in batch:
                    started += 1
                    try:  # inline, not a call per callback: a direct send's path to the kernel
                        fn(*args)
                    except Exception:
                        logger.exception("exception in callback %s", _describe(fn, args))
            except BaseException:
                self._end_of_batch[:0] = batch[started - 1:]
                raise

    # --- loop thread ------------------------------------------------------------------------

    def call_soon(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Run ``fn(*args)`` in the next iteration (the owner of the session lock only)."""
        self._ready.append((fn, args))

    def call_after_batch(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Run ``fn(*args)`` once the callbacks of this iteration are done, before the loop
        selects again (the owner only; an owner in a caller's thread runs them in ``release``).

        Pipes flush their output this way: every frame queued while handling one batch of
        readiness and posts leaves in one write, and none waits for another select.
        What these callbacks schedule in turn runs in the next iteration.
        """
        self._end_of_batch.append((fn, args))

    def call_later(self, delay: float, fn: Callable[[*Ts], object],
                   *args: *Ts) -> TimerHandle:
        """Run ``fn(*args)`` once ``delay`` seconds of the loop's clock have passed."""
        return self.call_at(self.time() + delay, fn, *args)

    def call_at(self, when: float, fn: Callable[[*Ts], object],
                *args: *Ts) -> TimerHandle:
        """Run ``fn(*args)`` once the loop's clock reaches ``when``; same-time timers run in
        the order they were scheduled."""
        if self._idle and when < self._sleep_until:
            self._timer_wake = True  # an owner in another thread: release() wakes the loop
        return self._timers.push(when, fn, args)

    def add_reader(self, fileobj: HasFileno, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fileobj`` is readable; replaces a previous reader.

        Remove it with the same object (not its fd) that was added.
        """
        reg = self._regs.get(fileobj)
        if reg is None:
            reg = _Registration()
            self._selector.register(fileobj, _READ, reg)
            self._regs[fileobj] = reg
        elif reg.reader is None:
            # A writer is registered: widen the mask of the existing registration.
            self._selector.modify(fileobj, _READ | _WRITE, reg)
        reg.reader = callback
        if reg.lent:
            # A new reader replaces a lent one: the kernel is asked about it again (the
            # selector, which never knew of the loan, has nothing to change).
            reg.lent = False
            reg.alarm = None
            self._ask_kernel(fileobj, reg)

    def remove_reader(self, fileobj: HasFileno) -> bool:
        """Stop watching ``fileobj`` for reading; False if no reader was registered."""
        reg = self._regs.get(fileobj)
        if reg is None or reg.reader is None:
            return False
        if reg.writer is None:
            del self._regs[fileobj]
            self._selector.unregister(fileobj)
        else:
            self._selector.modify(fileobj, _WRITE, reg)
        reg.reader = None
        reg.lent = False
        reg.alarm = None
        return True

    def lend_reader(self, fileobj: HasFileno,
                    alarm: Callable[[], object] | None = None) -> bool:
        """Stop watching ``fileobj`` for reading while a caller's thread polls and reads it
        itself (core/caller_reader.py); the registration stays, so ``return_reader`` is
        cheap. False if it has no reader, is lent already, or the selector is not epoll
        (the caller then waits for the loop instead). ``alarm`` is called, in the loop's
        thread, if the kernel reports an error, a hang-up or the peer's end of the stream
        (EPOLLRDHUP, asked for only with an alarm) on it meanwhile: whoever borrowed it may
        not be reading it just then (a loan kept between two receives)."""
        reg = self._regs.get(fileobj)
        if reg is None or reg.reader is None or reg.lent or self._epoll is None:
            return False
        reg.lent = True
        reg.alarm = alarm
        self._ask_kernel(fileobj, reg)
        return True

    def return_reader(self, fileobj: HasFileno) -> None:
        """Watch a lent reader again (nothing if it was removed meanwhile)."""
        reg = self._regs.get(fileobj)
        if reg is not None and reg.lent:
            # The kernel first: interrupted (a Ctrl-C) before it, the reader is still lent
            # as far as anyone can tell, and given back again (Lender.give_back).
            self._ask_kernel(fileobj, reg, lent=False)
            reg.lent = False
            reg.alarm = None

    def _ask_kernel(self, fileobj: HasFileno, reg: _Registration,
                    lent: bool | None = None) -> None:
        # The interest the kernel must have, whatever the selector thinks: a lent reader
        # is not asked for its data, only, with an alarm, for the peer's end of stream
        # (an error or hang-up is reported anyway; _run_reader calls the alarm, or skips
        # it without one: the caller polling the stream sees it too and acts on it).
        # ``lent``: the registration's state about to be, if not its present one.
        lent = reg.lent if lent is None else lent
        if lent:
            mask = _EPOLLRDHUP if reg.alarm is not None else 0
        else:
            mask = 0 if reg.reader is None else _EPOLLIN
        if reg.writer is not None:
            mask |= _EPOLLOUT
        assert self._epoll is not None  # only lent readers are asked about, and only with epoll
        self._epoll.modify(fileobj.fileno(), mask)

    def add_writer(self, fileobj: HasFileno, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fileobj`` is writable; replaces a previous writer.

        Meant to be called when output becomes pending and undone with ``remove_writer`` when
        it drains; re-adding while registered touches no syscall.
        """
        reg = self._regs.get(fileobj)
        if reg is None:
            reg = _Registration()
            self._selector.register(fileobj, _WRITE, reg)
            self._regs[fileobj] = reg
        elif reg.writer is None:
            self._selector.modify(fileobj, _READ | _WRITE, reg)
        reg.writer = callback
        if reg.lent:
            self._ask_kernel(fileobj, reg)

    def remove_writer(self, fileobj: HasFileno) -> bool:
        """Stop watching ``fileobj`` for writing; False if no writer was registered."""
        reg = self._regs.get(fileobj)
        if reg is None or reg.writer is None:
            return False
        if reg.reader is None:
            del self._regs[fileobj]
            self._selector.unregister(fileobj)
        else:
            self._selector.modify(fileobj, _READ, reg)
        reg.writer = None
        if reg.lent:
            self._ask_kernel(fileobj, reg)
        return True

    # --- the loop itself --------------------------------------------------------------------

    def run_forever(self) -> None:
        """Run iterations until stopped, then close the loop. ``start()`` runs this in a
        thread; it may also be called directly, in which case that thread is the loop's."""
        self.check_fork()
        if self._closing:
            raise RuntimeError("scaproust I/O loop is closed")
        if self._running:
            raise RuntimeError("scaproust I/O loop is already running")
        self._running = True
        self._run()

    def run_once(self, timeout: float | None) -> None:
        """One iteration: select once (for at most ``timeout`` seconds, None meaning no limit,
        and less if a timer or a callback is due), then run what is ready.

        The session lock is held for everything but the ``select()`` itself, so a caller's
        thread may own the machines while the loop sleeps (see "Owners" above).
        """
        if self._closed:
            raise RuntimeError("scaproust I/O loop is closed")
        lock = self.lock
        me = threading.get_ident()
        lock.acquire()
        try:
            self._owner = me
            timeout = self._select_timeout(timeout)
        finally:
            self._owner = None  # nothing here chooses a sleeper to wake (see release)
            lock.release()
        try:
            events = self._selector.select(timeout)
        finally:
            lock.acquire()
            self._owner = me
            self._idle = False
        try:
            self._run_batch(events)
        finally:
            self.release(flush=False)  # and wake the sleepers the batch chose

    def _select_timeout(self, timeout: float | None) -> float | None:
        """How long the next select() may sleep; sets ``_idle`` when it may sleep at all."""
        if self._ready or self._end_of_batch:
            return 0
        # Publish _idle before looking at _posted: see call_soon_threadsafe.
        self._idle = True
        if self._posted:
            timeout = 0
        else:
            when = self._timers.next_when()
            if when is not None:
                delay = when - self.time()
                if delay < 0:
                    delay = 0
                if timeout is None or delay < timeout:
                    timeout = delay
        if timeout is None or timeout > MAX_SLEEP:
            timeout = MAX_SLEEP
        self._sleep_until = self.time() + timeout
        return timeout

    def _run_batch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        self.iterations += 1
        ready = self._ready
        for key, mask in events:
            reg = key.data
            if mask & _READ:
                ready.append((_run_reader, (reg,)))
            if mask & _WRITE:
                ready.append((_run_writer, (reg,)))
        timers = self._timers
        if timers:
            timers.pop_due(self.time(), ready)
        # Take only what was posted up to now; later posts wait for the next iteration.
        posted = self._posted
        for _ in range(len(posted)):
            ready.append(posted.popleft())

        for _ in range(len(ready)):
            self._call(*ready.popleft())
        if self._end_of_batch:
            batch, self._end_of_batch = self._end_of_batch, []
            for fn, args in batch:
                self._call(fn, args)

    def _call(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        """The one place that calls callbacks."""
        try:
            fn(*args)
        except Exception:
            logger.exception("exception in callback %s", _describe(fn, args))
        except BaseException as exc:
            logger.exception(
                "%s in callback %s: stopping the I/O loop",
                type(exc).__name__,
                _describe(fn, args),
            )
            self._closing = True
            self._stopping = True

    # --- internals --------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self._run()
        except BaseException:
            # Only a fault of the loop itself gets here (callbacks are guarded); log it rather
            # than let threading's excepthook print it without context.
            logger.critical("scaproust I/O loop %r crashed", self._name, exc_info=True)

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                self.run_once(None)
        finally:
            self._thread_id = None
            self._close()
            self._running = False
            self._done.set()

    def _request_stop(self) -> None:
        self._stopping = True

    def _close(self) -> None:
        if self._closed:
            return
        # Under the session lock: an owner in a caller's thread may be using the selector.
        mine = self.owned()
        if not mine:
            self.lock.acquire()
        try:
            self._close_locked()
        finally:
            if not mine:
                self.lock.release()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._closed = True
        self._idle = False
        # Whatever is still queued was posted after the stop request (or raced with it) or was
        # scheduled by the last iteration; there is no loop left to run it.
        dropped = len(self._ready) + len(self._posted)
        if dropped:
            logger.debug(
                "scaproust I/O loop %r closed with %d callbacks unrun", self._name, dropped
            )
        self._ready.clear()
        self._posted.clear()
        self._end_of_batch.clear()
        self._timers.clear()
        self._regs.clear()
        self._selector.close()
        self._wakeup.close()
