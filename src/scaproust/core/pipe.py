"""A pipe: one connection to one peer, driven by the generated ``pipe`` machine.

Theory of operation
-------------------
The table (protocols.yaml, machine ``pipe``) holds the lifecycle: ``idle`` → (``connecting``
for dialed pipes) → ``handshaking`` → ``active`` → (``closing`` while queued output drains)
→ ``dead``. Read and write interest follow the state: each state's ``on_enter`` registers
the reader it needs, and ``release`` (entering ``dead``) drops everything.

This module turns readiness into the table's events and nothing else: ``_read_handshake``
and ``_read_frames`` read a large chunk, parse every complete frame in it and fire one
``evt_msgs`` per chunk (not per message); ``_flush`` writes every queued frame it can in
one ``sendmsg`` and fires ``evt_flushed``. The pipe never imports ``socket`` or
``selectors``: it talks to the reactor through ``loop`` (add/remove reader and writer,
call_soon, call_later) and to the connection through ``stream`` (recv, sendmsg, close), so
its unit tests run with a fake loop and a fake stream.

Extra fields and when they are valid:

- ``_out`` / ``_out_bytes`` / ``_out_msgs``: buffers queued for writing, their bytes, and
  how many messages they hold (a buffer of type ``_Head`` starts a message, or is the
  header, and does not end one), any state before ``dead``; ``_dropped`` keeps the last two
  counts from ``release`` for the log line that follows it;
- ``_handshake``: bytes of the peer's header received so far, ``handshaking`` only;
- ``_decoder``: frames from the peer, from ``active`` on;
- ``_timer``: the handshake timeout (``handshaking``) or the linger limit (``closing``);
- ``_mark`` / ``_read_whole``: the bytes the kernel waits for before it reports the stream
  readable (1, or the size of a whole large body awaited: ``_read_whole_body``), and
  whether reads stop at the next body's start (after a body of ``WHOLE_MIN`` or more),
  ``active`` on.

Outgoing frames are small bytes objects joined with their prefix (one buffer each), or for
large bodies a prefix buffer followed by the body itself, so a large body is never copied.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from scaproust._generated.pipe import PipeFSM
from scaproust.core.guard import Interrupted, crash, entry_point, fire, log_crash
from scaproust.core.options import EndpointOptions
from scaproust.core.stats import (
    DROPPED_CLOSING,
    DROPPED_LINGER,
    DROPPED_MALFORMED,
    DROPPED_OVERSIZE,
    PIPE_ERRORS,
    PIPES_INTERRUPTED,
)
from scaproust.errors import ProtocolError
from scaproust.transports.framing import (
    SCRATCH_KEEP,
    FrameDecoder,
    OversizeFrame,
    check_handshake,
    encode_handshake,
    prefixer,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

    from scaproust.core.dialer import Dialer
    from scaproust.core.interfaces import PipeLoop, Stream, Timer
    from scaproust.core.listener import Listener
    from scaproust.core.socket import SocketCore
    from scaproust.transports import Transport

log = logging.getLogger("scaproust.pipe")

#: Bytes asked of one recv(): small while the peer sends little, doubled after each read
#: that fills the request, up to READ_MAX (one readiness event then parses many frames),
#: and back to READ_MIN after a short read. Why not always READ_MAX: recv(n) allocates n
#: bytes first, and above glibc's mmap threshold (128 KiB) that is an mmap, page faults,
#: an mremap and a munmap for every read: measured, 64 KiB reads take a quarter to a third
#: off the CPU of a small-message round trip.
READ_MIN = 64 * 1024
READ_MAX = 256 * 1024
#: Bodies from WHOLE_MIN to SCRATCH_KEEP bytes are read in one piece once all there, where
#: the transport can wait for that (``Pipe._read_whole_body``). Smaller ones come several
#: to a chunk; larger ones would need a buffer of their own per message, which the chunks
#: read into already.
WHOLE_MIN = 256 * 1024
#: Bodies up to this size are joined with their prefix into one buffer; larger ones are
#: sent as a separate buffer (no copy). 16 KiB keeps joins cheap next to the syscall.
JOIN_MAX = 16 * 1024
#: At most this many buffers per sendmsg (Linux IOV_MAX is 1024).
MAX_IOV = 512
#: A queue whose buffers average at most this many bytes is joined into one buffer for its
#: write: the kernel takes one buffer of a burst's small frames for less than it takes
#: them as an iovec each (64-byte messages, 512 at a time: 28-34 ns a frame against 61-75
#: over TCP loopback); copying larger ones costs more than their iovecs save.
JOIN_WRITE_AVG = 512
#: A pipe takes new messages while it holds fewer than ``send_buffer`` (default 512) queued
#: buffers and fewer than HIGH_WATER bytes: enough to coalesce hundreds of small frames per
#: write, bounded for large ones.
HIGH_WATER = 4 * 1024 * 1024

_ids = itertools.count(1)


class _Head(bytes):
    """A queued buffer that does not end a message: the SP header, or the prefix of a
    message whose body follows as its own buffer."""



class Publication:
    """A batch of bodies a PUB sends to all its pipes at once (``cmd_publish_many``).

    The frames are built once per framing (TCP, IPC), by the first pipe of that framing, and
    every other pipe of it queues the same bytes objects; ``ends`` are the frames' running
    totals, so that a pipe finds in one search how many fit under its byte limit. Each pipe
    adds what it had no room for to ``missed``, which the PUB counts once. Every body is at
    most ``JOIN_MAX`` bytes: one buffer per message.
    """

    __slots__ = ("_framed", "bodies", "missed")

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.missed = 0
        self._framed: dict[bool, tuple[list[bytes], list[int]]] = {}

    def framed(self, ipc: bool, prefix: Callable[[int], bytes]) -> tuple[list[bytes], list[int]]:
        """The frames of the bodies in one framing, and their running byte totals."""
        got = self._framed.get(ipc)
        if got is None:
            frames = [prefix(len(body)) + body for body in self.bodies]
            got = self._framed[ipc] = (frames, list(itertools.accumulate(map(len, frames))))
        return got


class Pipe(PipeFSM):
    """One connection; the socket's protocol sees it as a destination and a source."""

    #: An interrupt in the middle of its I/O closes it (core/guard.py, "Interrupts").
    CLOSE_ON_INTERRUPT = True

    # Slots, as core/channel.py's Channel has them: past 29 attributes CPython 3.11 no
    # longer keeps an object's attributes inline, and each access costs about 15 % more;
    # a pipe has 37, read and written on the path of every message. ``state`` stays in the
    # instance's dict (the machine's class gives its first value), as does what a
    # subclass adds (TLS, WebSocket, memory).
    __slots__ = ("id", "endpoint", "send_priority", "recv_priority", "loop", "stream",
                 "transport", "socket", "owner", "peer_addr", "_dialed", "_connect_error",
                 "_ipc", "_prefix", "_options", "_window", "_out", "_out_bytes", "_out_msgs",
                 "free", "_dropped", "_flush_scheduled", "_writer_registered",
                 "_written_early", "_handshake", "_decoder", "_read_size", "_timer",
                 "_attached", "_watching", "_lent", "_large_reads", "_set_low_water",
                 "_mark", "_read_whole", "lender")

    def __init__(self, *, loop: PipeLoop, stream: Stream | None, transport: Transport,
                 socket: SocketCore, owner: Listener | Dialer, dialed: bool,
                 connect_error: int | OSError = 0, peer_addr: str = "",
                 endpoint: EndpointOptions | None = None) -> None:
        self.id = next(_ids) & 0x7FFFFFFF  # 31 bits: raw REP puts it in a backtrace word
        #: Fixed by the endpoint at bind()/connect(): priorities 1 (highest) to 16, size limit.
        self.endpoint = endpoint if endpoint is not None else EndpointOptions.of(socket.options)
        self.send_priority = self.endpoint.send_priority
        self.recv_priority = self.endpoint.recv_priority
        self.loop = loop
        # None once the pipe is released (dead), and from the start for a dial that failed
        # at once (connect_error): every method that may run then checks, the others run
        # only in states that have a stream, so it is typed as there, without a check.
        self.stream: Stream = stream  # type: ignore[assignment]
        self.transport = transport
        self.socket = socket
        self.owner = owner
        self.peer_addr = peer_addr
        self._dialed = dialed
        self._connect_error = connect_error
        self._ipc = transport.IPC_FRAMING
        self._prefix = prefixer(self._ipc)
        self._options = socket.options
        self._window = socket.options.send_buffer
        self._out: deque[bytes | bytearray | memoryview] = deque()
        self._out_bytes = 0
        self._out_msgs = 0
        #: How many more messages this pipe takes now (0 when its queue is full): read by
        #: the protocols for every message sent, so a field kept up to date by whatever
        #: changes the queue (one slot less per buffer appended, inline; a recount after
        #: buffers leave it: ``_recount``), not a property computed per read.
        self.free = self._window
        self._dropped = (0, 0)
        self._flush_scheduled = False
        self._writer_registered = False
        #: How many bytes of its one queued frame ``enqueue`` wrote at once (a caller's lone
        #: send: ``Loop.writing_at_once``); the flush after the batch accounts for them.
        self._written_early = 0
        self._handshake = b""
        # Set by watch_frames, the first action of active, before any frame is read (None
        # only while connecting and handshaking): typed as set, so that the hot path reads
        # it without a check.
        self._decoder: FrameDecoder = None  # type: ignore[assignment]
        self._read_size = READ_MIN
        self._timer: Timer | None = None
        self._attached = False
        self._watching = False  # the pipe wants its input read (not paused, not dead)
        self._lent = False  # a caller's thread reads it instead of the loop (see Lender)
        self._large_reads = False  # the last read was the rest of a large body (Lender.lend)
        #: The transport can hold a stream's readiness until a whole body is there
        #: (``_read_whole_body``; TCP on Linux).
        self._set_low_water: Callable[[Stream, int], bool | None] | None = getattr(
            transport, "set_read_low_water", None)
        self._mark = 1  # bytes queued before the stream is reported readable (SO_RCVLOWAT)
        self._read_whole = False  # a body of WHOLE_MIN or more came: read to the next start
        #: How core/caller_reader.py borrows this pipe's reading from the loop.
        self.lender = Lender(self)

    def __repr__(self) -> str:
        return f"<Pipe {self.id} {self.state} {self.peer_addr}>"

    # ---------------------------------------------------------------- what protocols use

    @property
    def free_bytes(self) -> int:
        """How many more bytes this pipe takes now (the last message may overshoot)."""
        return HIGH_WATER - self._out_bytes if self._out_bytes < HIGH_WATER else 0

    def _recount(self) -> None:
        """Set ``free`` from the queue, after buffers left it (an append updates it inline)."""
        queued = len(self._out)
        window = self._window
        self.free = window - queued if queued < window and self._out_bytes < HIGH_WATER else 0

    # ---------------------------------------------------------------- guards

    def is_dialed(self) -> bool:
        return self._dialed

    def has_output(self) -> bool:
        return bool(self._out)

    # ---------------------------------------------------------------- connecting

    def watch_connect(self) -> None:
        if self._connect_error:
            # The connect failed at once (e.g. no such IPC path): report it from the loop,
            # not from inside this transition.
            err = self._connect_error
            if not isinstance(err, OSError):
                err = OSError(err, _strerror(err))
            self.loop.call_soon(self._on_connect_failed, err)
            return
        self.loop.add_writer(self.stream, self._on_connect_ready)

    def unwatch_connect(self) -> None:
        if self.stream is not None:
            self.loop.remove_writer(self.stream)

    @entry_point
    def _on_connect_failed(self, err: OSError) -> None:
        # Posted by watch_connect: a close (a session closing, say) may have come first.
        if self.state == "connecting":
            self.evt_connect_failed(err)

    @entry_point
    def _on_connect_ready(self) -> None:
        # A pipe's stream is what its transport's connect or accept returned.
        err = self.transport.finish_connect(cast("socket.socket", self.stream))
        if err:
            self.evt_connect_failed(OSError(err, _strerror(err)))
        else:
            self.evt_connected()  # handshaking's tune_stream sets the stream's options

    def log_connect_failure(self, err: OSError) -> None:
        log.debug("pipe %d: connect to %s failed: %s", self.id, self.peer_addr, err)

    # ---------------------------------------------------------------- header exchange

    def tune_stream(self) -> None:
        options = self._options
        timing = (options.tcp_keepalive_idle, options.tcp_keepalive_interval,
                  options.tcp_keepalive_count)
        self.transport.configure_stream(cast("socket.socket", self.stream),
                                        nodelay=options.tcp_nodelay,
                                        keepalive=options.tcp_keepalive, keepalive_timing=timing)

    def send_handshake(self) -> None:
        # Both sides send their header at once, without waiting for the peer's (WIRE.md).
        self._queue(_Head(encode_handshake(self.socket.info.id)))

    def watch_handshake(self) -> None:
        self.loop.add_reader(self.stream, self._read_handshake)
        self._watching = True

    def start_handshake_timer(self) -> None:
        self._timer = self.loop.call_later(self._options.handshake_timeout, self._on_timeout)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @entry_point
    def _on_timeout(self) -> None:
        self._timer = None
        self.evt_timeout()

    @entry_point
    def _read_handshake(self) -> None:
        data = self._recv()
        if data is None:
            return
        self._handshake += data
        if len(self._handshake) < 8:
            return  # a header may arrive one byte at a time (WIRE.md)
        header, rest = self._handshake[:8], self._handshake[8:]
        self._handshake = b""
        if self._take_peer_header(header) and rest and self.state == "active":
            self._feed(rest)  # frames the peer sent right behind its header

    def _take_peer_header(self, header: bytes) -> bool:
        """Fire ``evt_handshake_ok`` if the peer's 8-byte header names a valid peer, else
        ``evt_handshake_bad``; True in the first case."""
        try:
            check_handshake(header, self.socket.info.peer_id)
        except Exception as err:
            self.evt_handshake_bad(err)
            return False
        self.evt_handshake_ok()
        return True

    def log_protocol_error(self, err: Exception) -> None:
        if isinstance(err, OversizeFrame):
            self.socket.stats.count(DROPPED_OVERSIZE)
            log.warning("pipe %d from %s closed: a %d-byte message exceeds recv_max_size=%d "
                        "(raise the recv_max_size option, 0 = unlimited)",
                        self.id, self.peer_addr, err.size, err.limit)
        else:
            self.socket.stats.count(DROPPED_MALFORMED)
            log.warning("pipe %d from %s closed: %s", self.id, self.peer_addr, err)

    def log_handshake_timeout(self) -> None:
        log.warning("pipe %d from %s closed: no SP header within handshake_timeout=%ss",
                    self.id, self.peer_addr, self._options.handshake_timeout)

    # ---------------------------------------------------------------- active

    def watch_frames(self) -> None:
        self._decoder = FrameDecoder(self._ipc, self.endpoint.recv_max_size)
        self.loop.add_reader(self.stream, self._read_frames)  # replaces the handshake reader

    def stop_reading(self) -> None:
        # The user's receive queue is full: let TCP push back on the peer.
        if self._watching:
            self._watching = False
            if self._lent and self.lender.on_stop is not None:
                self.lender.on_stop()  # a loan kept between two receives goes back
            self.loop.remove_reader(self.stream)

    def start_reading(self) -> None:
        if not self._watching:
            self._watching = True
            self.loop.add_reader(self.stream, self._read_frames)

    def attach_to_socket(self) -> None:
        log.debug("pipe %d to %s active (%r)", self.id, self.peer_addr, self.socket.info)
        self._attached = True
        self.socket.evt_pipe_opened(self)
        self.loop.call_soon(fire, self.owner, "evt_pipe_opened", self)

    def detach_from_socket(self) -> None:
        self.socket.proto.evt_pipe_removed(self)

    @entry_point
    def _read_frames(self) -> None:
        decoder = self._decoder
        # A small frame's read (the usual one) asks nothing more of the decoder: a body
        # missing fewer than READ_MIN bytes is read with the chunk behind it.
        body = decoder.pending_body() if decoder.body_missing >= READ_MIN else None
        if body is not None:
            if self._set_low_water is not None and decoder.body_size >= WHOLE_MIN:
                if (len(body) <= SCRATCH_KEEP and decoder.body_untouched
                        and self._read_whole_body(len(body))):
                    return
                self._read_whole = True  # the next body may be waited for whole
            # The rest of a large body: straight into its buffer, never past its end (a
            # small rest comes with the next chunk, which carries the frames behind it).
            try:
                n = self.stream.recv_into(body)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self.evt_io_error(err)
                return
            if not n:
                self.evt_peer_closed()
                return
            self._large_reads = True
            msgs = self._decoder.body_filled(n)
            if msgs:
                self.evt_msgs(msgs)
            return
        self._read_chunk()

    def _read_chunk(self) -> None:
        decoder = self._decoder
        if self._large_reads:
            # Most likely the next large body starts here: a small chunk, so that little of
            # it is copied into the body's buffer rather than received straight into it.
            self._large_reads = False
            self._read_size = READ_MIN
        if self._read_whole:
            # After a body of WHOLE_MIN or more: up to the next body's start only (the rest
            # of this body, the next prefix), so that the next body can be waited for whole.
            # At most READ_MAX: a body too large to be given a buffer of its own (its prefix
            # announced 2**62 bytes, say) is read in chunks, not asked for whole (recv()
            # raised MemoryError or OverflowError, an internal error of the pipe).
            self._read_size = min(decoder.to_next_body, READ_MAX)
        data = self._recv()
        if data is not None:
            self._feed(data)
            if self._read_whole and decoder.body_untouched and self.stream is not None:
                # At the next body's start: wait for it whole, or read chunks from here on.
                self._read_whole = False
                self._read_size = READ_MIN
                missing = decoder.body_missing
                if WHOLE_MIN <= missing <= SCRATCH_KEEP:
                    if missing != self._mark:  # a body of the last one's size keeps it
                        self._set_mark(missing)
                    return
        if self._mark != 1 and self.stream is not None:
            self._set_mark(1)  # left by the body read last: the next bytes are wanted now

    def _read_whole_body(self, missing: int) -> bool:
        # A large body of which nothing has come yet (its prefix ended the last read): the
        # kernel reports the stream readable once all of it is queued (the mark), and one
        # recv() then returns it as the very bytes object handed to the user. Read as
        # chunks, it took a wake-up, a read and a copy into its buffer per chunk, then a
        # copy of the whole: a PULL receiving 1 MiB messages from a bare sender, 193-214 µs
        # of CPU a message against 109-131 (docs/ARCHITECTURE.md, "The pipe").
        # False, with nothing read, if the transport declines the mark for now: the caller
        # reads this body in chunks.
        if self._mark != missing:
            return self._set_mark(missing)  # the first readable event after the prefix
        try:
            data = self.stream.recv(missing)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as err:
            self.evt_io_error(err)
            return True
        if not data:
            self.evt_peer_closed()
            return True
        self._large_reads = self._read_whole = True
        # All of it, or a part: at the peer's EOF, or when the kernel ran short of buffer
        # and reported the stream readable early (the rest then comes in chunks).
        msgs = self._decoder.body_received(data)
        if msgs:
            self.evt_msgs(msgs)
        if self.stream is None:
            return True
        if msgs and self._watching:
            # The next prefix, if it came: a body of the same size keeps the mark where it
            # is (a stream of equal messages sets it once), anything else moves it. Not
            # while paused (the delivery filled the receive queue): the loop reads again
            # once the user has taken half.
            self._read_chunk()
        else:
            self._set_mark(1)
        return True

    def _set_mark(self, nbytes: int) -> bool:
        """Have the stream reported readable once ``nbytes`` bytes are queued. False only
        if the transport declines a large mark for now (its receive buffer is still too
        small for the body: ``set_read_low_water``): the mark is then one byte, and the
        body is read in chunks; a later body asks again."""
        set_low_water = self._set_low_water
        assert set_low_water is not None  # only called where the transport has it
        try:
            done = set_low_water(self.stream, nbytes)
        except OSError as err:
            self.evt_io_error(err)
            return True
        if done:
            self._mark = nbytes
        elif done is None:  # not yet
            if self._mark != 1:
                self._set_mark(1)
            return self.stream is None  # (unless setting that failed the pipe)
        else:  # the platform cannot: read chunks, as other transports do
            self._set_low_water = None
        return True

    def _feed(self, data: bytes) -> None:
        try:
            msgs = self._decoder.feed(data)
        except ProtocolError as err:
            # Bad input from the peer. Anything else (a MemoryError for a body we cannot
            # allocate) is ours: it fails the pipe through the entry point, counted in
            # pipe_errors with its traceback, and the session goes on.
            # Frames decoded before the bad one in the same chunk still count.
            good = getattr(err, "frames", None)
            if good:
                self.evt_msgs(good)
            # Delivering the good frames may have closed the pipe; in any other state it
            # reads in (active, closing, a subclass's own closing state), the table says
            # what a bad frame does.
            if self.state != "dead":
                self.evt_bad_frame(err)
            return
        if msgs:
            self.evt_msgs(msgs)

    def deliver(self, msgs: list[bytes]) -> None:
        self.socket.proto.evt_pipe_recv(self, msgs)

    def discard(self, msgs: list[bytes]) -> None:
        self.socket.stats.count(DROPPED_CLOSING, len(msgs))

    def enqueue(self, body: bytes, header: bytes = b"") -> None:
        size = len(header) + len(body)
        self._out_msgs += 1
        if size > JOIN_MAX:
            self._queue(_Head(self._prefix(size) + header))
            self._queue(body)
            return
        # One buffer per small message, queued inline (_queue's steps): the hot path of
        # every send.
        frame = self._prefix(size) + header + body if header else self._prefix(size) + body
        self._out.append(frame)
        self._out_bytes += len(frame)
        free = self.free  # one buffer more: one slot less, or none once the bytes are full
        if free:
            self.free = free - 1 if self._out_bytes < HIGH_WATER else 0
        if not self._flush_scheduled and not self._writer_registered:
            # Nothing was queued before this frame (a flush scheduled or a writer waiting
            # otherwise).
            self._flush_scheduled = True
            self.loop.call_after_batch(self._flush)
            if self.loop.writing_at_once:
                self._write_early(frame)

    def _write_early(self, frame: bytes) -> None:
        """Write the pipe's one queued frame now, in a caller's lone send, rather than
        after the protocol's remaining actions (a request's resend deadline, the credit's
        restatement, about 0.5 µs of a REQ's): the bytes leave the queue in the flush after
        the batch, which also fires ``evt_flushed`` there, so no machine sees an event in
        the middle of the one that queued the frame."""
        try:
            self._written_early = self.stream.send(frame)
        except OSError:
            pass  # would block, or the stream failed: the flush meets it again
        except BaseException as err:
            # An interrupt, as the call returned: whether the frame reached the kernel, and
            # how much of it, is unknown, so the stream cannot be trusted any more (as in
            # an entry point's interrupt: core/guard.py).
            crash(self, Interrupted(f"{type(err).__name__} in the middle of its work"))
            raise

    def enqueue_published(self, body: bytes) -> None:
        # PUB sends one body to every pipe in one go: the first pipe of each framing builds
        # the frame, the others queue that very bytes object (docs/ARCHITECTURE.md, "The
        # pipe"). The socket keeps the last one built; its pipes all run under one session.
        last_body, last_ipc, frame = self.socket.published
        if last_body is not body or last_ipc is not self._ipc:
            size = len(body)
            if size > JOIN_MAX:
                self.enqueue(body)  # not joined: nothing to share
                return
            frame = self._prefix(size) + body
            self.socket.published = (body, self._ipc, frame)
        self._out_msgs += 1
        self._queue(frame)

    def enqueue_many(self, bodies: list[bytes]) -> None:
        # A batch drained by the I/O thread, in one event (Push.send_many): what enqueue
        # does for each body, from the front while the pipe has room, with one prefix per
        # run of equal sizes and one flush. It stops at the first body it has no room for
        # or that is too large to join (enqueue sends those as two buffers) and leaves it
        # and the rest in ``bodies``: the caller places them one by one.
        out = self._out
        nbytes = self._out_bytes
        free = self.free
        prefix = self._prefix
        head, last = b"", -1
        taken = 0
        for body in bodies:
            size = len(body)
            if not free or size > JOIN_MAX:
                break
            if size != last:
                head, last = prefix(size), size
            frame = head + body
            out.append(frame)
            nbytes += len(frame)
            free = free - 1 if nbytes < HIGH_WATER else 0
            taken += 1
        if taken:
            self._out_bytes = nbytes
            self.free = free
            self._out_msgs += taken
            del bodies[:taken]
            self._flush_soon()

    def enqueue_published_many(self, batch: Publication) -> None:
        # What enqueue_published does for each body of the batch while the pipe has room,
        # found at once: the room in slots, then the first frame that brings the queue to
        # HIGH_WATER bytes takes the last one (bisect on the running totals). The rest is
        # missed, as a pipe with no room misses a message.
        frames, ends = batch.framed(self._ipc, self._prefix)
        batch.missed += len(frames) - self._queue_run(frames, ends)

    def _queue_run(self, bufs: Sequence[bytes], ends: Sequence[int]) -> int:
        """Queue the front of ``bufs`` (whole messages; ``ends``: their running size
        totals) that the pipe has room for, found at once: what ``_queue`` would take one
        at a time, the room in slots, then the buffer that brings the queue to HIGH_WATER
        bytes as the last one (bisect on the totals). Returns how many, flush scheduled."""
        count = len(bufs)
        free = self.free
        n = free if free < count else count
        if n:
            base = self._out_bytes
            last = bisect.bisect_left(ends, HIGH_WATER - base, 0, n)
            if last < n:
                n, free = last + 1, 0
            else:
                free -= n
            self._out.extend(itertools.islice(bufs, n))
            self._out_bytes = base + ends[n - 1]
            self.free = free
            self._out_msgs += n
            self._flush_soon()
        return n

    def _publish_each(self, batch: Publication) -> None:
        """``enqueue_published_many`` for a pipe with its own framing (memory, WebSocket):
        one body at a time, while there is room; the rest is missed."""
        taken = 0
        for body in batch.bodies:
            if not self.free:
                break
            self.enqueue_published(body)
            taken += 1
        batch.missed += len(batch.bodies) - taken

    def _enqueue_each(self, bodies: list[bytes]) -> None:
        """``enqueue_many`` for a pipe with its own ``enqueue`` (WebSocket): one
        body at a time, while there is room; the rest stays in ``bodies``."""
        taken = 0
        for body in bodies:
            if not self.free:
                break
            self.enqueue(body)
            taken += 1
        del bodies[:taken]

    def report_capacity(self) -> None:
        self.socket.proto.evt_pipe_ready(self)

    # ---------------------------------------------------------------- writing

    def _queue(self, buf: bytes | bytearray | memoryview) -> None:
        self._out.append(buf)
        self._out_bytes += len(buf)
        free = self.free  # as in enqueue (the memory pipe queues every message here)
        if free:
            self.free = free - 1 if self._out_bytes < HIGH_WATER else 0
        if not self._flush_scheduled and not self._writer_registered:
            # Flush once the loop has handled everything pending in this iteration, so all
            # the frames queued meanwhile leave in one sendmsg (docs/ARCHITECTURE.md, "The pipe"),
            # and before it sleeps again, so none waits for another select.
            self._flush_scheduled = True
            self.loop.call_after_batch(self._flush)

    def _flush_soon(self) -> None:
        """``_queue``'s last step, for a batch queued at once (one call per batch)."""
        if not self._flush_scheduled and not self._writer_registered:
            self._flush_scheduled = True
            self.loop.call_after_batch(self._flush)

    @entry_point
    def _flush(self) -> None:
        self._flush_scheduled = False
        sent = self._written_early
        if sent:
            self._written_early = 0
        if self.state == "dead" or not self._out:
            return
        out = self._out
        if sent and sent < self._out_bytes and sent == len(out[0]):
            # The frame written at once went whole, and frames were queued behind it since:
            # it leaves the queue, and they are written below.
            out.popleft()
            self._out_bytes -= sent
            self._out_msgs -= 1
            sent = 0
        if not sent:
            try:
                # One buffer (a lone small frame: a request, a reply) goes with send(): 0.25
                # µs less than sendmsg() and its list, before the frame reaches the kernel.
                count = len(out)
                if count == 1:
                    sent = self.stream.send(out[0])
                elif self._out_bytes <= JOIN_WRITE_AVG * count:
                    sent = self.stream.send(b"".join(itertools.islice(out, MAX_IOV)))
                else:
                    sent = self.stream.sendmsg(list(itertools.islice(out, MAX_IOV)))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as err:
                self.evt_io_error(err)
                return
        if sent == self._out_bytes:
            # Everything queued went out (the usual case; no queued buffer is ever empty,
            # so these were all of them): no per-buffer bookkeeping.
            out.clear()
            self._out_bytes = self._out_msgs = 0
            sent = 0
        self._out_bytes -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                sent -= len(head)
                out.popleft()
                if type(head) is not _Head:
                    self._out_msgs -= 1
            else:
                # What is left of a large message's prefix stays a _Head (not a message's
                # end): as a memoryview it counted as one, and _out_msgs fell by one too many.
                out[0] = _Head(head[sent:]) if type(head) is _Head else memoryview(head)[sent:]
                sent = 0
        self._recount()
        if out and not self._writer_registered:
            self._writer_registered = True
            self.loop.add_writer(self.stream, self._flush)
        elif not out and self._writer_registered:
            self._writer_registered = False
            self.loop.remove_writer(self.stream)
        self.evt_flushed()

    # ---------------------------------------------------------------- closing and death

    def start_linger_timer(self) -> None:
        self._timer = self.loop.call_later(self._options.linger, self._on_timeout)

    def log_linger_expired(self) -> None:
        msgs, size = self._dropped  # release() already emptied the queue
        self.socket.stats.count(DROPPED_LINGER, msgs)
        log.warning("pipe %d to %s closed with %d unsent messages (%d bytes): linger=%ss expired",
                    self.id, self.peer_addr, msgs, size, self._options.linger)

    def log_peer_closed(self) -> None:
        log.debug("pipe %d: %s closed the connection", self.id, self.peer_addr)

    def log_io_error(self, err: OSError) -> None:
        log.debug("pipe %d to %s failed: %s", self.id, self.peer_addr, err)

    def log_crash(self, err: Exception) -> None:
        self.socket.stats.count(PIPES_INTERRUPTED if isinstance(err, Interrupted) else PIPE_ERRORS)
        log_crash(log, f"pipe {self.id} to {self.peer_addr}", err)

    def _abandon(self) -> None:
        # Even the way out failed: drop the connection by hand so nothing hangs on it.
        self.state = "dead"
        if self.stream is not None:
            self.loop.remove_reader(self.stream)
            self.loop.remove_writer(self.stream)
            self.stream.close()
            self.stream = None  # type: ignore[assignment]

    def release(self) -> None:
        log.debug("pipe %d to %s closed", self.id, self.peer_addr)
        self.cancel_timer()
        stream: Stream | None = self.stream
        self.stream = None  # type: ignore[assignment]
        if self._lent:  # a caller sleeps on this stream: it must not wait on a closed fd
            self.socket.channel.wake_reader()
            if self.lender.on_stop is not None:  # a loan kept between two receives
                self.lender.on_stop()
        if stream is not None:
            if self._watching:
                self.loop.remove_reader(stream)
            if self._writer_registered:
                self.loop.remove_writer(stream)
            stream.close()
        self._dropped = (self._out_msgs, self._out_bytes)
        self._out.clear()
        self._out_bytes = self._out_msgs = 0
        self._recount()
        if self._attached:
            self.loop.call_soon(fire, self.socket, "evt_pipe_closed", self)
        self.loop.call_soon(fire, self.owner, "evt_pipe_closed", self)

    # ---------------------------------------------------------------- reading

    def _recv(self) -> bytes | None:
        """A chunk from the peer, or None after firing the event for EOF or an error."""
        size = self._read_size
        try:
            data = self.stream.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as err:
            self.evt_io_error(err)
            return None
        if not data:
            self.evt_peer_closed()
            return None
        if len(data) == size:
            if size < READ_MAX:
                self._read_size = size * 2
        elif len(data) < READ_MIN:
            self._read_size = READ_MIN
        return data


