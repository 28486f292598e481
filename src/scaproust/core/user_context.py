"""The I/O side of a context (``sock.context()``) whose protocol keeps state per context in
the I/O thread (machines ``req_ctx``, ``surveyor_ctx``, ``sub_ctx``).

A context has a channel of its own (core/channel.py), so its caller waits, polls and
awaits on its own receive queue and its own closing, exactly as a socket's caller does on
the socket's channel. The protocol delivers to it through a ``core.context.Context`` of its
own (the "seam": its channel, the socket's counters and loop, the context's own options).

Sending: the caller puts into the context's channel, whose credit never runs out (a
context's request never waits for a peer: it queues in the protocol), and the outbox is
drained into the context's machine (``cmd_send``) in the caller's thread when it can take
the session lock at once (a request wants to go out now, as a socket's lone send does),
else in the I/O thread. Nothing here touches the socket's own channel: its fast path is
unchanged.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.context import Context
from scaproust.core.guard import crash
from scaproust.core.stats import BYTES_SENT, MSGS_SENT
from scaproust.errors import Closed

if TYPE_CHECKING:
    from typing import Protocol

    from scaproust.core.guard import Crashable
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.stats import Stats
    from scaproust.reactor.loop import Loop

    class ContextMachine(Protocol):
        """A context's protocol machine as seen from here (e.g. ``ReqContext``)."""

        state: str

        def cmd_send(self, item: Item, /) -> object: ...
        def cmd_close(self) -> object: ...

#: How long a caller's send waits for another owner of the session before it hands the
#: request to the I/O thread (as core/socket.py's OWN_WAIT).
OWN_WAIT = 0.001


class UserContext:
    """A context's channel, seam and machine (the machine is set by the protocol)."""

    def __init__(self, *, loop: Loop, options: Options, stats: Stats,
                 socket: Crashable) -> None:
        self.loop = loop
        self.stats = stats
        self._socket = socket
        self.channel = Channel(wake_backend=self._wake, resume_reading=_nothing,
                               post_backend=lambda: loop.post_if_open(self.drain),
                               recv_high=options.recv_buffer,
                               notify_later=loop.notify_after_release)
        # A context's queue holds its replies only: never pause the socket's pipes for it.
        self.seam = Context(loop=loop, channel=self.channel, stats=stats,
                            pipes_of_socket=tuple, options=options,
                            on_crash=self._crash)
        self.seam.set_send_capacity(UNBOUNDED, UNBOUNDED)
        self.machine: ContextMachine | None = None

    def __repr__(self) -> str:
        return f"<UserContext {self.machine!r}>"

    def _crash(self, err: Exception) -> None:
        crash(self._socket, err)  # a bug in a context's machine fails its socket

    def _wake(self) -> None:
        # Called by Channel.put in the caller's thread, the outbox no longer empty.
        loop = self.loop
        if loop.own(OWN_WAIT):
            try:
                self.drain()
            finally:
                try:
                    loop.release()
                except BaseException:
                    loop.release_interrupted()  # a Ctrl-C as release() was entered
                    raise
            return
        try:
            loop.call_soon_threadsafe(self.drain)
        except RuntimeError:
            raise Closed("session is closed") from None

    def drain(self) -> None:
        """Hand what the caller queued to the machine (session lock held)."""
        batch = self.channel.take_outbox()
        machine = self.machine
        if machine is None:  # pragma: no cover  (set before the facade gets the context)
            return
        seam = self.seam
        total = taken = 0
        try:
            for item in batch:
                size = len(item)
                seam.outstanding -= 1
                seam.outstanding_bytes -= size
                total += size
                taken += 1  # no call since len(): counted exactly with the two above
                machine.cmd_send(item)  # a closed context drops it, counted
        except Exception as err:
            self._crash(err)
            return
        except BaseException:
            # A Ctrl-C in the caller's thread, which drains here when its send owns the
            # session: as the socket's drain does, what was not taken goes back to the
            # front of the outbox, in order, for the next drain.
            self.channel.requeue(itertools.islice(batch, taken, None))
            self.loop.call_soon(self.drain)
            raise
        finally:
            self.stats.count(MSGS_SENT, taken)
            self.stats.count(BYTES_SENT, total)
        seam.refill()

    def close(self) -> None:
        """Close the machine (what it still holds is dropped) and wake the callers."""
        self.channel.close()
        machine = self.machine
        if machine is not None and machine.state != "closed":
            machine.cmd_close()


def _nothing() -> None:
    """A context never pauses the socket's pipes, so never resumes them."""
