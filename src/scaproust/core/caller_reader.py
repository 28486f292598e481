"""Reading a socket's pipes in the thread of the caller who waits for a message.

Theory of operation
-------------------
Handing a message from the I/O thread to a caller blocked in ``recv()`` costs a cross-thread
wake-up (about 35 µs across cores here, more than all of our own work on a message). So a
caller whose ``recv()`` finds the receive queue empty reads the socket's pipes itself:

1. it takes the session lock (``loop.own``) and *lends* the readers of the socket's active
   pipes: the loop stops watching them (``Pipe.lender``);
2. it sleeps in ``poll()`` on those streams and on the channel's own wake-up socket,
   without the lock, so the I/O thread and other callers go on meanwhile;
3. it takes the lock again and reads the streams that became readable; the frames go
   through the pipe and protocol machines and land in the receive queue as if the I/O
   thread had read them. Until a message lands (a large one takes many reads) it polls
   and reads again, the pipes still lent.

Whoever delivers a message to the queue or closes the channel while a caller sleeps here
writes to the wake-up (``Channel.begin_reading``), so a message from a pipe that is not
lent, a close, or a lent pipe dying (``Pipe.release``) ends the sleep at once.

The readers go back to the loop as soon as the wait ends, so that between two waits the
loop reads as before: a peer that closes, a message for a poller, a full queue are all
noticed at once. (Keeping them lent a little longer saved two selector changes per message,
about 3 µs, but a peer's close went unnoticed meanwhile: a PAIR then kept a dead peer and
refused the next one.)

An asyncio task awaiting ``arecv()`` borrows the pipes the same way, for its event loop:
the event loop watches the lent streams (``add_reader``) and reads them in its own thread
(``lend_to_event_loop``, ``end_loan``).

Only sockets with at most ``LEND_MAX`` pipes are read this way: ``poll()`` costs grow with
the number of streams where the loop's epoll does not, and a socket with many peers is a
server whose throughput comes from the loop's batching anyway.

Fields (guarded by the session lock): ``busy`` (a caller is between lending and giving
back; at most one at a time, the others wait on the channel for what it delivers),
``wakeup`` (made on first use, closed with the socket) and ``waited`` (read and cleared by
the socket's next send; a caller that waits on the channel instead, its pipes not lendable,
sets it too, without the lock: it is a hint, and a lost or extra set only changes which
thread writes that send). ``_poller`` is used only by the busy caller, without the lock.
"""

from __future__ import annotations

import functools
import select
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, TypeAlias

from scaproust.reactor.wakeup import Wakeup

if TYPE_CHECKING:
    import asyncio

    from scaproust.core.channel import Channel
    from scaproust.core.interfaces import Lender, LendingPipe
    from scaproust.reactor.loop import HasFileno, Loop

#: A loan to an asyncio event loop: each lent pipe's lender and the fd it watches.
Loan: TypeAlias = "list[tuple[Lender, int]]"

#: A socket with more pipes than this is read by the I/O thread only.
LEND_MAX = 8
#: How long an asyncio event loop waits for the session lock to borrow the pipes before
#: it lets the I/O thread read them as usual (an event loop must not block).
EVENT_LOOP_OWN_WAIT = 0.0005


