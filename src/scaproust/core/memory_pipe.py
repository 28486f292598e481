"""A pipe over an in-process link (``inproc://``): whole messages handed over in memory.

Theory of operation
-------------------
The same ``pipe`` machine drives it as a stream pipe (connect, header exchange, active,
closing, dead), so the two ends check each other's protocol and every lifecycle rule holds
alike; only the I/O under the table's actions differs. The connection is a pair of
``MemoryEnd`` objects (transports/inproc.py): sending appends a message, as the bytes
object the socket was given, to the peer end's inbox; there is no prefix, no decoder, no
syscall and no copy.

- **Writing.** ``enqueue`` queues in ``_out`` exactly as a stream pipe does (the same
  window, the same ``free``), and ``_flush``, at the end of the owner's batch, moves what
  the link has room for to the peer's inbox and signals the peer. The link holds at most
  ``LINK_MSGS`` messages and ``LINK_BYTES`` bytes per direction, as a kernel socket buffer
  would: what does not fit stays in ``_out``, the end is marked ``blocked``, and the peer
  signals back once it has read. So a reader that stops reading (its receive queue full)
  pushes back on the sender's socket, as over TCP.
- **Being signalled.** Every piece of news (messages, room, the peer's close) runs
  ``_on_signal`` in this pipe's session. Within one session it runs at the end of the
  sender's batch, in the sender's thread: a caller's send in its own thread delivers
  straight into the receiving socket's queue, and the only thread hand-off left is the
  waiting receiver's own wake-up. Across sessions it is posted to the receiver's loop.
- **Reading.** While the pipe reads (``_watching``; a full receive queue pauses it, as it
  removes a stream's reader) ``_read_frames`` takes every message in the inbox and fires
  one ``evt_msgs``; the peer's close is seen once the inbox is empty. The first message
  of a link is the peer's 8-byte SP header, read by ``_read_handshake``.

Nothing is lent to a caller's thread (``core/caller_reader.py``): there is nothing to
poll, and a delivery made in the sender's thread wakes the waiting caller directly.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

from scaproust.core.guard import entry_point
from scaproust.core.pipe import HIGH_WATER, Lender, Pipe, Publication, _Head
from scaproust.transports.framing import OversizeFrame

if TYPE_CHECKING:
    from collections.abc import Callable

    from scaproust.transports.inproc import MemoryEnd

#: Per direction, the messages and bytes a link holds before the sender's own queue
#: fills: about what a Unix socket pair buffers, enough to decouple a burst.
LINK_MSGS = 1024
LINK_BYTES = HIGH_WATER


class MemoryPipe(Pipe):
    """A pipe whose stream is a ``MemoryEnd`` (see the module's docstring)."""

    # What inproc's connect and accept return instead of a socket (transports/__init__.py).
    stream: MemoryEnd  # type: ignore[assignment]
    # Whole buffers only: the memoryviews of a partial write are the stream pipe's (_flush).
    _out: deque[bytes]  # type: ignore[assignment]

    def __init__(self, **kwargs: Any) -> None:  # Pipe's keywords
        super().__init__(**kwargs)
        self.lender = _Unlendable(self)

    # ---------------------------------------------------------------- connecting

    def watch_connect(self) -> None:
        if self._connect_error:
            super().watch_connect()  # reported from the loop, as for a stream
            return
        self.loop.call_soon(self._on_connect_ready)  # a link is connected from the start

    def unwatch_connect(self) -> None:
        pass

    @entry_point
    def _on_connect_ready(self) -> None:
        if self.state == "connecting":  # not closed meanwhile
            self.evt_connected()

    # ---------------------------------------------------------------- reading

    def watch_handshake(self) -> None:
        self._watching = True
        self.stream.attach(self.loop, self._on_signal)

    def watch_frames(self) -> None:
        pass  # the same signal now reads messages (_on_signal goes by the state)

    def stop_reading(self) -> None:
        self._watching = False  # the messages wait in the inbox, the link fills up

    def start_reading(self) -> None:
        if not self._watching:
            self._watching = True
            self._signal_self()

    def _signal_self(self) -> None:
        self.stream.signal(self.loop)

    @entry_point
    def _on_signal(self) -> None:
        end = self.stream
        if end is None:
            return  # dead since the signal was sent
        end.signalled = False  # before looking: news from now on signals again
        if self._watching:
            if self.state == "handshaking":
                self._read_handshake()
            else:
                self._read_frames()
        if self._out and not self._flush_scheduled and self.stream is not None:
            self._flush()  # the peer made room, or closed

    # _read_handshake and _read_frames run only inside _on_signal, an entry point already:
    # not wrapped again (a wrapper's call is a twentieth of an in-process delivery).

    def _read_handshake(self) -> None:
        end = self.stream
        if not end.inbox:
            if end.peer.closed:
                self.evt_peer_closed()
            return
        header = end.inbox.popleft()
        end.taken += len(header)
        if (self._take_peer_header(header) and end.inbox and self.state == "active"
                and self._watching):
            self._read_frames()  # messages the peer sent right behind its header

    def _read_frames(self) -> None:
        end = self.stream
        inbox = end.inbox
        n = len(inbox)
        if not n:
            if end.peer.closed:
                self.evt_peer_closed()
            return
        msgs = [inbox.popleft()] if n == 1 else [inbox.popleft() for _ in range(n)]
        size = sum(map(len, msgs)) if n > 1 else len(msgs[0])
        end.taken += size
        peer = end.peer
        if peer.blocked:  # the peer waits for room: there is some now
            peer.blocked = False
            peer.signal(self.loop)
        limit = self.endpoint.recv_max_size
        if limit and size > limit and self._oversize(msgs, limit):
            return
        self.evt_msgs(msgs)
        if not inbox and peer.closed and self.stream is not None:
            self.evt_peer_closed()  # nothing more can come

    def _oversize(self, msgs: list[bytes], limit: int) -> bool:
        """Deliver the messages before the first one over ``limit`` and close the pipe, as
        a stream pipe does on an oversize frame; False if none is over."""
        for i, msg in enumerate(msgs):
            if len(msg) > limit:
                if i:
                    self.evt_msgs(msgs[:i])
                if self.state in ("active", "closing"):
                    self.evt_bad_frame(OversizeFrame(len(msg), limit))
                return True
        return False

    # ---------------------------------------------------------------- writing

    def enqueue(self, body: bytes, header: bytes = b"") -> None:
        self._out_msgs += 1
        self._queue(header + body if header else body)

    def enqueue_published(self, body: bytes) -> None:
        self.enqueue(body)  # no frame to share: the body itself crosses

    def enqueue_many(self, bodies: list[bytes]) -> None:
        # The bodies are the messages (no frame to build): what the link has room for is
        # queued in one step, not one enqueue each (a PUSH burst's drain).
        del bodies[:self._queue_run(bodies, list(itertools.accumulate(map(len, bodies))))]

    def enqueue_published_many(self, batch: Publication) -> None:
        self._publish_each(batch)

    @entry_point
    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.state == "dead" or not self._out:
            return
        end = self.stream
        peer = end.peer
        out = self._out
        if peer.closed:
            # Nobody will read these: lost, as on a socket whose peer went away; our own
            # reading sees the close (once the inbox is empty).
            out.clear()
            self._out_bytes = self._out_msgs = 0
            self._recount()
            self._signal_self()
            self.evt_flushed()
            return
        # peer.signal()'s first test and _recount() for an emptied queue, inline: the
        # path of every in-process message.
        count, nbytes = peer.in_flight()
        if len(out) + count <= LINK_MSGS and self._out_bytes + nbytes <= LINK_BYTES:
            peer.arrived += self._out_bytes  # before the messages: in_flight() never < 0
            peer.inbox.extend(out)
            out.clear()
            self._out_bytes = self._out_msgs = 0
            self.free = self._window
        elif self._move_some(out, peer, LINK_MSGS - count, LINK_BYTES - nbytes):
            self._recount()
        else:
            self.evt_flushed()  # nothing moved: the queue and ``free`` are as they were
            return
        if not peer.signalled:
            peer.signal(self.loop)
        self.evt_flushed()

    def _move_some(self, out: deque[bytes], peer: MemoryEnd, room: int,
                   room_bytes: int) -> bool:
        """Move what the link has room for (at least one message when it is empty, however
        large); mark the end ``blocked`` if some is left. True if anything moved."""
        moved = 0
        while out and room > 0 and (room_bytes > 0 or not moved and not peer.inbox):
            buf = out.popleft()
            size = len(buf)
            peer.arrived += size
            peer.inbox.append(buf)
            self._out_bytes -= size
            if type(buf) is not _Head:
                self._out_msgs -= 1
            room -= 1
            room_bytes -= size
            moved += 1
        if out:
            end = self.stream
            end.blocked = True
            # The peer may have read everything between our look and the flag: then it saw
            # no flag, and would never signal. Look again.
            count, nbytes = peer.in_flight()
            if count < LINK_MSGS and nbytes < LINK_BYTES:
                end.blocked = False
                self._signal_self()
        return bool(moved)


class _Unlendable(Lender):
    """A memory pipe has nothing a caller could poll: its deliveries, made in the sender's
    thread, wake a waiting caller through the channel."""

    __slots__ = ()

    LENDABLE = False

    def lend(self, alarm: Callable[[], object] | None = None) -> bool:
        return False
