"""The channel between user threads and the I/O thread: the only place with locks.

The seed's facade talks to the backend through a Request/Reply channel and waits for a
reply per call. Measured here, that round trip costs 7-47 µs a message (docs/ARCHITECTURE.md,
"One owner at a time"), so data does not take it:

- ``put`` (send) takes one unit of *send credit* and appends to ``outbox``; it wakes the
  I/O thread only when the outbox was empty, and the loop itself writes its wake-up byte
  only when idle. A lone send skips the outbox: the caller's thread runs it at once
  (``send_now``). It waits only when it has no credit: the backend grants credit as pipes
  can take messages, so a PUSH with no ready peer still blocks until its send timeout.
  Credit has two parts, messages and bytes: a message needs one message credit and a
  positive byte credit, and uses its size in bytes (the last one may overdraw). So a burst
  of 1 MiB sends blocks once the pipes hold a few MiB, instead of queueing hundreds.
- ``get`` (recv) pops from ``inbox``, which the I/O thread fills; it waits only when the
  inbox is empty.

Gathering. A sender that outruns its pipes uses up its credit and waits; the I/O thread
drains the outbox, makes room and grants credit again. Were the sender's next message to
wake the I/O thread as usual, that thread (on the sender's core, as the bench pins them)
would take over at once and drain it alone, then the next one, one wake-up of tens of µs a
message, until it happened to be busy when the sender posted: five to six single-message
drains in each window of 512 messages, 30 % of a 64-byte PUSH burst's time. So a grant
that wakes a sender of a burst waiting for credit (in ``put``, or as a watcher: an
``asend``, a poll for POLLOUT) starts a *gathering* (its ``gatherer``, the backend, arms a
timer of ``GATHER`` seconds that ends it): the burst's first message posts its drain
quietly (the I/O thread runs it at its next turn, not woken for it), and the messages behind
it join that drain. The sender wakes the I/O thread when it runs out of credit again
(``gatherer.nudge``), and the timer bounds how long the last messages of a burst that stops wait
for the I/O thread's next turn. A lone send (quiet, or after a wait for a message) still goes
at once. A quiet post keeps its place among the loop's posts, so a ``close()`` or any
control request made after it still runs after the drain.

Backpressure on receive: when the inbox holds ``recv_high`` messages or ``recv_high_bytes``
bytes the backend stops reading its pipes (TCP then pushes back on the peers); the first
``get`` that brings both down to half asks the backend to resume.

Control requests (bind, connect, close, ...) are real request/reply calls: see
``Session.call``.

Every lock section here is a ``with`` block, although ``acquire()``, ``try`` and
``release()`` cost half as much on CPython 3.11 (0.10 against 0.19 µs a section): with the
latter, a Ctrl-C that arrives as ``acquire()`` returns raises before the ``try`` and leaves
the lock held for ever, and every thread of the socket then hangs. Measured with SIGINTs
sent at a thread looping on such sections: about a third of the interrupts left the lock
held that way; with ``with``, none.

A burst's send takes no lock at all. Once a drain is posted, every ``put`` that finds
credit only takes it and appends to the outbox, which the lock would guard against the
I/O thread's ``take_outbox`` and ``grant`` and against the other senders. Without it that
step is one run of bytecode with no call in it between its first look at the channel and
the outbox's ``append``: CPython hands the interpreter lock to another thread only where
it also runs signal handlers (a call, a jump backwards, a function's start), so no other
thread sees the step half done, as none sees half of ``take_outbox``'s swap (written with
no call in it either). A lock section a message was the largest cost of a burst's
``send()``: without it, 64-byte PUSH->PULL over TCP went from 0.98 to 1.32 M messages a
second, in-process from 690 to 845 k (docs/ARCHITECTURE.md, "One owner at a time",
*a burst without the lock*). An interpreter without that lock (a free-threaded build)
takes the locked way (``LOCKLESS_BURST``).

A receive that finds a message queued takes it without the lock too (``take``): one look
at the inbox's ``head`` and the pop, with no call between them, so two receivers never pop
the same item, nor one an empty queue; the inbox's count and bytes fall in steps with no
call between their read and their write. What the other side must keep for this is in
core/inbox.py: the I/O thread counts items before it queues them, and once items of more
than one priority are queued (nanomsg's ``NN_RCVPRIO``), a pop may have to move the
inbox's head and receives take the lock again until it empties. Every receive under the
lock pops with the same step (``_pop``), and one that finds nothing after all, taken from
under it, waits again. In one process, the I/O thread delivered under the lock a receiver
had been switched out in; without it, 64-byte PUSH->PULL in-process went from 0.73-0.83 to
1.05-1.10 M messages a second, the receiving thread's CPU from 0.58 to 0.29 µs a message
(docs/ARCHITECTURE.md, "One owner at a time", *a receive without the lock*).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from scaproust.core.condition import Condition
from scaproust.core.inbox import DEFAULT_PRIORITY, Inbox
from scaproust.errors import Closed, Timeout, WouldBlock

if TYPE_CHECKING:
    from typing import Protocol

    from scaproust.core.caller_reader import CallerReader
    from scaproust.core.message import Item
    from scaproust.reactor.wakeup import Wakeup

    class Gatherer(Protocol):
        """What a gathering asks of the backend ("Gathering" above)."""

        def gather(self) -> None:
            """Arm (again) the timer whose ``end_gathering`` ends the gathering, from now
            (owner's thread)."""

        def post_quietly(self) -> None:
            """Post the drain without waking the I/O thread."""

        def nudge(self) -> None:
            """Wake the I/O thread, if it sleeps, for that drain."""

    class Watcher(Protocol):
        """What a poller registers in a channel: a ``threading.Event``, or an asyncio
        task's waker (facade/aio.py). ``set()`` runs under the channel's lock."""

        def set(self) -> None: ...

#: Credit that never runs out, for protocols whose send never blocks (pub, bus, rep).
UNBOUNDED = 1 << 60

#: A send goes at once, in the caller's thread, if the socket's sends had been quiet this
#: long, or its caller waited for a message since (``put``). Sends closer together than
#: this are a burst, and batching them in the I/O thread beats writing each: measured
#: here, 64-byte PUSH messages went at 70 k msg/s written one by one from the caller's
#: thread, 400-450 k msg/s handed to the I/O thread.
DIRECT_SPACING = 50e-6

#: Whether a burst's ``put`` may skip the lock (the module's docstring): only where one
#: interpreter lock runs every thread's Python (``sys._is_gil_enabled``, 3.13 on, says
#: whether it does; before 3.13 it always does).
LOCKLESS_BURST: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

#: Whether a receive that finds a message queued may take it without the lock (the
#: module's docstring): on the same condition.
LOCKLESS_TAKE: bool = LOCKLESS_BURST

#: How long a burst's drain may gather after a grant woke its sender ("Gathering" above):
#: the most the last messages of a burst that stops wait for the I/O thread. A steady burst
#: never waits for it: its sender wakes the I/O thread as it runs out of credit again, the
#: 512 messages of a window (64 bytes each) taking 0.2-0.4 ms to post here.
GATHER = 500e-6

#: The bytes of received messages the inbox holds before the backend stops reading its
#: pipes (with ``recv_high`` messages, whichever comes first). Small on purpose: past it,
#: the kernel's socket buffer holds what the peer sent (TCP pushes back from there), where
#: a deeper inbox only holds more large bodies alive at once. Those bodies are fresh
#: ``bytes`` objects; with several of them freed at a time, glibc gives the top of its heap
#: back to the kernel and the next bodies fault their pages in again. Measured with 1 MiB
#: messages between two scaproust processes (PUSH -> PULL over TCP): at 8 MiB the
#: receiver's I/O thread took 11-19 page faults a message and 3.2-5.0 GB/s, run to run;
#: at 2 MiB, 0.2 faults and 5.7-6.0 GB/s (docs/ARCHITECTURE.md, "One owner at a time",
#: the channel's ``recv``).
RECV_HIGH_BYTES = 2 * 1024 * 1024


class Channel:
    """Queues and credit shared by a facade socket and its backend ``SocketCore``."""

    # Slots: CPython 3.11 keeps an object's attributes inline, in its fastest form, only up
    # to 29 of them; past that every attribute access costs about 15 % more (11 -> 12.7
    # ns, measured), and this class has more. A slot costs 11.5. ``__dict__`` stays for
    # what tests set on a channel.
    __slots__ = ("_lock", "_can_send", "_can_recv", "_wake_backend", "_post_backend",
                 "_resume_reading", "_notify_later", "recv_high", "recv_high_bytes",
                 "inbox_bytes", "credit", "credit_bytes", "outbox", "inbox", "closed",
                 "recv_paused", "_drain_posted", "_gathering", "outran", "gatherer",
                 "watchers", "reader", "loans", "reader_waiting",
                 "reader_wakeup", "catching", "caught", "send_now", "last_put",
                 "recv_waiters", "send_waiters", "recv_sleepers", "__dict__")

    def __init__(self, *, wake_backend: Callable[[], None], resume_reading: Callable[[], None],
                 recv_high: int = 1024, recv_high_bytes: int = RECV_HIGH_BYTES,
                 post_backend: Callable[[], object] | None = None,
                 notify_later: Callable[[Condition, int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._can_send = Condition(self._lock)
        self._can_recv = Condition(self._lock)
        self._wake_backend = wake_backend
        #: Hands the drain to the I/O thread, never raising: what ``put`` does when an
        #: interrupt stopped it between posting the drain and waking anyone for it.
        self._post_backend = post_backend or wake_backend
        self._resume_reading = resume_reading
        #: How the backend wakes a sleeping receiver or sender (lock held): the session's
        #: ``Loop.notify_after_release``, which wakes it once the owner's section ends,
        #: holding no lock (core/condition.py says why); by default at once.
        self._notify_later = notify_later or Condition.notify
        self.recv_high = recv_high
        self.recv_high_bytes = recv_high_bytes
        self.inbox_bytes = 0
        self.credit = 0
        # Unbounded until a protocol states a byte capacity (Context.set_send_capacity).
        self.credit_bytes = UNBOUNDED
        self.outbox: deque[Item] = deque()
        self.inbox = Inbox()
        self.closed = False
        self.recv_paused = False
        self._drain_posted = False
        #: A grant woke a waiting sender: its burst's drain is posted quietly ("Gathering").
        self._gathering = False
        #: A send of a burst (within DIRECT_SPACING of the one before) ran out of credit:
        #: the grant that wakes it starts a gathering, and clears this.
        self.outran = False
        #: Set by the backend (SocketCore): what a gathering asks of it. None (a context's
        #: channel): no gathering.
        self.gatherer: Gatherer | None = None
        # Pollers waiting on this channel (threading.Event): set when it may have become
        # readable, writable or closed. Usually empty, so the cost is one truth test.
        self.watchers: set[Watcher] = set()
        #: Set by the backend: a ``CallerReader`` that reads the
        #: socket's pipes in the caller's thread while it waits.
        self.reader: CallerReader | None = None
        #: Set by the backend: the ``CallerReader`` (the socket's, for a context's channel
        #: too) whose loan kept between two waits of ``reader`` must go back to the I/O
        #: thread before this channel is looked at or waited on otherwise.
        self.loans: CallerReader | None = None
        #: A caller's thread sleeps in poll() on the socket's pipes and ``reader_wakeup``
        #: (a ``Wakeup``): whoever delivers or closes must wake it.
        self.reader_waiting = False
        self.reader_wakeup: Wakeup | None = None
        #: A caller's thread reading the pipes itself catches what it delivers to itself
        #: (``catch``): while ``catching`` (set by that thread, owning the session, around
        #: its reads: no other thread delivers meanwhile), a lone message for an empty
        #: inbox is left in ``caught`` instead, and the same receive returns it. The inbox's
        #: lock section and queue steps, both ways, cost a tenth of a receive.
        self.catching = False
        self.caught: Item | None = None
        #: Set by the backend (SocketCore._send_now): runs a lone send in the caller's
        #: thread, given the hand ``put`` holds it in and its size; False, the message
        #: still in hand, if it cannot own the session now. None (a context's channel):
        #: every message goes through the outbox.
        self.send_now: Callable[[list[Item], int], bool] | None = None
        #: When the last put() began (or a send run in the caller's thread ended): ``put``
        #: tells a lone send (write it at once) from one in a burst (let the I/O thread
        #: batch) by how long the channel has been quiet since.
        self.last_put = float("-inf")
        #: Threads blocked in get() and in put() right now: nobody to notify without them
        #: (a notify costs more than the rest of a delivery); tests read them too. A
        #: receive that reads the socket's pipes itself (``reader``) is not counted while
        #: it does: ``recv_waiters`` counts those that wait for others to deliver, which
        #: is what a reading caller asks before it keeps its loan (CallerReader._end), and
        #: the message such a caller reads leaves without a lock section.
        self.recv_waiters = 0
        self.send_waiters = 0
        #: Of the recv_waiters, those asleep on the condition right now: the only ones a
        #: delivery notifies (the others look at the inbox, under the lock, before they
        #: sleep; the usual one is the very thread that reads and delivers).
        self.recv_sleepers = 0

    # ------------------------------------------------------------------ user threads

    def put(self, item: Item, timeout: float | None) -> None:
        """Queue ``item`` for the backend; wait up to ``timeout`` s for credit (None: forever,
        0: never wait).

        A lone send (nothing queued, nothing posted, and the caller either waited for a
        message since its last send or the sends have been quiet for ``DIRECT_SPACING``)
        is not queued at all: it stays in this thread's hand (a one-item list) and
        ``send_now`` (set by the backend) runs it at once, in this thread, if it can own
        the session within its bound. The outbox's append, its take back under the lock
        and a new deque cost 0.4-0.7 µs of a ``send()``'s 8-11 (PAIR, REQ, REP, one side
        measured against a bare peer)."""
        now = time.monotonic()
        # The size first, before anything is taken: from the first look at the channel
        # below to the append, no call, so nothing (a Ctrl-C included) comes between.
        size = len(item)
        if (self._drain_posted and self.credit > 0 and self.credit_bytes > 0
                and not self.closed and LOCKLESS_BURST):
            # A burst, its drain posted: the lock's section below without the lock (the
            # module's docstring). No call from the first look above to the append: no
            # other thread runs in between. The drain posted takes what is appended.
            self.credit -= 1
            self.credit_bytes -= size
            self.last_put = now
            self.outbox.append(item)
            return
        posted = woken = False
        hand: list[Item] | None = None
        try:
            with self._lock:
                if self.closed:
                    raise Closed("socket is closed")
                if self.credit <= 0 or self.credit_bytes <= 0:
                    if now - self.last_put < DIRECT_SPACING:
                        self.outran = True  # a burst, not a lone send waiting for a peer
                    if self._gathering and self._drain_posted:
                        self._wake_gathered()
                    self.send_waiters += 1
                    try:
                        self._wait(self._can_send, self._has_credit, timeout, "send")
                    finally:
                        self.send_waiters -= 1
                self.credit -= 1
                self.credit_bytes -= size
                quiet = now - self.last_put
                self.last_put = now
                if self._drain_posted:
                    self.outbox.append(item)
                    return
                reader = self.reader
                if (self.send_now is not None and not self.outbox
                        and (quiet >= DIRECT_SPACING or reader is not None and reader.waited)):
                    hand = [item]
                else:
                    self.outbox.append(item)
                    self._drain_posted = True
                    posted = True  # no call in between: a Ctrl-C cannot come between the two
                    if self._gathering:
                        # Under the lock: the timer's end_gathering, which takes it, comes
                        # either before (and this wakes the I/O thread as usual) or after
                        # the post is queued (and the loop sees it before it sleeps again).
                        # Posted after the lock, it could follow a gathering's end and
                        # wait in a sleeping loop that nothing wakes.
                        assert self.gatherer is not None  # a gathering starts only with it
                        self.gatherer.post_quietly()
                        woken = True
                        return
            if hand is not None:
                assert self.send_now is not None  # tested above, and never unset
                if self.send_now(hand, size):
                    return
                with self._lock:  # it could not own the session: the I/O thread sends it
                    # In place, then the hand emptied: neither step is a call, so no Ctrl-C
                    # comes between them (Python checks for one at calls and loops). Not
                    # _hand_over: a Ctrl-C as it returned would leave the drain marked
                    # posted with ``posted`` unset here, and nobody woken for it.
                    self.outbox += hand
                    hand = None
                    if self._drain_posted:
                        return
                    self._drain_posted = True
                    posted = True
            self._wake_backend()
            woken = True
        except BaseException:
            # Interrupted (a Ctrl-C) after the drain was marked posted and before anyone was
            # woken for it: without this, the outbox would wait for ever, every later put
            # seeing the drain posted. A drain too many finds the outbox empty. A message
            # still in this thread's hand (send_now did not take it) is queued for the I/O
            # thread the same way.
            if hand:
                self._hand_over(hand)
            elif posted and not woken:
                self._post_backend()
            raise

    def wait_for_credit(self, timeout: float | None, deadline: float | None) -> None:
        """Wait until a ``put`` would find credit, taking none: for a sender that puts
        without waiting (``policy.send_in_order``). ``timeout`` (None: forever) names the
        wait in its ``Timeout``; ``deadline`` (monotonic) ends it."""
        with self._lock:
            if self.closed:
                raise Closed("socket is closed")
            if not self._has_credit():
                if self._gathering and self._drain_posted:
                    self._wake_gathered()
                self.send_waiters += 1
                try:
                    self._wait(self._can_send, self._has_credit, timeout, "send", deadline)
                finally:
                    self.send_waiters -= 1

    def _wake_gathered(self) -> None:
        """Out of credit (lock held): wake the I/O thread for the drain the gathering posted
        quietly, rather than wait for its timer. The drain's grant starts the next one."""
        assert self.gatherer is not None  # a gathering starts only with it
        self.gatherer.nudge()

    def _hand_over(self, hand: list[Item]) -> None:
        """Queue what ``put`` still has in hand, and post a drain unless one is posted."""
        with self._lock:
            self.outbox += hand
            hand.clear()
            post = not self._drain_posted
            self._drain_posted = True
        if post:
            self._post_backend()

    def get(self, timeout: float | None) -> Item:
        """Take the next received item; wait up to ``timeout`` s for one.

        While it waits, the caller's thread reads the socket's pipes itself when it can
        (``reader``, set by the backend), so a message needs no handoff from the I/O
        thread; otherwise, or when another thread already reads them, it waits for the I/O
        thread to deliver.
        """
        if timeout is not None and timeout <= 0 and not self.inbox.count:
            self.take_back_loan()  # what the kernel holds, found without a wait
        resume = False
        try:
            with self._lock:
                item: Item | None
                popped = self._pop()
                if popped is not None:
                    item, resume = popped
                elif self.closed:
                    raise Closed("socket is closed")
                elif timeout is not None and timeout <= 0:
                    raise WouldBlock("recv would block")
                else:
                    item = None
                    reader = self.reader
                    # Counted now unless it will read the pipes itself (a hint:
                    # _wait_for_item counts it later if it cannot).
                    counted = reader is None or not reader.lendable
                    if counted:
                        self.recv_waiters += 1
            if item is None:
                item, resume = self._wait_for_item(timeout, counted)
            if resume:
                self._resume_reading()
        except BaseException:
            self._resume_anyway(resume)
            raise
        return item

    def get_unless(self, timeout: float | None, stopped: Callable[[], bool]) -> Item:
        """``get`` for a context that shares this channel with its socket (REP,
        RESPONDENT): it also ends, raising ``Closed``, once ``stopped()`` holds (its context
        was closed; ``kick`` wakes it). It waits on the channel only: the pipes are read by
        the I/O thread, or by a caller of the socket's own ``get``."""
        resume = False
        try:
            with self._lock:
                if stopped():
                    raise Closed("context is closed")
                item: Item | None
                popped = self._pop()
                if popped is not None:
                    item, resume = popped
                elif self.closed:
                    raise Closed("socket is closed")
                else:
                    item = None
                    self.recv_waiters += 1
            if item is None:
                try:
                    # Counted first: a get() ending its wait now either sees this one and
                    # keeps no loan, or kept it already and this takes it back
                    # (CallerReader._end).
                    self.take_back_loan()
                    deadline = None if timeout is None else time.monotonic() + timeout
                    with self._lock:
                        while popped is None:  # a receive without the lock may take first
                            self._wait(self._can_recv, lambda: self.inbox or stopped(),
                                       timeout, "recv", deadline)
                            if stopped():
                                raise Closed("context was closed while waiting")
                            popped = self._pop()
                        item, resume = popped
                finally:
                    with self._lock:
                        self.recv_waiters -= 1
            if resume:
                self._resume_reading()
        except BaseException:
            self._resume_anyway(resume)
            raise
        return item

    def kick(self) -> None:
        """Wake every receiver and poller of this channel to look again (a context that
        shares it was closed)."""
        with self._lock:
            self._can_recv.notify_all()
            self._wake_watchers()

    def take(self) -> Item | None:
        """The next received item if one is queued now, else None (never waits, never
        raises): the fast path of a receive that finds a message waiting."""
        inbox = self.inbox
        if not inbox.count:
            # Nothing queued, told without the lock (one read of an int, never below what
            # is queued: core/inbox.py): every receive that must wait comes here first. An
            # item pushed just now is found by the caller's next step, which looks again
            # under the lock.
            return None
        head = inbox.head
        if head and not inbox.mixed and LOCKLESS_TAKE:
            # A receive without the lock (the module's docstring): no call from the first
            # look to the pop, so no other thread runs in between.
            inbox.count -= 1
            try:
                item = head.popleft()
                size = len(item)
                self.inbox_bytes -= size  # no call from the read to the write
                if not inbox.count and self.reader is not None:
                    self.reader.waited = True  # the last one: see _pop
                if self.recv_paused and inbox.count <= self.recv_high // 2:
                    # Reading paused (before this took, or as it did), and the count down
                    # to half: whether it resumes is told under the lock, bytes and all.
                    # Read after this receive's own updates, so the last receive of a
                    # paused inbox always gets here. Above half, a burst's receives take
                    # no lock: half of them find reading paused.
                    self._resume_if_due()
            except BaseException:
                # An interrupt as the pop or the sizing returned: the message is lost (as
                # from a queue.Queue.get() interrupted there), reading does not stay
                # paused for it.
                self._resume_anyway(False)
                raise
            return item
        resume = False
        try:
            with self._lock:
                popped = self._pop()
                if popped is None:
                    return None
                item, resume = popped
            if resume:
                self._resume_reading()
        except BaseException:
            self._resume_anyway(resume)
            raise
        return item

    def _resume_if_due(self) -> None:
        """Resume reading if it is paused and the inbox is down to half its limits."""
        resume = False
        try:
            with self._lock:
                resume = (self.recv_paused and self.inbox.count <= self.recv_high // 2
                          and self._resume_due())
            if resume:
                self._resume_reading()
        except BaseException:
            if resume:  # not _resume_anyway: that comes back here while paused
                self._resume_reading()
            raise

    def take_many(self, limit: int) -> list[Item]:
        """``take`` for up to ``limit`` items in one lock section: what is queued now, an
        empty list if nothing is."""
        resume = False
        try:
            with self._lock:
                inbox = self.inbox
                if not inbox.count:
                    return []
                items = inbox.take(limit)
                size = sum(map(len, items))
                self.inbox_bytes -= size  # no call from the read to the write
                resume = (self.recv_paused and inbox.count <= self.recv_high // 2
                          and self._resume_due())
            if resume:
                self._resume_reading()
        except BaseException:
            self._resume_anyway(resume)
            raise
        return items

    def _wait_for_item(self, timeout: float | None, counted: bool) -> tuple[Item, bool]:
        """``get`` once the inbox was found empty; ``counted``: this thread is counted in
        ``recv_waiters`` (uncounted on the way out, in the lock sections it takes anyway).
        Reading the pipes itself, it needs not be; waiting for others to deliver, it is
        counted first."""
        popped: tuple[Item, bool] | None = None  # what an interrupt must not lose: see below
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            reader = self.reader
            # ``lendable`` first, as reader.wait does: an in-process socket's pipes never
            # are, and its receive then goes straight to the condition below.
            while reader is not None and reader.lendable and reader.wait(deadline):
                item = self.caught
                if item is not None:  # the message this thread read (see ``caught``)
                    if counted:  # lendable since get() looked
                        with self._lock:
                            self.recv_waiters -= 1
                            counted = False
                            self.caught = None
                    else:
                        # Set by this thread's own reads only: taken without the lock (no
                        # call between here and the return, where an interrupt could land
                        # with the message neither returned nor put back).
                        self.caught = None
                    return item, False
                with self._lock:
                    popped = self._pop()
                    if popped is not None:
                        if counted:
                            self.recv_waiters -= 1
                            counted = False
                        return popped
                    if self.closed:
                        raise Closed("socket was closed while waiting")
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"recv timed out after {timeout} s")
            if not counted:
                # Waiting for others to deliver from here: counted before a kept loan is
                # taken back (CallerReader._end looks for such waiters after it keeps one).
                with self._lock:
                    self.recv_waiters += 1
                    counted = True
            loans = self.loans  # take_back_loan, inline: there is seldom a loan kept here
            if loans is not None and loans.kept is not None and not self.inbox.count:
                loans.take_back()  # no pipes borrowed here: the I/O thread must read
            with self._lock:
                popped = self._pop()
                if popped is None:
                    if reader is not None:
                        # Waited for a message: the next send likely answers it (see
                        # CallerReader.waited), even if the pipes could not be lent.
                        reader.waited = True
                    # _wait's loop, inline: every receive of an in-process socket comes
                    # here, its sleep the hand-off itself. Until it pops: a receive without
                    # the lock (take) may take what woke it.
                    while popped is None:
                        left = self._time_left(deadline, timeout, "recv")
                        self.recv_sleepers += 1
                        try:
                            self._can_recv.wait(left)
                        finally:
                            self.recv_sleepers -= 1
                        popped = self._pop()
                self.recv_waiters -= 1
                counted = False
                return popped
        except BaseException:
            # An interrupt as the lock was let go, the item popped: if reading was to
            # resume, it does; or, interrupted before it was told, it is told (see
            # _resume_anyway; the item itself is lost, as an item a queue.Queue.get()
            # interrupted there).
            self._resume_anyway(popped is not None and popped[1])
            raise
        finally:
            if self.caught is not None:
                # Interrupted (a Ctrl-C) after its own thread caught a message and before
                # it was returned: it goes to the front of the inbox, lost to nobody.
                self._uncatch()
            if counted:
                with self._lock:
                    self.recv_waiters -= 1

    def _uncatch(self) -> None:
        """Put ``caught`` back in front of the inbox (its thread will not return it)."""
        with self._lock:
            item, self.caught = self.caught, None
            if item is not None:
                self._put_back_locked(item)

    def put_back(self, item: Item) -> None:
        """Put ``item``, taken by a receive it was not for, back in front of the inbox (a
        REQ context's reply to the request being sent: protocols/req.py, ReqContextPolicy)."""
        with self._lock:
            self._put_back_locked(item)
            self._wake_watchers()

    def _put_back_locked(self, item: Item) -> None:
        size = len(item)
        self.inbox_bytes += size  # no call from the read to the write (see take)
        self.inbox.push_front(item)
        if self.recv_sleepers:
            self._can_recv.notify()

    def _pop(self) -> tuple[Item, bool] | None:
        """The next item and whether reading must resume, None if nothing is queued
        (channel lock held). Told from ``head``, in the step that pops: a receive without
        the lock (``take``) may have taken the last item since the caller looked."""
        # Inbox.popleft's steps, inline: every receive that waited pops here.
        inbox = self.inbox
        head = inbox.head
        if not head:
            return None
        inbox.count -= 1  # no call from the look to the pop (core/inbox.py)
        item = head.popleft()
        if not head:
            if inbox.mixed:
                inbox.advance()
            if not inbox.count and self.reader is not None:
                # The last one queued: the caller keeps up with its peer, and its next send
                # likely answers this message, as after a wait (``put``,
                # CallerReader.waited). In-process, the answer to a send often arrives
                # before the sender's recv() (the peer ran as the send woke it), which
                # then finds it without waiting.
                self.reader.waited = True
        size = len(item)
        self.inbox_bytes -= size  # no call from the read to the write (see take)
        # While paused, most pops leave more than half queued: one comparison, no call.
        return item, (self.recv_paused and inbox.count <= self.recv_high // 2
                      and self._resume_due())

    def _resume_due(self) -> bool:
        """Reading is paused and the inbox is down to half its message limit: whether its
        bytes are down to half theirs too, so that reading must resume (then no longer
        paused); channel lock held."""
        if self.inbox_bytes <= self.recv_high_bytes // 2:  # the count is checked by _pop
            self.recv_paused = False
            return True
        return False

    def _has_credit(self) -> bool:
        return self.credit > 0 and self.credit_bytes > 0

    def _wait(self, cond: Condition, ready: Callable[[], object],
              timeout: float | None, what: str,
              deadline: float | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise WouldBlock(f"{what} would block")
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        receiver = cond is self._can_recv
        while not ready():
            left = self._time_left(deadline, timeout, what)
            if receiver:
                self.recv_sleepers += 1
            try:
                cond.wait(left)
            finally:
                if receiver:
                    self.recv_sleepers -= 1

    def _time_left(self, deadline: float | None, timeout: float | None, what: str,
                   ) -> float | None:
        """Before one more sleep of a wait (lock held): the seconds left until ``deadline``
        (None: no limit); ``Closed`` if the channel closed, ``Timeout`` if none are left."""
        if self.closed:
            raise Closed("socket was closed while waiting")
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"{what} timed out after {timeout} s")
        return left

    # ------------------------------------------------------------------ I/O thread

    def take_outbox(self) -> deque[Item]:
        """Everything queued by ``put`` since the last call."""
        fresh: deque[Item] = deque()
        with self._lock:
            # No call from here to the flag: a burst's put, which takes no lock, sees the
            # old outbox with the drain posted, or the new one without (then it posts).
            batch = self.outbox
            self.outbox = fresh
            self._drain_posted = False
        return batch

    def requeue(self, items: Iterable[Item]) -> None:
        """Put back, in front and in order, what ``take_outbox`` took and nothing drained."""
        with self._lock:
            self.outbox.extendleft(reversed(list(items)))

    def grant(self, n: int, nbytes: int = 0) -> None:
        """Give ``n`` more message credits and ``nbytes`` more byte credit."""
        with self._lock:
            self.credit += n
            self.credit_bytes += nbytes
            if self.credit > 0 and self.credit_bytes > 0:  # _has_credit, inline
                if (self.outran and (self.send_waiters or self.watchers)
                        and self.gatherer is not None and not self._drain_posted):
                    # The burst of the sender that waits (in put, or in a poll or an
                    # asend: a watcher) gathers ("Gathering"): the timer first, so that an
                    # interrupt between the two never leaves one without it.
                    self.gatherer.gather()
                    self._gathering = True
                    self.outran = False
                if self.send_waiters:
                    self._notify_later(self._can_send, max(n, 1))
                if self.watchers:
                    self._wake_watchers()

    def end_gathering(self) -> None:
        """The gathering's timer (I/O thread): from now on a burst's drain wakes the I/O
        thread again. One posted quietly before this runs at the loop's next turn."""
        with self._lock:
            self._gathering = False

    def revoke(self, n: int, nbytes: int = 0) -> tuple[int, int]:
        """Take back up to ``n`` unused message credits and ``nbytes`` of unused byte credit;
        return how much of each was taken."""
        with self._lock:
            # Comparisons, not min() and max(): a burst's put takes credit without the
            # lock, and a call between reading the credit and writing it back would let one
            # run in between, its credit taken back too.
            credit, credit_bytes = self.credit, self.credit_bytes
            taken = n if n <= credit else credit  # never below 0: sends wait at 0
            taken_bytes = nbytes if nbytes <= credit_bytes else (
                credit_bytes if credit_bytes > 0 else 0)
            self.credit = credit - taken
            self.credit_bytes = credit_bytes - taken_bytes
        return taken, taken_bytes

    def push_many(self, items: Sequence[Item], priority: int = DEFAULT_PRIORITY) -> int:
        """Queue received items for ``get``; return their size in bytes."""
        if self.catching and len(items) == 1 and not self.inbox.count:
            self.catching = False  # one only: what comes behind it queues as usual
            self.caught = item = items[0]
            return len(item)
        size = len(items[0]) if len(items) == 1 else sum(map(len, items))
        with self._lock:
            # The bytes first, as the count (core/inbox.py): a receive without the lock may
            # take the items as soon as they are queued.
            self.inbox_bytes += size
            self.inbox.extend(items, priority)
            if self.inbox.count >= self.recv_high or self.inbox_bytes >= self.recv_high_bytes:
                self.recv_paused = True
            if self.recv_sleepers:
                self._notify_later(self._can_recv, len(items))
            if self.watchers:
                self._wake_watchers()
            if self.reader_waiting:
                self._wake_reader_locked()
        return size

    def drop_oldest(self) -> bool:
        """Drop the next item ``get`` would return (a SUB context's full queue that prefers
        new messages); False if the inbox is empty."""
        with self._lock:
            item = self.inbox.popleft()
            if item is None:
                return False
            size = len(item)
            self.inbox_bytes -= size  # no call from the read to the write (see take)
        return True

    def purge_inbox(self, keep: Callable[[Item], bool] | None = None) -> int:
        """Drop every received message not yet taken (a REQ's new request makes older
        replies stale), except those ``keep(item)`` wants kept; return how many."""
        resume = False
        try:
            with self._lock:
                inbox = self.inbox
                # A copy to look through: a receive without the lock may pop meanwhile.
                if (keep is not None and len(queued := list(inbox.head)) == inbox.count
                        and all(map(keep, queued))):
                    # Everything queued stays (a REQ's reply to the request just sent,
                    # already there when its send ends: in-process, the peer answered as
                    # the send woke it): nothing to take apart.
                    return 0
                dropped = inbox.drain()
                size = sum(map(len, dropped))
                self.inbox_bytes -= size  # what left, as each receive subtracts its own
                if keep is not None:
                    kept = [item for item in dropped if keep(item)]
                    if kept:
                        size = sum(map(len, kept))
                        self.inbox_bytes += size
                        self.inbox.extend(kept)
                        dropped = [item for item in dropped if not keep(item)]
                resume, self.recv_paused = self.recv_paused, False
            if resume:  # reading stopped on a full queue that is now empty: start again
                self._resume_reading()
        except BaseException:
            self._resume_anyway(resume)
            raise
        return len(dropped)

    def _resume_anyway(self, resume: bool) -> None:
        """What a receive does when an interrupt (a Ctrl-C) raises out of it: if it had
        found reading must resume (``recv_paused`` cleared, under the lock), it asks the
        backend again. The interrupt may have landed before the backend was asked, as the
        lock was let go or as the call began: no later receive would ask (the flag is
        clear), and the paused pipes would never read again. Asked twice, the backend
        resumes pipes that read already: nothing.

        And if it had not got as far as telling (the interrupt came as it popped or sized
        its message), it tells now: with reading paused and the inbox down to half, no
        later receive may come to tell (the inbox may be empty), and the next one would
        wait for ever on pipes that no longer read."""
        if resume:
            self._resume_reading()
        elif self.recv_paused:
            self._resume_if_due()

    # ------------------------------------------------------------------ polling

    def readiness(self) -> tuple[bool, bool]:
        """(a recv would not wait, a send would not wait) right now; a closed channel
        is both, so that a poller returns and the call raises ``Closed``."""
        with self._lock:
            if self.closed:
                return True, True
            return bool(self.inbox), self._has_credit()

    def take_back_loan(self) -> bool:
        """Before a receive or a poll that does not read the pipes itself looks at the
        inbox: the loan a waiting ``get`` kept for the next one goes back to the I/O thread,
        once what the kernel holds for it is read (``CallerReader.take_back``), so nothing
        stays unread while nobody waits in ``get``. True if there was one. Not with the
        channel lock held (this takes the session lock)."""
        loans = self.loans
        if loans is None or loans.kept is None:
            return False
        loans.take_back()
        return True

    def add_watcher(self, event: Watcher) -> None:
        with self._lock:
            self.watchers.add(event)
        # Added first: a get() ending its wait now either sees this watcher and keeps no
        # loan, or kept it already and this takes it back (CallerReader._end).
        self.take_back_loan()

    def remove_watcher(self, event: Watcher) -> None:
        with self._lock:
            self.watchers.discard(event)

    def _wake_watchers(self) -> None:
        for event in self.watchers:
            event.set()

    def close(self) -> None:
        """Wake every waiter with ``Closed``; what is already in the inbox stays readable."""
        with self._lock:
            self.closed = True
            self._can_send.notify_all()
            self._can_recv.notify_all()
            self._wake_watchers()
            if self.reader_waiting:
                self._wake_reader_locked()

    def begin_reading(self, wakeup: Wakeup) -> bool:
        """A caller's thread is about to sleep on the socket's pipes: from now on, deliveries
        and close wake it through ``wakeup``. False (and no sleep) if there is already
        something to take, or the channel is closed. The caller clears ``reader_waiting``
        itself once awake, without the lock (a lock section on the path of every message
        read): it alone sets it, and a deliverer that still saw it set only writes a
        wake-up byte too many."""
        with self._lock:
            if self.inbox.count or self.closed:
                return False
            self.reader_wakeup = wakeup
            self.reader_waiting = True
            return True

    def wake_reader(self) -> None:
        """Wake a caller's thread sleeping on the socket's pipes (one of them went away)."""
        with self._lock:
            if self.reader_waiting:
                self._wake_reader_locked()

    def _wake_reader_locked(self) -> None:
        assert self.reader_wakeup is not None  # begin_reading set it with reader_waiting
        self.reader_wakeup.wakeup()
