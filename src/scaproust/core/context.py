"""The one seam between a protocol machine and the world (the seed's ``Context``).

A protocol never touches sockets, threads or clocks: it sends on pipes it was given
(``pipe.cmd_send``), and for everything else calls this object. Unit tests pass a
recording fake with the same methods (tests/protocols/fakes.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVarTuple

from scaproust.core.channel import UNBOUNDED, Channel
from scaproust.core.guard import fire
from scaproust.core.stats import BYTES_RECEIVED, MSGS_RECEIVED

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Protocol

    from scaproust.core.guard import Crashable
    from scaproust.core.interfaces import PipeLoop, Timer
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.stats import Stats

    class PausablePipe(Protocol):
        """A pipe as the context sees it: one it can stop reading (the receive queue is
        full)."""

        def cmd_pause(self) -> object: ...

Ts = TypeVarTuple("Ts")

log = logging.getLogger("scaproust.protocol")

#: What may be in flight between the user's threads and the I/O thread for a protocol
#: whose send never blocks on its peers (PUB, BUS, REP, SURVEYOR): send() then waits only
#: for the I/O thread to catch up, never on a peer, and a publisher faster than the I/O
#: thread cannot grow the outbox without bound.
IN_FLIGHT_MSGS = 1024
IN_FLIGHT_BYTES = 16 * 1024 * 1024


class Context:
    """What a protocol may ask of its socket."""

    def __init__(self, *, loop: PipeLoop, channel: Channel, stats: Stats,
                 pipes_of_socket: Callable[[], Iterable[PausablePipe]],
                 options: Options | None = None,
                 on_crash: Callable[[Exception], object] | None = None) -> None:
        self._loop = loop
        self._on_crash = on_crash
        #: The loop's clock (``PipeLoop.time``), bound here rather than wrapped in a method:
        #: a REQ reads it at every request (its resend deadline), and a frame less there is
        #: a tenth of a microsecond.
        self.time: Callable[[], float] = loop.time
        #: The socket's options (protocols read theirs: resend_interval, ttl, ...). A
        #: socket always passes them; None only in sans-IO tests of a protocol that reads
        #: none, so the protocols read them unchecked.
        self.options: Options = options  # type: ignore[assignment]
        self._channel = channel
        self.stats = stats
        self._pipes = pipes_of_socket
        # Credit granted to the user and not yet used up by a message drained from the
        # outbox: what the user may still post (the channel's credit) plus what is in
        # flight, in messages and in bytes. The protocol states its capacity; the
        # difference is granted or revoked.
        self.outstanding = 0
        self.outstanding_bytes = UNBOUNDED
        self._unbounded = False  # the protocol said "never blocks": refill after each batch
        self._pause_scheduled = False

    def deliver(self, items: Sequence[Item], priority: int = 8) -> None:
        """Hand received messages (bytes, or ``Message`` with a header) to the user, queued
        by the receiving pipe's ``recv_priority``."""
        channel = self._channel
        size = channel.push_many(items, priority)
        if items:  # Stats.count_traffic's steps, inline (no counter appears at zero)
            counts = self.stats.counts
            counts[MSGS_RECEIVED] += len(items)
            if size:
                counts[BYTES_RECEIVED] += size
        if channel.recv_paused and not self._pause_scheduled:
            # Stop reading once this batch is done, not in its middle: the pipes whose
            # reads this batch already holds still deliver, so the queue filling up never
            # favours the pipe that happened to be read first (fair queueing).
            self._pause_scheduled = True
            self._loop.call_after_batch(self._pause_pipes)

    def queued(self) -> int:
        """How many received messages wait for the user (a SUB context bounds its queue)."""
        return len(self._channel.inbox)

    def drop_oldest(self) -> bool:
        """Drop the message the user would receive next; False if none waits."""
        return self._channel.drop_oldest()

    def _pause_pipes(self) -> None:
        self._pause_scheduled = False
        if self._channel.recv_paused:
            for pipe in self._pipes():
                pipe.cmd_pause()

    def set_send_capacity(self, capacity: int, nbytes: int = UNBOUNDED) -> None:
        """How many messages, and how many bytes, the protocol can take now; send() blocks
        when either is used up. ``UNBOUNDED`` means the protocol never blocks on its peers:
        the in-flight bound above applies, refilled after every drained batch."""
        # Comparisons rather than min() and max(): this runs after every flush of a pipe
        # (its room back), and each builtin call was a tenth of it.
        self._unbounded = capacity >= UNBOUNDED
        if capacity > IN_FLIGHT_MSGS:
            capacity = IN_FLIGHT_MSGS
        if nbytes > IN_FLIGHT_BYTES:
            nbytes = IN_FLIGHT_BYTES
        delta = capacity - self.outstanding
        delta_bytes = nbytes - self.outstanding_bytes
        if delta > 0 or delta_bytes > 0:
            more = delta if delta > 0 else 0
            more_bytes = delta_bytes if delta_bytes > 0 else 0
            self._channel.grant(more, more_bytes)
            self.outstanding += more
            self.outstanding_bytes += more_bytes
        if delta < 0 or delta_bytes < 0:
            taken, taken_bytes = self._channel.revoke(max(-delta, 0), max(-delta_bytes, 0))
            self.outstanding -= taken
            self.outstanding_bytes -= taken_bytes

    def refill(self) -> None:
        """After the I/O thread drained a batch: give a never-blocking protocol its credit
        back (a bounded one restates its capacity itself as its pipes change)."""
        if self._unbounded:
            self.set_send_capacity(UNBOUNDED, UNBOUNDED)

    def reject_pipe(self, pipe: Crashable) -> None:
        """Close a pipe the protocol will not use (e.g. a second PAIR peer).

        Deferred to the loop: the protocol is usually inside the pipe's own transition.
        """
        self._loop.call_soon(fire, pipe, "cmd_close")

    def call_later(self, delay: float, fn: Callable[[*Ts], object],
                   *args: *Ts) -> Timer:
        """A timer for the protocol (resend, deadline); a bug in its callback fails the
        socket (``sp.Closed`` for its callers), not the loop."""
        return self._loop.call_later(delay, self._guarded, fn, args)

    def _guarded(self, fn: Callable[[*Ts], object], args: tuple[*Ts]) -> None:
        try:
            fn(*args)
        except Exception as err:
            if self._on_crash is None:
                raise
            self._on_crash(err)
