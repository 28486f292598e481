"""asyncio support: ``await sock.arecv()``, ``await sock.asend(data)``, ``async with``,
``async for``, on any running event loop, without a thread per call.

How it waits: the socket's channel keeps a set of watchers it sets when it may have
become readable, writable or closed (the same hook ``sp.poll`` uses). An async call
registers a watcher whose ``set()`` hops to the event loop with
``call_soon_threadsafe``, tries the operation without blocking, and awaits the watcher
when it would block.

Cancellation never loses a message: a message leaves the socket's queue only inside the
non-blocking attempt, which runs to completion between two awaits; a cancelled
``arecv()`` has taken nothing, and the next receive gets the message. Timeouts work with
``asyncio.timeout()`` and ``asyncio.wait_for()`` (they cancel), and the socket's own
``recv_timeout`` / ``send_timeout`` apply too, raising ``sp.Timeout``.

Sync and async calls may be mixed on one socket, from any threads and loops.
"""

from __future__ import annotations

import asyncio

from scaproust.core.errors import Closed, Timeout, WouldBlock


class _LoopWaker:
    """A channel watcher that wakes a coroutine on its event loop."""

    __slots__ = ("_loop", "_event")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:  # called by the I/O thread, under the channel's lock
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        await self._event.wait()


class AsyncSocketMixin:
    """The async methods of ``sp.Socket``."""

    async def arecv(self) -> bytes:
        """Receive the next message's body without blocking the event loop."""
        msg = await self.arecv_msg()
        return msg.body

    async def arecv_msg(self):
        """Receive the next message (``sp.Message``) without blocking the event loop."""
        cap = self._options.recv_timeout
        if self._policy is not None:
            limit = self._policy.recv_wait(None)  # e.g. what is left of a survey
            if limit is not None and (cap is None or limit < cap):
                cap = limit
        return await self._wait_async(lambda: self.recv_msg(block=False), cap, "recv")

    async def asend(self, data) -> None:
        """Send a message (bytes-like or ``sp.Message``) without blocking the event loop."""
        item = self._outgoing(data)  # once: the policy may assign an id
        await self._wait_async(lambda: self._channel.put(item, 0), self._options.send_timeout, "send")
        if self._policy is not None:
            self._policy.sent(item)

    async def asend_msg(self, msg) -> None:
        """``asend`` for an ``sp.Message``."""
        await self.asend(msg)

    async def _wait_async(self, attempt, timeout, what):
        waker = _LoopWaker(asyncio.get_running_loop())
        channel = self._channel
        channel.add_watcher(waker)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    waker.clear()
                    try:
                        return attempt()
                    except WouldBlock:
                        pass
                    await waker.wait()
        except TimeoutError as err:
            if isinstance(err, Timeout):
                raise
            raise Timeout(f"{what} timed out after {timeout} s") from None
        finally:
            channel.remove_watcher(waker)

    async def aclose(self) -> None:
        """Close the socket; waits for the linger in a worker thread, not the event loop."""
        if self._begin_close():
            await asyncio.to_thread(self._wait_closed)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.arecv()
        except Closed:
            raise StopAsyncIteration from None
