"""asyncio support: ``await sock.arecv()``, ``await sock.asend(data)``, ``async with``,
``async for``, on any running event loop, without a thread per call.

How it waits: the socket's channel keeps a set of watchers it sets when it may have
become readable, writable or closed (the same hook ``sp.poll`` uses). An async call
registers a watcher whose ``set()`` hops to the event loop with
``call_soon_threadsafe``, tries the operation without blocking, and awaits the watcher
when it would block. An ``arecv()`` that waits also borrows the socket's pipes for its
event loop (core/caller_reader.py), which then reads them itself: the message needs no
hand-off from the I/O thread. ``asend()`` writes from the event loop's thread like a
blocking ``send()`` does.

Cancellation never loses a message: a message leaves the socket's queue only inside the
non-blocking attempt, which runs to completion between two awaits; a cancelled
``arecv()`` has taken nothing, and the next receive gets the message. Timeouts work with
``asyncio.timeout()`` and ``asyncio.wait_for()`` (they cancel), and the socket's own
``recv_timeout`` / ``send_timeout`` apply too, raising ``sp.Timeout``.

Sync and async calls may be mixed on one socket, from any threads and loops.

Trio works too: inside a Trio task the same calls wait on a ``trio.Event`` set through
the run's token (``run_sync_soon``), the socket's timeouts raise ``sp.Timeout`` through
``trio.fail_after``, and a Trio cancellation (``move_on_after``, a cancelled nursery) is
as harmless as an asyncio one, for the same reason. Trio has no ``add_reader`` for us to
lend the pipes to, so there the I/O thread reads them, as it does for ``sp.poll``. Trio is
detected, not imported: ``import scaproust`` never loads it.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Self, TypeVar

from scaproust.core.message import as_message
from scaproust.core.policy import put_now
from scaproust.errors import BadState, Closed, Timeout, WouldBlock

if TYPE_CHECKING:
    import asyncio

    from _typeshed import ReadableBuffer

    from scaproust.core.caller_reader import KeptLoan
    from scaproust.core.channel import Channel
    from scaproust.core.message import Item, Message
    from scaproust.core.options import Options
    from scaproust.core.policy import Policy

T = TypeVar("T")


class _LoopWaker:
    """A channel watcher that wakes a coroutine on its event loop.

    A bare future rather than an ``asyncio.Event``: the event makes a future per wait
    anyway, plus a list of waiters to add it to and take it from; this is the same wake-up
    for a microsecond less on the path of every awaited message."""

    __slots__ = ("_loop", "_future", "_woken", "_thread", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None  # awaited by wait() right now
        self._woken = False  # set() since the last clear()
        self._thread = threading.get_ident()
        #: The call's own timeout passed (``expire``, a timer of the event loop).
        self.expired = False

    def _wake(self) -> None:  # in the event loop's thread
        self._woken = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def expire(self) -> None:
        self.expired = True
        self._wake()

    def set(self) -> None:  # called under the channel's lock, by whoever delivers
        if threading.get_ident() == self._thread:
            # Delivered by the event loop itself (lent pipes): no hop. Or by a reader that
            # came after that event loop was closed with its task still awaiting: then
            # nothing. Resolving the future would raise "Event loop is closed" into the
            # delivery, and free the task as the future drops its callbacks: the task's
            # clean-up (remove_watcher) would then take the channel's lock, held here.
            if not self._loop.is_closed():
                self._wake()
            return
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    def clear(self) -> None:
        self._woken = False

    async def wait(self) -> None:
        if self._woken:
            return
        future = self._future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None


class _Deadlines:
    """The socket timeouts of the calls awaiting on one event loop, all kept by one timer
    of that loop, set for the earliest.

    A timer per call (``call_later``, then ``cancel`` when the message came first, as it
    nearly always does) cost about 2 µs a receive. Calls that start one after another with
    the same timeout each end later than the timer already set, which serves them all:
    when it fires it expires the calls that are due and is set again for the earliest of
    the others, if any are left. In the event loop's thread only.
    """

    __slots__ = ("loop", "_waiting", "_timer", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: dict[_LoopWaker, float] = {}  # the calls' deadlines, loop time
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # when the timer fires

    def add(self, waker: _LoopWaker, timeout: float) -> None:
        deadline = self.loop.time() + timeout
        self._waiting[waker] = deadline
        if deadline < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._set(deadline)

    def discard(self, waker: _LoopWaker) -> None:
        """The call ended (the timer, if it fires, finds nothing for it)."""
        self._waiting.pop(waker, None)

    def _set(self, deadline: float) -> None:
        self._due = deadline
        self._timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = math.inf
        # The event loop runs a timer up to its clock's resolution early.
        now = self.loop.time() + _CLOCK_RESOLUTION
        due = sorted((deadline, n, waker) for n, (waker, deadline)
                     in enumerate(self._waiting.items()) if deadline <= now)
        for _, _, waker in due:  # the earliest first, even when the timer fired late
            del self._waiting[waker]
            waker.expire()
        if self._waiting:
            self._set(min(self._waiting.values()))


_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
#: The deadline keeper of the event loop that last awaited in each thread (a thread runs
#: one event loop at a time; a call keeps the keeper it started with).
_keepers = threading.local()


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    keeper: _Deadlines | None = getattr(_keepers, "deadlines", None)
    if keeper is None or keeper.loop is not loop:
        keeper = _keepers.deadlines = _Deadlines(loop)
    return keeper


def _in_trio() -> bool:
    """True in a Trio task (Trio loaded and running in this thread)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