class CallerReader:
    """The caller-side reading of one socket (see the module's docstring)."""

    def __init__(self, loop: Loop, channel: Channel,
                 pipes_of_socket: Callable[[], Collection[LendingPipe]]) -> None:
        self.loop = loop
        self.channel = channel
        self._pipes = pipes_of_socket
        self.busy = False
        self.wakeup: Wakeup | None = None
        self.closed = False
        #: A caller slept here since the socket's last send: its next send answers or
        #: follows a message, and writes at once (SocketCore._wake).
        self.waited = False
        self._poller = _Poller()  # used by the one busy caller at a time

    def wait(self, deadline: float | None) -> bool:
        """Read the socket's pipes here until a message, ``deadline`` (monotonic), a close
        or a wake-up: True. False, at once, if this thread cannot (another one reads, the
        socket has no pipe to lend or too many, this thread owns the session already, the
        session is closing): the caller then waits on the channel instead."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready: set[HasFileno] = set()
        wakeup: Wakeup | None = None
        lent = self._borrow(timeout)
        if lent is None:
            return False
        # The pipes are lent and this reader is busy: from the next line on, whatever
        # happens (a Ctrl-C may raise between any two calls of the main thread), the
        # finally below gives them back and lets the session go, owned or not.
        try:
            if self.wakeup is None:
                self.wakeup = _new_wakeup()
            wakeup = self.wakeup
            sleep = wakeup is not None and self.channel.begin_reading(wakeup)
            self.loop.release()
            if not sleep or wakeup is None:
                # Something was delivered meanwhile, a close, or no wake-up to sleep on.
                return wakeup is not None
            ready = self._read_until_delivered(lent, wakeup, deadline)
            return True
        finally:
            self.channel.end_reading()
            try:
                if wakeup is not None and wakeup in ready:
                    # While still busy: once _end clears it, a close may close the wake-up
                    # (close() leaves it to a caller still sleeping on it), and draining a
                    # closed socket raised EBADF out of recv() instead of sp.Closed.
                    wakeup.drain()
            finally:
                self._end(lent)

    def _read_until_delivered(self, lent: list[Lender], wakeup: Wakeup,
                              deadline: float | None) -> set[HasFileno]:
        """Poll and read the lent pipes until a message is delivered (a large one may take
        many reads: the pipes stay lent meanwhile, so the loop does not wake for each
        chunk), the deadline, a close or a wake-up. Returns what the last poll found; the
        session is owned on return, unless it closed meanwhile."""
        loop, channel = self.loop, self.channel
        while True:
            streams = [lender.stream for lender in lent if lender.stream is not None]
            ready = self._poller.readable(streams, wakeup, deadline)
            # Awake now: what this thread delivers must not write to its own wake-up.
            channel.end_reading()
            if not loop.own(None):
                return ready
            for lender in lent:
                if lender.stream in ready:
                    lender.read()
            if (not ready or wakeup in ready
                    or not any(lender.stream is not None for lender in lent)
                    or not channel.begin_reading(wakeup)):  # a message, or a close
                return ready
            loop.release()

    # ------------------------------------------------------------------ asyncio

    def lend_to_event_loop(self, aloop: asyncio.AbstractEventLoop) -> Loan | None:
        """While a task awaits a message, lend the socket's pipes to its asyncio event loop
        (same rules as ``wait``): the event loop watches them and reads them in its own
        thread, so the message needs no hand-off from the I/O thread either. Returns the
        loan for ``end_loan``, or None if this cannot be done now."""
        lent = self._borrow(EVENT_LOOP_OWN_WAIT)
        if lent is None:
            return None
        try:
            # By fd: a stream closed later has no fileno() any more. A pipe that dies while
            # lent (read here, or closed by the I/O thread) leaves the event loop at once,
            # before its fd number can be reused by another registration.
            loan: Loan = []
            for lender in lent:
                stream = lender.stream
                assert stream is not None  # lent just now, under the session lock: alive
                loan.append((lender, stream.fileno()))
            for lender, fd in loan:
                lender.on_release = functools.partial(
                    aloop.call_soon_threadsafe, aloop.remove_reader, fd)
        finally:
            self.loop.release()
        for lender, fd in loan:
            aloop.add_reader(fd, self._read_for_event_loop, lender)
        return loan

    def _read_for_event_loop(self, lender: Lender) -> None:
        loop = self.loop
        if loop.own(None):
            try:
                lender.read()  # what it delivers wakes the awaiting task (a channel watcher)
            finally:
                loop.release()

    def end_loan(self, aloop: asyncio.AbstractEventLoop, loan: Loan) -> None:
        """The task stopped awaiting: the I/O thread reads the pipes again."""
        alive = self._end([lender for lender, _ in loan])
        for lender, fd in loan:
            # A pipe that died while lent left the event loop by itself (on_release); the
            # others leave it now, in the event loop's thread, before anything can reuse fd.
            if lender in alive:
                aloop.remove_reader(fd)

    # ------------------------------------------------------------------ lending

    def _borrow(self, timeout: float | None) -> list[Lender] | None:
        """Own the session (waiting up to ``timeout``) and lend the socket's active pipes
        to this thread: their lenders, the session still owned (the caller releases it),
        or None, not owned, if this cannot be done now."""
        loop = self.loop
        if self.busy or not loop.own(timeout):
            return None
        try:
            lent = None if self.busy or self.closed else self._lend()
            if not lent:
                loop.release()
                return None
            self.busy = True
            self.waited = True
            return lent
        except BaseException:
            # A Ctrl-C while lending: what was lent goes back, and the session with it.
            if loop.owned():
                try:
                    _give_back(pipe.lender for pipe in self._pipes())
                finally:
                    loop.release()
            raise

    def _end(self, lent: list[Lender]) -> list[Lender]:
        """Give the lent pipes back to the I/O thread: this thread reads no more. Returns
        the lenders whose pipe is still alive, decided under the session lock (a pipe
        dying meanwhile has called its ``on_release`` by then, or never will). The session
        is owned on the way in or not: a read may have ended holding it, or been
        interrupted anywhere."""
        loop = self.loop
        owned = loop.owned() or loop.own(None)
        try:
            for lender in lent:
                lender.on_release = None
            alive = [lender for lender in lent if lender.stream is not None]
            if owned:
                _give_back(lent)
        finally:
            self.busy = False
            if owned:
                loop.release()
        return alive

    def _lend(self) -> list[Lender]:
        """Lend the reading of the socket's active pipes (session lock held)."""
        pipes = self._pipes()
        if len(pipes) > LEND_MAX:
            return []
        # Nobody reads here now (not busy): a pipe still marked lent is left from a give
        # back a Ctrl-C interrupted (Lender.give_back), and goes back first.
        _give_back(pipe.lender for pipe in pipes)  # nothing for a pipe not lent
        return [pipe.lender for pipe in pipes if pipe.lender.lend()]

    def close(self) -> None:
        """The socket is closed (session lock held): the wake-up is closed, unless a caller
        still sleeps on it (the channel's close woke it; the collector closes it then)."""
        self.closed = True
        if self.wakeup is not None and not self.busy:
            self.wakeup.close()
            self.wakeup = None