class Lender:
    """Lends a pipe's reading to a caller's thread (core/caller_reader.py), with the
    session lock held: while lent, the loop does not watch the stream, and the caller polls
    it and reads it with ``read``. Pausing (the pipe's ``_watching``) removes the reader
    from the loop, lent or not; a pipe given back is watched only if it still has one.
    """

    __slots__ = ("_pipe", "on_stop")

    #: Whether ``lend`` may ever say yes (the socket counts such pipes: ``CallerReader``).
    LENDABLE = True

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        #: Called when the pipe stops reading while lent, because it dies (before its
        #: stream closes) or pauses: a loan kept between two receives (by an asyncio
        #: event loop, or by a thread's recv()) goes back (core/caller_reader.py).
        self.on_stop: Callable[[], object] | None = None

    def lend(self, alarm: Callable[[], object] | None = None) -> bool:
        """Take the pipe's reading from the loop; False if it is not reading frames now (not
        active, paused, or lent already). ``alarm``: see ``Loop.lend_reader``."""
        pipe = self._pipe
        if pipe._lent or not self._reads_small_frames():
            return False
        # Marked first: a Ctrl-C inside lend_reader leaves the pipe marked lent, and
        # give_back then undoes whatever part of the loan was made.
        pipe._lent = True
        if not pipe.loop.lend_reader(pipe.stream, alarm):
            pipe._lent = False
        return pipe._lent

    def keeps(self) -> bool:
        """Whether a loan of this pipe may be kept for the next receive: still lent, and
        as ``lend`` would lend it now."""
        return self._pipe._lent and self._reads_small_frames()

    def _reads_small_frames(self) -> bool:
        pipe = self._pipe
        if not pipe._watching or pipe.state != "active":
            return False
        decoder = pipe._decoder  # None in a WebSocket pipe, which has its own
        # Large bodies come, or one is half read: the loop reads them (one hand-off a
        # message, small next to the body), rather than the loop and callers taking turns
        # at the stream, each turn a wait for the session (docs/ARCHITECTURE.md, "One
        # owner at a time": 1 MiB messages, a third of the receiver's CPU).
        return not (pipe._large_reads
                    or (decoder is not None and decoder.body_missing >= READ_MIN))

    @property
    def stream(self) -> Stream | None:
        """The lent stream, to poll (None once the pipe is dead)."""
        return self._pipe.stream

    def read(self) -> None:
        """Read what the lent stream holds (it polled readable)."""
        pipe = self._pipe
        if pipe._lent and pipe.stream is not None:
            pipe._read_frames()

    def give_back(self) -> None:
        """The loop watches the stream again, if the pipe still reads."""
        pipe = self._pipe
        if pipe._lent:
            # Unmarked last: a Ctrl-C before the loop has the reader back leaves the pipe
            # marked, and the next loan of the socket's pipes gives it back first.
            if pipe.stream is not None:
                pipe.loop.return_reader(pipe.stream)
            pipe._lent = False


def _strerror(err: int) -> str:
    import os

    return os.strerror(err)