class _TrioWaker:
    """A channel watcher that wakes a Trio task. ``trio.Event`` cannot be cleared, so
    ``clear`` starts a new one; a ``set`` that raced it set the old one, and the attempt
    that follows ``clear`` sees what that ``set`` announced: no wake-up is lost."""

    __slots__ = ("_token", "_event", "_thread")

    def __init__(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._event = trio.Event()
        self._thread = threading.get_ident()

    def set(self) -> None:  # called under the channel's lock, by whoever delivers
        event = self._event
        if threading.get_ident() == self._thread:
            event.set()
            return
        try:
            self._token.run_sync_soon(event.set)
        except RuntimeError:  # the Trio run has ended (RunFinishedError): nobody waits
            pass

    def clear(self) -> None:
        if self._event.is_set():
            import trio

            self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


async def _wait_trio_woken(waker: _TrioWaker, attempt: Callable[[], T | None]) -> T:
    """Attempt, then sleep until the waker is set, until ``attempt()`` returns something."""
    while True:
        waker.clear()
        done = attempt()
        if done is not None:
            return done
        await waker.wait()


class AsyncSocketMixin:
    """The async methods of ``sp.Socket``."""

    if TYPE_CHECKING:  # what they use of sp.Socket (facade/socket.py)
        _options: Options
        _policy: Policy | None
        _channel: Channel

        def _check_fork(self) -> None: ...
        def _sendable(self, data: ReadableBuffer | Message) -> Item: ...
        def _recv_now(self) -> Item | None: ...
        def _begin_close(self) -> bool: ...
        def _wait_closed(self) -> None: ...

    async def arecv(self) -> bytes:
        """Receive the next message's body without blocking the event loop."""
        msg = await self.arecv_msg()
        return msg.body

    async def arecv_msg(self) -> Message:
        """Receive the next message (``sp.Message``) without blocking the event loop."""
        self._check_fork()  # before any lock: a forked child may find one held for ever
        item = self._recv_now()
        if item is not None:
            return as_message(item)  # already there: no waker, timer or loan
        timeout = self._options.recv_timeout
        policy = self._policy
        if policy is None:
            return as_message(await self._wait_async(self._recv_now, timeout, "recv", lend=True))
        deadline = None if timeout is None else time.monotonic() + timeout
        cap = timeout
        while True:
            attempt = self._recv_now
            limit = policy.recv_wait(None)  # e.g. what is left of a survey
            if limit is not None and (cap is None or limit < cap):
                cap = limit
                attempt = self._recv_within_limit
            epoch = policy.epoch
            try:
                return as_message(await self._wait_async(attempt, cap, "recv", lend=True))
            except Timeout:
                if not policy.renewed(epoch):
                    raise
            # A new survey, sent meanwhile by another thread or task: its deadline now,
            # within what is left of the call's own timeout.
            if deadline is not None:
                cap = deadline - time.monotonic()
                if cap <= 0:
                    raise Timeout(f"recv timed out after {timeout} s")
            else:
                cap = None

    def _recv_within_limit(self) -> Item | None:
        """``_recv_now`` for a wait the policy cut short (what was left of a survey): the
        event loop's timer ends the wait at that limit, and the attempt made then finds the
        policy refusing (``BadState``: the survey is over). That is the wait timing out, as
        a blocking ``recv()`` reports it (WIRE.md: a receive still waiting at the survey's
        deadline fails with ``Timeout``); a Trio wait is cancelled before any attempt."""
        try:
            return self._recv_now()
        except BadState:
            raise Timeout("recv timed out: the survey's deadline passed") from None

    async def asend(self, data: ReadableBuffer | Message) -> None:
        """Send a message (bytes-like or ``sp.Message``) without blocking the event loop."""
        item = self._sendable(data)
        channel, policy = self._channel, self._policy
        out: Item | None = None  # what the policy's outgoing made of it, at the first try

        def attempt() -> bool | None:
            nonlocal out
            if policy is not None:
                # The policy's steps as one (policy.send_in_order's tries): its send lock
                # is never held across a wait, so taking it here cannot block for long.
                out = put_now(policy, channel, item, out)
                return None if out is not None else True
            try:
                channel.put(item, 0)
            except WouldBlock:
                return None
            return True

        if attempt() is None:  # no credit to spare (else, the usual case: nothing to await)
            await self._wait_async(attempt, self._options.send_timeout, "send")

    async def asend_msg(self, msg: Message) -> None:
        """``asend`` for an ``sp.Message``."""
        await self.asend(msg)

    async def _wait_async(self, attempt: Callable[[], T | None], timeout: float | None,
                          what: str, lend: bool = False) -> T:
        """Await until ``attempt()`` returns something (None: it cannot be done now; it
        raises what the call must raise), the timeout (``sp.Timeout``) or a cancellation.
        "Not now" is a None, not an exception: it is the usual answer of the attempt made
        right after the watcher is set, and raising and catching one cost 2-3 µs.

        A timeout of 0 (an option set so) waits not at all, as in the blocking calls:
        ``sp.WouldBlock`` if the attempt cannot be done now (it was ``sp.Timeout`` here)."""
        if timeout is not None and timeout <= 0:
            done = attempt()
            if done is None:
                raise WouldBlock(f"{what} would block")
            return done
        if _in_trio():
            return await self._wait_trio(attempt, timeout, what)
        import asyncio  # already loaded: a coroutine runs; not by `import scaproust`

        aloop = asyncio.get_running_loop()
        waker = _LoopWaker(aloop)
        channel = self._channel
        channel.add_watcher(waker)
        park: KeptLoan | None = None
        # The socket's timeout expires the waker from a timer of the event loop, not an
        # asyncio.timeout(): that one cancels the task and takes the cancellation back,
        # 4 µs a call, on the path of every awaited message. An outer asyncio.timeout() or
        # wait_for() still cancels the await as usual.
        deadlines = None
        if timeout is not None:
            deadlines = _deadlines_of(aloop)
            deadlines.add(waker, timeout)
        try:
            while True:
                waker.clear()
                done = attempt()
                if done is not None:
                    return done
                if waker.expired:
                    raise Timeout(f"{what} timed out after {timeout} s")
                if lend and park is None and channel.reader is not None:
                    # Let this event loop read the socket's pipes while it waits, and
                    # after (core/caller_reader.py, the loan is kept for the next
                    # receive); else the I/O thread does, as for sp.poll.
                    park = channel.reader.lend_to_event_loop(aloop)
                    if park is not None:
                        park.waiting += 1
                await waker.wait()
        finally:
            if park is not None:
                park.waiting -= 1
            if deadlines is not None:
                deadlines.discard(waker)
            channel.remove_watcher(waker)

    async def _wait_trio(self, attempt: Callable[[], T | None], timeout: float | None,
                         what: str) -> T:
        """``_wait_async`` in a Trio task: the same loop, without a loan of the pipes."""
        import trio

        waker = _TrioWaker()
        channel = self._channel
        channel.add_watcher(waker)
        try:
            if timeout is None:  # the default: no cancel scope (5 µs a call) to enter
                return await _wait_trio_woken(waker, attempt)
            with trio.fail_after(timeout):
                return await _wait_trio_woken(waker, attempt)
        except trio.TooSlowError:
            raise Timeout(f"{what} timed out after {timeout} s") from None
        finally:
            channel.remove_watcher(waker)

    async def aclose(self) -> None:
        """Close the socket; waits for the linger in a worker thread, not the event loop."""
        if self._begin_close():
            if _in_trio():
                import trio

                await trio.to_thread.run_sync(self._wait_closed)
                return
            import asyncio  # already loaded: a coroutine runs; not by `import scaproust`

            await asyncio.to_thread(self._wait_closed)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.arecv()
        except Closed:
            raise StopAsyncIteration from None
