"""Reading a socket's pipes in the thread of the caller who waits for a message.

Theory of operation
-------------------
Handing a message from the I/O thread to a caller blocked in ``recv()`` costs a cross-thread
wake-up (about 35 µs across cores here, more than all of our own work on a message). So a
caller whose ``recv()`` finds the receive queue empty reads the socket's pipes itself:

1. it takes the session lock (``loop.own``) and *lends* the readers of the socket's active
   pipes: the loop stops watching them (``Pipe.lender``);
2. it sleeps in ``poll()`` on those streams and on the channel's own wake-up socket,
   without the lock, so the I/O thread and other callers go on meanwhile; first it polls
   them without sleeping for up to ``recv_spin``, while such spins pay (SPIN_CHEAP
   below): in a round trip the answer comes within microseconds, and catching it so
   saves the sleep and its wake-up;
3. it takes the lock again and reads the streams that became readable; the frames go
   through the pipe and protocol machines and land in the receive queue as if the I/O
   thread had read them. Until a message lands (a large one takes many reads) it polls
   and reads again, the pipes still lent.

Whoever delivers a message to the queue or closes the channel while a caller sleeps here
writes to the wake-up (``Channel.begin_reading``), so a message from a pipe that is not
lent, a close, or a lent pipe dying (``Pipe.release``) ends the sleep at once.

A wait that ends with a message *keeps* its loan (``kept``) for the next wait, which
usually comes soon (a request answered, the next reply awaited) and then polls at once:
giving the pipes back and lending them again cost two selector changes and their Python,
3-5 µs of each side's critical path. Between the two waits nobody reads the kept pipes,
so whatever needs them read gets them back first:

- a receive that does not wait (``try_recv``, ``recv(block=False)``), a poll or an asyncio
  wait (a channel watcher), a context's receive, a caller that cannot borrow them:
  ``take_back`` reads what the kernel holds for them, in that caller's thread, and gives
  them back to the I/O thread (``Channel.take_back_loan``);
- a kept pipe that pauses (full queue) or dies (``Lender.on_stop``); the peer's end of
  stream, an error or a hang-up, which the I/O thread's selector still reports on a lent
  stream (``Loop.lend_reader``'s alarm): a PAIR whose peer closes is free for the next
  one at once, as when the I/O thread reads;
- the socket's close;
- a timer of the session's loop that finds the loan unused since its last look
  (``KEPT_CHECK``, 1 s): the thread may have stopped receiving.

A wait that ends without a message (a timeout, a close, a wake-up) gives its loan back,
and so does one that ends while someone else waits without reading (another thread on the
channel, a poller or an awaiting task, a context of the socket): each of those counts
itself first and then takes back a kept loan, and a wait keeps its loan first and then
looks for them, so one of the two always sees the other.

An asyncio task awaiting ``arecv()`` borrows the pipes the same way, for its event loop:
the event loop watches the lent streams (``add_reader``) and reads them in its own thread
(``lend_to_event_loop``). Its loan is kept after the await (``KeptLoan``): lending and taking
back cost 20-25 µs a receive there, through asyncio's own registration. An event loop,
unlike a thread asleep in ``poll()``, goes on reading between two receives, so a peer's
close and a poller's message are still noticed, as long as it runs. What it no longer
reads goes back to the I/O thread at once: a pipe that pauses (full queue) or dies, an
error or hang-up the I/O thread's selector reports on a lent stream (``Loop.lend_reader``'s
alarm), the socket's close. And a loan that no receive used since the last look and that
no task awaits with, looked at every ``PARK_CHECK`` (10 ms) by a timer of the session's
loop, goes back too: the event loop may have stopped. One a task awaits with stays, as
loans always did for the whole wait (the looks then space out, up to a second), unless its
event loop no longer runs (``KeptLoan.stranded``: stopped with the task still awaiting, or
closed): the next look takes it back, and so does at once another reader it is in the way
of (a thread's wait, another event loop's await). An event loop that runs but is blocked
(a task doing blocking work) still holds its loan: the other readers of the socket get
their messages once it reads again.

Only sockets with at most ``LEND_MAX`` pipes are read this way: ``poll()`` costs grow with
the number of streams where the loop's epoll does not, and a socket with many peers is a
server whose throughput comes from the loop's batching anyway.

Fields (guarded by the session lock): ``busy`` (a caller is between lending and giving
back or keeping, or an event loop keeps a loan; at most one at a time, the others wait on
the channel for what it delivers), ``kept`` (the loan the last wait kept, while none is
busy: any thread's next wait takes it; read without the lock as a hint), ``park`` and
``_stale`` (``KeptLoan``), ``wakeup`` (made on first use, closed with the socket) and
``waited`` (read and cleared by the socket's next send; a caller that waits on the channel
instead, its pipes not lendable, or takes the last message queued, sets it too, without
the lock: it is a hint, and a lost or extra set only changes which thread writes that
send). ``_poller`` is used only by the busy caller, without the lock.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from scaproust.reactor.loop import MAX_SLEEP
from scaproust.reactor.waker import LONGEST_SLEEP
from scaproust.reactor.wakeup import Wakeup

if TYPE_CHECKING:
    import asyncio

    from scaproust.core.channel import Channel
    from scaproust.core.interfaces import Lender, LendingPipe
    from scaproust.core.options import Options
    from scaproust.reactor.loop import HasFileno, Loop
    from scaproust.reactor.timers import TimerHandle

#: A socket with more pipes than this is read by the I/O thread only.
LEND_MAX = 8
#: A receive that must wait spins first (the ``recv_spin`` option, ``_Poller._spin``):
#: it polls without sleeping, yielding the core between two polls, until a message comes
#: or the spin ends. A message caught so saves a sleep and its wake-up: 30-50 µs of
#: latency here, and CPU too, as a core that idled comes back with its caches cold. But
#: only a quick catch is cheaper than the sleep: each catch adds SPIN_CHEAP less the time
#: it took to the spins' *credit* (at most SPIN_CREDIT). Credit run out, or a spin that
#: caught nothing (a miss), make the next waits sleep at once: one wait, then twice as
#: many at each such verdict until the credit is full again, up to SPIN_SKIP_MAX; the
#: spin after such a run starts with SPIN_PROBE. So a socket whose messages come later
#: than the spin, or mostly later than SPIN_CHEAP, spins on a few waits in SPIN_SKIP_MAX,
#: and one whose peer answers at once (a round trip between two processes) on every wait;
#: a new socket's full credit pays for its first late catches while its peer, too, starts
#: to spin. Measured with bench/probe_spin.py (REQ/REP between two processes, paced at
#: 5,000 and 7,000 round trips a second): counting catches within 50 µs, then 30, as
#: paying cost 12-28 % more CPU a round trip than no spin; within 20, none beyond the
#: runs' spread.
SPIN_CHEAP = 20e-6
SPIN_CREDIT = 200e-6
SPIN_PROBE = 60e-6
SPIN_SKIP_MAX = 64
#: Only a wait that comes within this of the last one's end spins: the thread is busy
#: with a quick exchange. What a spin saves is the cost of a core that idled (its caches
#: and the wake-up); a thread that idled anyway between two waits (a paced client, a
#: server doing its own work) saves little, and its spins' CPU was the difference (a paced
#: REQ/REP client, 1,000 round trips a second: 12 % more CPU a round trip before this
#: rule, bench/probe_spin.py).
SPIN_GAP = 100e-6
#: Between two polls of a spin: another thread or process waiting for this core runs
#: (the peer, if it shares it: without the yield a spin kept it waiting to the end), and a
#: lone spinner comes back at once. Module names, so that tests can replace them. (Lending,
#: and so spinning, happens on Linux only; elsewhere this module still imports.)
_yield = getattr(os, "sched_yield", lambda: None)
_now = time.monotonic
#: Spinning needs the peer to run meanwhile: never on a machine with one processor.
SPIN_CPUS = (os.cpu_count() or 1) > 1
#: How long an asyncio event loop waits for the session lock to borrow the pipes before
#: it lets the I/O thread read them as usual (an event loop must not block).
EVENT_LOOP_OWN_WAIT = 0.0005
#: How often the I/O thread looks at a loan an event loop keeps between awaits: one that
#: no receive used since the last look, and no task awaits with, goes back (so within
#: twice this after an event loop that was receiving stopped, or its tasks stopped
#: receiving, the I/O thread reads the pipes again; after a long wait, within the
#: spaced-out look below).
PARK_CHECK = 0.01
#: A loan a task awaits with is looked at every PARK_CHECK, doubling up to this while the
#: wait lasts (the I/O thread sleeps at most a second anyway: reactor/loop.py MAX_SLEEP).
PARK_CHECK_MAX = 1.0
#: How often the I/O thread looks at a loan a thread's recv() kept for its next wait: one
#: that no wait took since the last look goes back. The I/O thread's longest sleep, so
#: that setting this check never wakes it: a request served every few milliseconds would
#: otherwise cost the I/O thread two wake-ups. (Whatever needs the kept pipes read sooner
#: takes them back at once: see the module's docstring.)
KEPT_CHECK = MAX_SLEEP


class CallerReader:
    """The caller-side reading of one socket (see the module's docstring)."""

    def __init__(self, loop: Loop, channel: Channel, pipes: Collection[LendingPipe],
                 contexts: Collection[object], options: Options) -> None:
        self.loop = loop
        self.channel = channel
        #: The socket's options: ``recv_spin`` is read at every wait.
        self.options = options
        #: The socket's pipes, a live collection (read at every receive: no call to get it).
        self._pipes = pipes
        #: The socket's contexts with a channel of their own (a live collection): their
        #: receives wait for what the socket's pipes deliver, so no loan is kept while
        #: there are any.
        self._contexts = contexts
        self.busy = False
        #: How many of the socket's pipes could ever be lent (not in-process ones), kept by
        #: the socket as pipes come and go. Read without the lock, as a hint: a receive on a
        #: socket that has none (an inproc one) waits on the channel without taking the
        #: session to find nothing to lend, a third of its path.
        self.lendable = 0
        self.wakeup: Wakeup | None = None
        self.closed = False
        #: A caller slept here since the socket's last send, or took the last message
        #: queued (Channel.take, get): its next send answers or follows a message, and
        #: writes at once (Channel.put).
        self.waited = False
        self._poller = _Poller(loop)  # used by the one busy caller at a time
        #: The loan an asyncio event loop keeps between awaits (busy meanwhile), the
        #: timer that checks it is still used (set while a loan is kept, and only then),
        #: and the loans taken back from another thread whose event loop has yet to stop
        #: watching them.
        self.park: KeptLoan | None = None
        self._check: TimerHandle | None = None
        self._check_every = PARK_CHECK
        self._stale: list[KeptLoan] = []
        #: The loan the last wait kept for the next one (see the module's docstring), the
        #: socket's number of pipes then, whether a wait took it since the timer's last look
        #: and that timer (set while a loan is kept, at most one).
        self.kept: list[Lender] | None = None
        self._kept_pipes = 0
        self._kept_used = False
        self._kept_check: TimerHandle | None = None
        #: ``_drop_kept`` bound once: the kept pipes' ``on_stop``, told by identity from
        #: what is set already (a bound method is a new object at each attribute read).
        self._on_kept_stop = self._drop_kept

    def wait(self, deadline: float | None) -> bool:
        """Read the socket's pipes here until a message, ``deadline`` (monotonic), a close
        or a wake-up: True. False, at once, if this thread cannot (another one reads, the
        socket has no pipe to lend or too many, this thread owns the session already, the
        session is closing): the caller then waits on the channel instead."""
        if not self.lendable:
            return False
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready: set[HasFileno] = set()
        wakeup: Wakeup | None = None
        owned = False  # on the way out: known to hold the session (else _end asks the loop)
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
            ready, owned = self._read_until_delivered(lent, wakeup, deadline)
            return True
        finally:
            # Without the channel's lock: only this thread sets it, and a deliverer that
            # still saw it set only writes a wake-up byte too many (drained by the next
            # wait that finds it).
            self.channel.reader_waiting = False
            try:
                if wakeup is not None and wakeup in ready:
                    # While still busy: once _end clears it, a close may close the wake-up
                    # (close() leaves it to a caller still sleeping on it), and draining a
                    # closed socket raised EBADF out of recv() instead of sp.Closed.
                    wakeup.drain()
            finally:
                self._end(lent, owned)

    def _read_until_delivered(self, lent: list[Lender], wakeup: Wakeup,
                              deadline: float | None) -> tuple[set[HasFileno], bool]:
        """Poll and read the lent pipes until a message is delivered (a large one may take
        many reads: the pipes stay lent meanwhile, so the loop does not wake for each
        chunk), the deadline, a close or a wake-up. Returns what the last poll found and
        whether the session is owned on return (it is, unless it closed meanwhile)."""
        loop, channel = self.loop, self.channel
        spin = self.options.recv_spin
        while True:
            # Each stream asked for once (a property): a pipe that dies during the poll is
            # told by read(), which reads only a live pipe.
            pairs = [(lender, lender.stream) for lender in lent]
            streams = [stream for _, stream in pairs if stream is not None]
            ready = self._poller.readable(streams, wakeup, deadline, spin)
            # Awake now: what this thread delivers must not write to its own wake-up (no
            # lock: see wait's finally).
            channel.reader_waiting = False
            if not loop.own(None):
                return ready, False
            channel.catching = True  # what this thread delivers, it returns (Channel.caught)
            try:
                for lender, stream in pairs:
                    if stream is not None and stream in ready:
                        lender.read()
            finally:
                channel.catching = False
            if (channel.caught is not None or channel.inbox.count or not ready or wakeup in ready
                    or not any(lender.stream is not None for lender in lent)
                    or not channel.begin_reading(wakeup)):  # a message, or a close
                return ready, True
            loop.release()

    # ------------------------------------------------------------------ asyncio

    def lend_to_event_loop(self, aloop: asyncio.AbstractEventLoop) -> KeptLoan | None:
        """While a task awaits a message, let its asyncio event loop read the socket's pipes
        (same rules as ``wait``): the event loop watches them and reads them in its own
        thread, so the message needs no hand-off from the I/O thread either. The loan is
        kept after the await (see ``KeptLoan``), so the next receive usually finds it in
        place. Returns it, for the task to count itself in ``waiting`` while it awaits;
        None if this cannot be done now (the I/O thread reads then)."""
        park = self.park
        if park is not None and park.aloop is aloop and park.holds(self._pipes):
            park.used = True  # no lock: the check that reads it only ever delays a revoke
            return park
        loop = self.loop
        if not self.lendable or not loop.own(EVENT_LOOP_OWN_WAIT):
            if park is not None and park.aloop is not aloop and park.stranded():
                self._post_revoke(park)  # the task waits for the I/O thread's delivery
            return None
        try:
            self._remove_stale(aloop)  # before any fd number of them is registered again
            self._drop_dead_stale()
            if self.park is not None:
                if self.park.aloop is not aloop and not self.park.stranded():
                    return None  # another event loop's: the check takes it back if unused
                # Ours, but a pipe came, died or could not be lent; or another event
                # loop's that no longer runs: nobody reads with it.
                self._revoke()
            lent = None if self.busy or self.closed else self._lend(self._park_alarm)
            if not lent:
                return None
            self.busy = True
            self.waited = True
            try:
                park = KeptLoan(aloop, lent, len(self._pipes))
            except BaseException as err:
                self.busy = False
                _give_back(lent)
                if isinstance(err, OSError):
                    return None  # out of descriptors for the duplicates: the loop reads
                raise
            self.park = park
            # From here a failure takes the whole loan back (what was already added is
            # removed again), whatever it is: a Ctrl-C, an event loop closed under us.
            try:
                for lender in lent:
                    lender.on_stop = self._park_lost
                for lender, watched in zip(lent, park.watched, strict=True):
                    aloop.add_reader(watched, self._read_for_event_loop, park, lender)
                self._check_every = PARK_CHECK
                self._check = loop.call_later(PARK_CHECK, self._check_park)
            except BaseException:
                if self.park is park:
                    self._revoke()
                raise
            return park
        finally:
            try:
                loop.release()
            except BaseException:
                loop.release_interrupted()  # a Ctrl-C as release() was entered
                raise

    def _read_for_event_loop(self, park: KeptLoan, lender: Lender) -> None:
        loop = self.loop
        if loop.own(None):
            try:
                if not park.revoked:  # taken back meanwhile: its removal is on its way
                    lender.read()  # what it delivers wakes the awaiting task (a watcher)
            finally:
                try:
                    loop.release()
                except BaseException:
                    loop.release_interrupted()  # a Ctrl-C as release() was entered
                    raise

    def _park_alarm(self) -> None:
        """``Loop.lend_reader``'s alarm for an event loop's loan (session lock held)."""
        if self.park is not None and _ended([lender.stream for lender in self.park.lent]):
            self._revoke()

    def _park_lost(self) -> None:
        """A kept pipe died or paused, or the I/O thread's selector reported an error or a
        hang-up on one (the event loop may not be running to read it); session lock held.
        The whole loan goes back to the I/O thread. Only the loan kept now can call this:
        taking one back unhooks its pipes (``on_stop``, and the alarm with the reader)."""
        if self.park is not None:
            self._revoke()

    def _check_park(self) -> None:
        """A timer of the session loop: a loan that no receive used since the last look,
        and that no task awaits with now, goes back to the I/O thread (its event loop may
        have stopped). One a task awaits with stays, as a loan did before it was kept: its
        event loop reads the task's message, whenever it comes; unless that event loop no
        longer runs (``KeptLoan.stranded``)."""
        self._check = None
        park = self.park
        if park is None:
            return
        if park.stranded():
            # Its event loop stopped with a task still awaiting (run_until_complete of a
            # coroutine that returned, loop.stop(), a loop closed): nobody would read.
            self._revoke()
            return
        if park.used:
            park.used = False
            self._check_every = PARK_CHECK
        elif park.waiting:
            # A long wait (a server between sparse requests): looked at less and less
            # often, so that an idle event loop costs the I/O thread no more wake-ups
            # than its own longest sleep.
            self._check_every = min(self._check_every * 2, PARK_CHECK_MAX)
        else:
            self._revoke()
            return
        self._check = self.loop.call_later(self._check_every, self._check_park)

    def _post_revoke(self, park: KeptLoan) -> None:
        """A reader found ``park`` stranded in its way and could not own the session now:
        the I/O thread takes it back as soon as it can, and reads (and delivers) then,
        rather than at its next look, up to a second away."""
        self.loop.post_if_open(self._revoke_stranded, park)

    def _revoke_stranded(self, park: KeptLoan) -> None:
        if self.park is park and park.stranded():  # not lent afresh meanwhile
            self._revoke()

    def _revoke(self) -> None:
        """Give a kept loan back to the I/O thread (session lock held). Its event loop
        stops watching the duplicates and closes them in its own thread: here at once if
        this is that thread, else posted there (dropped if that loop is closed)."""
        park = self.park
        assert park is not None
        self.park = None
        park.revoked = True
        if self._check is not None:
            # The check lives as long as its loan: one left over, spaced out by a long
            # wait, would look at the next loan only that much later.
            self._check.cancel()
            self._check = None
        try:
            for lender in park.lent:
                lender.on_stop = None
            _give_back(park.lent)
        finally:
            self.busy = False
            if threading.get_ident() == park.thread:
                park.unwatch()
            else:
                self._stale.append(park)
                try:
                    park.aloop.call_soon_threadsafe(self._remove_stale_soon, park.aloop)
                except RuntimeError:  # that event loop is closed, its selector with it
                    self._stale.remove(park)
                    park.close_duplicates()

    def _remove_stale_soon(self, aloop: asyncio.AbstractEventLoop) -> None:
        # Not owned only once the session is closed: nothing can lend again then.
        owned = self.loop.own(None)
        try:
            self._remove_stale(aloop)
        finally:
            if owned:
                try:
                    self.loop.release()
                except BaseException:
                    self.loop.release_interrupted()  # a Ctrl-C as release() was entered
                    raise

    def _drop_dead_stale(self) -> None:
        """Session lock held: the duplicates of loans taken back from another thread whose
        event loop was closed before it ran their removal (closing it dropped the post,
        with its selector): nothing watches them any more, so they close here, and with
        them the connection a dead pipe left open."""
        for park in [p for p in self._stale if p.aloop.is_closed()]:
            self._stale.remove(park)
            park.close_duplicates()

    def _remove_stale(self, aloop: asyncio.AbstractEventLoop) -> None:
        """In ``aloop``'s thread, session lock held: the loans of ``aloop`` taken back from
        another thread leave it now (once each; a later post finds nothing)."""
        for park in [p for p in self._stale if p.aloop is aloop]:
            self._stale.remove(park)
            park.unwatch()

    # ------------------------------------------------------------------ lending

    def _borrow(self, timeout: float | None) -> list[Lender] | None:
        """Own the session (waiting up to ``timeout``) and lend the socket's active pipes
        to this thread: their lenders, the session still owned (the caller releases it),
        or None, not owned, if this cannot be done now."""
        loop = self.loop
        if self.busy:
            park = self.park  # read without the lock: checked again under it
            if park is None or not park.stranded():
                return None
            if not loop.own(timeout):
                self._post_revoke(park)  # the caller waits for the I/O thread's delivery
                return None
            try:
                # Checked again under the lock; lent afresh meanwhile, it stays, and the
                # lend below finds the reader busy.
                self._revoke_stranded(park)
            except BaseException:
                loop.release()
                raise
        elif not loop.own(timeout):
            return None
        try:
            kept = self.kept
            if kept is not None and len(self._pipes) == self._kept_pipes:
                # The last wait's loan, as it left it (whatever stops a kept pipe gives
                # the loan back, and nobody reads them meanwhile): poll at once.
                self.kept = None
                self._kept_used = True
                lent: list[Lender] | None = kept
            else:
                lent = None if self.busy or self.closed else self._lend(self._alarm)
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
                    self.kept = None
                    _give_back(pipe.lender for pipe in self._pipes)
                finally:
                    loop.release()
            raise

    def _end(self, lent: list[Lender], owned: bool = False) -> None:
        """The wait is over: its loan is kept for the next wait, if it ended with a message
        and nobody else needs the pipes read, else given back to the I/O thread. The
        session is owned on the way in (``owned`` says so when the caller knows) or not: a
        read may have ended holding it, or been interrupted anywhere.

        Its steps are inline, without a call for each (what the loan still is, the keeping
        itself): they run between a message's arrival and ``recv()`` returning, on a core
        that has just woken up, where each call costs (docs/PERFORMANCE.md, "Where the
        time goes")."""
        loop = self.loop
        owned = owned or loop.owned() or loop.own(None)
        try:
            if owned:
                channel = self.channel
                # Kept if the wait ended with a message and the loan is still what a fresh
                # one would be: the socket has the pipes it had then, each one lendable.
                keep = ((channel.caught is not None or channel.inbox.count)
                        and not self.closed and len(self._pipes) == self._kept_pipes)
                if keep:
                    for lender in lent:  # no generator: one pipe is the usual loan
                        if not lender.keeps():
                            keep = False
                            break
                if keep:
                    # Kept for the next wait (see the module's docstring), with the timer
                    # that looks at it and the hook by which a kept pipe that stops gives
                    # it back (set already if this loan was kept before).
                    self.kept = lent
                    if self._kept_check is None:
                        self._kept_used = False
                        self._kept_check = loop.call_later(KEPT_CHECK, self._check_kept)
                    drop = self._on_kept_stop
                    for lender in lent:
                        if lender.on_stop is not drop:
                            lender.on_stop = drop
                    # Kept first, then looked for anyone who waits without reading (a
                    # thread on the channel, a poller, an awaiting task, a context): each
                    # counts itself first, then takes back a kept loan, so one of the two
                    # sees the other (the interpreter runs one thread at a time). A thread
                    # that reads is not counted (Channel.recv_waiters), this one included.
                    if channel.recv_waiters or channel.watchers or self._contexts:
                        self._drop_kept()
                else:
                    _unhook(lent)
                    _give_back(lent)
        finally:
            self.busy = False
            if owned:
                try:
                    loop.release()
                except BaseException:
                    loop.release_interrupted()  # a Ctrl-C as release() was entered
                    raise

    # ------------------------------------------------------------------ kept loans

    def _drop_kept(self) -> None:
        """A kept loan goes back to the I/O thread (session lock held): also the loan's
        ``on_stop``. Nothing if none is kept: a pipe that stops in a loan a wait has taken
        is that wait's to see."""
        kept = self.kept
        if kept is not None:
            self.kept = None
            _unhook(kept)
            _give_back(kept)

    def _alarm(self) -> None:
        """``Loop.lend_reader``'s alarm for a thread's loan (session lock held): a kept one
        goes back if the peer really ended a kept stream (or it failed). One a wait has
        taken is that wait's to notice: it polls the same streams (until it has read the
        peer's end, the I/O thread may be told again: a few iterations, each waiting for
        the session lock)."""
        kept = self.kept
        if kept is not None and _ended([lender.stream for lender in kept]):
            self._drop_kept()

    def _check_kept(self) -> None:
        """A timer of the session loop: a kept loan no wait took since the last look goes
        back (its thread may have stopped receiving)."""
        self._kept_check = None
        if self.kept is None:
            return  # taken by a wait, or given back: the next keep (_end) sets the timer again
        if self._kept_used:
            self._kept_used = False
            self._kept_check = self.loop.call_later(KEPT_CHECK, self._check_kept)
        else:
            self._drop_kept()

    def take_back(self) -> None:
        """Give a kept loan back to the I/O thread, reading first, in this thread, what the
        kernel holds for its pipes: called by whoever looks for messages without a wait
        of its own here (``Channel.take_back_loan``), who must find what a reading I/O
        thread would have delivered meanwhile. Takes the session lock unless this thread
        holds it already; never called with a channel's lock held."""
        if self.kept is None:
            return
        loop = self.loop
        owned = loop.owned()
        if not owned and not loop.own(None):
            return  # the session is closed: nothing reads any more
        try:
            kept = self.kept
            if kept is not None and not self.busy:
                for lender in kept:
                    lender.read()  # nothing if it stopped meanwhile (on_stop gave all back)
                self._drop_kept()
        finally:
            if not owned:
                try:
                    loop.release()
                except BaseException:
                    loop.release_interrupted()  # a Ctrl-C as release() was entered
                    raise

    def _lend(self, alarm: Callable[[], object] | None = None) -> list[Lender]:
        """Lend the reading of the socket's active pipes (session lock held); ``alarm``:
        see ``Loop.lend_reader``."""
        self._drop_kept()  # a loan is lent afresh: the kept one is given back first
        pipes = self._pipes
        self._kept_pipes = len(pipes)
        if len(pipes) > LEND_MAX:
            return []
        # Nobody reads here now (not busy): a pipe still marked lent is left from a give
        # back a Ctrl-C interrupted (Lender.give_back), and goes back first.
        _give_back(pipe.lender for pipe in pipes)  # nothing for a pipe not lent
        return [pipe.lender for pipe in pipes if pipe.lender.lend(alarm)]

    def close(self) -> None:
        """The socket is closed (session lock held): the wake-up is closed, unless a caller
        still sleeps on it (the channel's close woke it; the collector closes it then)."""
        self.closed = True
        self._drop_kept()
        if self._kept_check is not None:
            self._kept_check.cancel()
            self._kept_check = None
        if self.park is not None:
            self._revoke()
        self._drop_dead_stale()
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


#: What the kernel reports on a stream whose peer ended it, or that failed (POLLRDHUP is
#: Linux's, as the epoll that lending needs: elsewhere nothing is ever lent).
_ENDED = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _ended(streams: Iterable[HasFileno | None]) -> bool:
    """Whether one of ``streams`` (None: dead already) is ended by its peer or failed,
    asked of the kernel now: an alarm may also come from a readiness the I/O thread's
    selector reported just before the stream was lent (its data is the borrower's to read,
    and taking the loan back for it would only cost the next receive a new loan)."""
    poll = select.poll()
    for stream in streams:
        if stream is None:
            return True
        poll.register(stream, _ENDED)
    return any(events & _ENDED for _, events in poll.poll(0))


def _unhook(lent: Iterable[Lender]) -> None:
    for lender in lent:
        lender.on_stop = None


class KeptLoan:
    """The socket's pipes lent to an asyncio event loop, kept from one awaited receive to
    the next (lending them and taking them back cost 20-25 µs a receive, a fifth of an
    asyncio round trip).

    The event loop watches a duplicate of each lent stream's descriptor, not the stream's
    own: the pipe may die and close its stream in another thread before the event loop
    has stopped watching, and a descriptor number closed meanwhile could be reused and
    registered again, which the event loop's selector, still holding the old number, would
    refuse. A duplicate is closed only once the event loop no longer watches it, and
    keeps the connection open until then: taken back from another thread while that
    event loop is stopped but not closed, a pipe that dies meanwhile sends its close to
    the peer only once the event loop runs again, or, closed without running again, once
    the socket closes or an event loop borrows its pipes anew (at most one loan's
    duplicates per such event loop: it cannot make another without running). Fields:
    ``used`` (a receive took the loan since the I/O thread's last look), ``waiting`` (the
    tasks awaiting with it now; written in the event loop's thread only), ``revoked`` (set
    under the session lock when it is taken back: a read posted before that is skipped).
    """

    __slots__ = ("aloop", "thread", "lent", "pipes", "watched", "used", "waiting", "revoked")

    def __init__(self, aloop: asyncio.AbstractEventLoop, lent: list[Lender],
                 pipes: int) -> None:
        self.aloop = aloop
        self.thread = threading.get_ident()  # the event loop's, where this is made
        self.lent = lent
        self.pipes = pipes  # the socket's, lendable or not, when it was made
        self.watched: list[socket.socket] = []
        try:
            for lender in lent:
                stream = lender.stream
                assert stream is not None  # lent just now, under the session lock: alive
                duplicate = os.dup(stream.fileno())
                try:
                    self.watched.append(socket.socket(fileno=duplicate))
                except BaseException:
                    os.close(duplicate)
                    raise
        except BaseException:
            self.close_duplicates()
            raise
        self.used = True
        self.waiting = 0  # tasks awaiting a message with it now (their event loop's thread)
        self.revoked = False

    def holds(self, pipes: Collection[LendingPipe]) -> bool:
        """Whether the socket has the pipes it had when this was made, the lent ones all
        alive (one that could not be lent then, carrying large bodies say, stays the I/O
        thread's). Read without the lock: a stale answer only makes one receive lend
        afresh, or wait for the I/O thread's delivery."""
        return (not self.revoked and len(pipes) == self.pipes
                and all(lender.stream is not None for lender in self.lent))

    def stranded(self) -> bool:
        """Whether its event loop no longer runs (stopped, or closed): nothing reads the
        pipes for it then, whatever tasks still await with it. Read from any thread (two
        attribute reads of the loop's)."""
        return self.aloop.is_closed() or not self.aloop.is_running()

    def unwatch(self) -> None:
        """In the event loop's thread: stop watching the duplicates, then close them."""
        for watched in self.watched:
            self.aloop.remove_reader(watched)
        self.close_duplicates()

    def close_duplicates(self) -> None:
        for watched in self.watched:
            watched.close()  # the duplicate only: the pipe's stream is its own
        self.watched = []


class _Poller:
    """``poll()`` on the lent streams and the wake-up. The poll object and its map from
    descriptors back to streams are kept from one wait to the next while the objects polled
    are the same (the usual case: the same pipes lent again at every receive). Made anew,
    they cost about a microsecond a wait, more than the poll() itself.

    Keyed by the objects, not their descriptors: a stream that died is no longer lent
    (its pipe's stream is None), and one that replaced it is another object, even if it got
    the same descriptor number."""

    __slots__ = ("_objs", "_poll", "_by_fd", "_loop", "_skip", "_backoff", "_credit", "_last")

    def __init__(self, loop: Loop | None = None) -> None:
        self._objs: tuple[HasFileno, ...] = ()
        self._poll = select.poll()
        self._by_fd: dict[int, HasFileno] = {}
        #: The session's loop, whose I/O thread a spin must not keep from the interpreter
        #: while it has work (None: no such check).
        self._loop = loop
        #: Waits left that sleep at once after a verdict against spinning (``_skip_next``),
        #: and the length of the next such run (doubling at each verdict until the credit
        #: is full again, up to SPIN_SKIP_MAX).
        self._skip = 0
        self._backoff = 1
        self._credit = SPIN_CREDIT  # what the spins saved lately, less what they lost
        self._last = 0.0  # when the last wait ended (_now()): see SPIN_GAP

    def readable(self, streams: Iterable[HasFileno], wakeup: Wakeup,
                 deadline: float | None, spin: float = 0.0) -> set[HasFileno]:
        """Sleep until one of ``streams`` or ``wakeup`` is readable, or the deadline;
        return the readable ones (``wakeup`` included if it fired). Poll without sleeping
        for up to ``spin`` seconds first, while such spins pay (``_spin``)."""
        objs = (*streams, wakeup)
        if objs != self._objs:
            poll = select.poll()
            by_fd: dict[int, HasFileno] = {}
            for obj in objs:
                fd = obj.fileno()
                if fd < 0:
                    # Closed since it was lent: its pipe died in another owner's section
                    # (the caller took the streams without the session lock). Reported
                    # ready, not polled (poll() refuses -1): the read finds the pipe dead.
                    return {obj}
                by_fd[fd] = obj
                poll.register(fd, select.POLLIN)
            self._objs, self._poll, self._by_fd = objs, poll, by_fd
        events = None  # what the spin caught, if it ran and did
        if spin and SPIN_CPUS:
            if self._skip:
                self._skip -= 1
            elif _now() - self._last <= SPIN_GAP:
                events = self._spin(spin, deadline)
        if events is None:  # asleep
            if deadline is None:
                events = self._poll.poll()
            else:
                # poll() takes milliseconds; round up so that a wait never ends before the
                # deadline. At most LONGEST_SLEEP: the caller polls again until its deadline.
                left = min(deadline - time.monotonic(), LONGEST_SLEEP)
                events = self._poll.poll(max(0, int(left * 1000) + 1))
        self._last = _now()
        by_fd = self._by_fd
        if len(events) == 1:  # the usual wake-up: no comprehension (a frame of its own)
            return {by_fd[events[0][0]]}
        return {by_fd[fd] for fd, _ in events}

    def _spin(self, spin: float, deadline: float | None) -> list[tuple[int, int]] | None:
        """Poll without sleeping for up to ``spin`` seconds (see SPIN_CHEAP), not past
        ``deadline``, nor once the I/O thread has work (it needs the interpreter lock
        this thread keeps taking). What came, [] at the deadline, or None: the spin
        missed (or gave way to the I/O thread: a miss too), and the wait goes on asleep."""
        poll, now = self._poll.poll, _now
        events = poll(0)
        if events:  # there already: no spin, no verdict
            return events
        start = now()
        end = start + spin
        if deadline is not None and deadline < end:
            end = deadline
        loop = self._loop
        while True:
            _yield()
            events = poll(0)
            if events:
                credit = self._credit + SPIN_CHEAP - (now() - start)
                if credit >= SPIN_CREDIT:  # paying for a while: every wait spins
                    self._credit, self._backoff = SPIN_CREDIT, 1
                elif credit < 0:
                    self._skip_next()
                else:
                    self._credit = credit
                return events
            at = now()
            if at >= end:
                if deadline is not None and at >= deadline:
                    return []
                break
            if loop is not None and not loop.sleeping:
                break
        self._skip_next()
        return None

    def _skip_next(self) -> None:
        """A verdict against spinning: the next ``_backoff`` waits sleep at once, the run
        that the next such verdict starts is twice as long, and the spin after this run
        starts with SPIN_PROBE of credit."""
        self._skip, self._credit = self._backoff, SPIN_PROBE
        self._backoff = min(2 * self._backoff, SPIN_SKIP_MAX)