def _new_wakeup() -> Wakeup | None:
    """A wake-up socket pair, or None when the process is out of descriptors (EMFILE): the
    caller then waits on the channel for the I/O thread's delivery (the pipes given back)."""
    try:
        return Wakeup()
    except OSError:
        return None


def _give_back(lent: Iterable[Lender]) -> None:
    for lender in lent:
        lender.give_back()


class _Poller:
    """``poll()`` on the lent streams and the wake-up. The poll object and its map from
    descriptors back to streams are kept from one wait to the next while the objects polled
    are the same (the usual case: the same pipes lent again at every receive). Made anew,
    they cost about a microsecond a wait, more than the poll() itself.

    Keyed by the objects, not their descriptors: a stream that died is no longer lent
    (its pipe's stream is None), and one that replaced it is another object, even if it got
    the same descriptor number."""

    __slots__ = ("_objs", "_poll", "_by_fd")

    def __init__(self) -> None:
        self._objs: tuple[HasFileno, ...] = ()
        self._poll = select.poll()
        self._by_fd: dict[int, HasFileno] = {}

    def readable(self, streams: Iterable[HasFileno], wakeup: Wakeup,
                 deadline: float | None) -> set[HasFileno]:
        """Sleep until one of ``streams`` or ``wakeup`` is readable, or the deadline;
        return the readable ones (``wakeup`` included if it fired)."""
        objs = (*streams, wakeup)
        if objs != self._objs:
            poll = select.poll()
            by_fd: dict[int, HasFileno] = {}
            for obj in objs:
                fd = obj.fileno()
                by_fd[fd] = obj
                poll.register(fd, select.POLLIN)
            self._objs, self._poll, self._by_fd = objs, poll, by_fd
        if deadline is None:
            events = self._poll.poll()
        else:
            # poll() takes milliseconds; round up so that a wait never ends before the
            # deadline.
            events = self._poll.poll(max(0, int((deadline - time.monotonic()) * 1000) + 1))
        by_fd = self._by_fd
        return {by_fd[fd] for fd, _ in events}
