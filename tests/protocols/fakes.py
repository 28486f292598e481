"""Test doubles for the sans-IO machines: a fake clock and reactor, a scripted stream, a
recording protocol context, and fake pipes, sockets, owners and transports.

Everything here runs in the test's own thread, synchronously: nothing sleeps, nothing
selects. A test drives time with ``FakeLoop.advance`` and the loop's deferred work with
``FakeLoop.run_ready``, fires readiness by hand with ``fire_reader``/``fire_writer``, and
then asserts on what the doubles recorded.

The doubles mirror the interfaces the library really uses:

- ``FakeLoop``: ``scaproust.reactor.loop.Loop`` as seen from the I/O thread (call_soon,
  call_after_batch, call_later, call_at, time, add/remove reader and writer,
  call_soon_threadsafe);
- ``FakeStream``: the non-blocking socket a pipe reads and writes (recv, sendmsg, close,
  getpeername);
- ``RecordingContext``: ``scaproust.core.context.Context``, the one seam of a protocol;
- ``FakePipe``: what a protocol sees of a pipe (``id``, ``free``, ``cmd_send``,
  ``cmd_close``);
- ``FakeSocket``, ``FakeOwner``, ``FakeTransport``, ``RecordingProto``: the neighbours of a
  real ``scaproust.core.pipe.Pipe``.

Unlike the real loop, a callback that raises here propagates to the test: a sans-IO test
wants to see the error, not a log line.
"""

from __future__ import annotations

import heapq
import itertools
import types
from collections import deque
from collections.abc import Callable
from typing import Any

from scaproust.core.options import Options
from scaproust.core.stats import Stats

# ---------------------------------------------------------------------------- clock and loop


class FakeClock:
    """A monotonic clock that only moves when told to; callable like ``time.monotonic``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds


class FakeTimer:
    """The handle ``call_later``/``call_at`` return; ``cancel()`` is idempotent."""

    __slots__ = ("when", "fn", "args", "cancelled", "fired")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "fired" if self.fired else "pending"
        return f"<FakeTimer when={self.when} {state} {self.fn!r}>"


class FakeLoop:
    """The reactor interface of ``scaproust.reactor.loop.Loop``, driven by hand.

    Inspection: ``readers`` and ``writers`` map each registered file object to its callback;
    ``history`` lists every registration change in order, e.g. ``("add_writer", stream)``;
    ``ready`` holds the callbacks queued by ``call_soon``/``call_soon_threadsafe``/
    ``call_soon_quietly`` (``threadsafe_calls`` counts the second), and
    ``after_batch`` those queued by ``call_after_batch``; ``pending_timers()`` the timers
    not yet fired nor cancelled.
    """

    #: ``run_ready`` gives up after this many callbacks: a callback that reschedules itself
    #: forever is a bug in the code under test, and must fail the test rather than hang it.
    RUN_LIMIT = 10_000

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.ready: deque[tuple[Callable[..., Any], tuple]] = deque()
        self.after_batch: list[tuple[Callable[..., Any], tuple]] = []
        self.readers: dict[Any, Callable[[], Any]] = {}
        self.lent: set = set()  # readers lent to a caller: registered, but not fired
        self.writers: dict[Any, Callable[[], Any]] = {}
        self.history: list[tuple[str, Any]] = []
        self.threadsafe_calls = 0
        self.writing_at_once = False  # set by a test, as SocketCore's lone send sets it
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------------ the reactor interface

    def time(self) -> float:
        return self.clock()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.ready.append((fn, args))

    def call_after_batch(self, fn: Callable[..., Any], *args: Any) -> None:
        self.after_batch.append((fn, args))

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        self.threadsafe_calls += 1
        self.ready.append((fn, args))

    def call_soon_quietly(self, fn: Callable[..., Any], *args: Any) -> None:
        self.ready.append((fn, args))  # run_ready runs it, as the loop's next turn would

    def nudge(self) -> None:
        pass  # nothing sleeps here

    def notify_after_release(self, cond: Any, n: int) -> None:
        cond.notify(n)  # no owner sections here: the sleepers wake at once

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> FakeTimer:
        return self.call_at(self.clock() + delay, fn, *args)

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, fn, args)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def add_reader(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        self.readers[fileobj] = callback
        self.history.append(("add_reader", fileobj))

    def remove_reader(self, fileobj: Any) -> bool:
        self.history.append(("remove_reader", fileobj))
        self.lent.discard(fileobj)
        return self.readers.pop(fileobj, None) is not None

    def lend_reader(self, fileobj: Any, alarm: Any = None) -> bool:
        self.history.append(("lend_reader", fileobj))
        if fileobj not in self.readers or fileobj in self.lent:
            return False
        self.lent.add(fileobj)
        return True

    def return_reader(self, fileobj: Any) -> None:
        self.history.append(("return_reader", fileobj))
        self.lent.discard(fileobj)

    def add_writer(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        self.writers[fileobj] = callback
        self.history.append(("add_writer", fileobj))

    def remove_writer(self, fileobj: Any) -> bool:
        self.history.append(("remove_writer", fileobj))
        return self.writers.pop(fileobj, None) is not None

    # ------------------------------------------------------------------ test helpers

    def run_ready(self) -> int:
        """Run queued callbacks, and those they queue, until none is left; return how many
        ran. Like the real loop, each round runs the ``call_soon`` callbacks queued when it
        starts, then the ``call_after_batch`` ones; what they queue waits for the next
        round. Raises ``AssertionError`` past ``RUN_LIMIT`` callbacks (something that never
        stops rescheduling itself)."""
        ran = 0
        while self.ready or self.after_batch:
            batch = [self.ready.popleft() for _ in range(len(self.ready))]
            batch += self.after_batch
            self.after_batch = []
            for fn, args in batch:
                if ran >= self.RUN_LIMIT:
                    raise AssertionError(
                        f"run_ready: more than {self.RUN_LIMIT} callbacks; something keeps "
                        f"rescheduling itself (next: {fn!r})"
                    )
                fn(*args)
                ran += 1
        return ran

    def advance(self, seconds: float) -> int:
        """Move the clock ``seconds`` ahead, firing every timer due on the way in
        ``(when, scheduling order)``, with the clock set to each timer's deadline while it
        runs; return how many fired. Callbacks they queue with ``call_soon`` stay queued
        for ``run_ready``."""
        target = self.clock() + seconds
        fired = 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if when > self.clock.now:
                self.clock.now = when
            timer.fired = True
            timer.fn(*timer.args)
            fired += 1
        self.clock.now = max(self.clock.now, target)
        return fired

    def pending_timers(self) -> list[FakeTimer]:
        """Timers neither fired nor cancelled, earliest first."""
        return [t for _, _, t in sorted(self._timers) if not t.cancelled and not t.fired]

    def fire_reader(self, fileobj: Any) -> None:
        """Call the reader registered for ``fileobj``, as a readable event would."""
        try:
            callback = self.readers[fileobj]
        except KeyError:
            raise AssertionError(f"no reader registered for {fileobj!r}") from None
        if fileobj in self.lent:
            raise AssertionError(f"the reader of {fileobj!r} is lent: the loop does not fire it")
        callback()

    def fire_writer(self, fileobj: Any) -> None:
        """Call the writer registered for ``fileobj``, as a writable event would."""
        try:
            callback = self.writers[fileobj]
        except KeyError:
            raise AssertionError(f"no writer registered for {fileobj!r}") from None
        callback()


# ---------------------------------------------------------------------------- stream


class FakeStream:
    """A scripted non-blocking stream socket.

    Reading: ``feed(*chunks)`` queues chunks that ``recv`` returns one per call (split if a
    chunk is larger than ``recv``'s ``n``); with nothing queued ``recv`` raises
    ``BlockingIOError``, or returns ``b""`` once ``feed_eof()`` was called, or raises the
    exception given to ``fail_recv``.

    Writing: ``sendmsg`` records the buffers it was given (``sendmsg_calls``, the very
    objects, for identity checks; a ``send`` of one buffer is recorded there as a call
    with one buffer, and counted in ``send_calls``) and the bytes it accepted
    (``written``). Set ``accept_per_call`` to k to take at most k bytes a call (partial
    writes), ``block_writes`` to raise ``BlockingIOError``, ``send_error`` to raise that
    exception.
    """

    def __init__(self, *chunks: bytes, peer: Any = ("127.0.0.1", 5555)) -> None:
        self._chunks: deque[bytes] = deque(chunks)
        self._eof = False
        self._recv_error: BaseException | None = None
        self.peer = peer
        self.written = bytearray()
        self.sendmsg_calls: list[list[Any]] = []
        self.send_calls = 0  # of those, the ones made with send()
        self.accept_per_call: int | None = None
        self.block_writes = False
        self.send_error: BaseException | None = None
        self.closed = False
        self.close_calls = 0
        self.recv_sizes: list[int] = []  # what each recv() asked for
        self.recv_into_sizes: list[int] = []  # the buffer size of each recv_into()

    def __repr__(self) -> str:
        return f"<FakeStream peer={self.peer!r}{' closed' if self.closed else ''}>"

    # ------------------------------------------------------------------ scripting

    def feed(self, *chunks: bytes) -> None:
        self._chunks.extend(chunks)

    def feed_eof(self) -> None:
        self._eof = True

    def fail_recv(self, error: BaseException) -> None:
        self._recv_error = error

    # ------------------------------------------------------------------ socket interface

    def recv(self, n: int) -> bytes:
        self.recv_sizes.append(n)
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        if self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > n:
                chunk, rest = chunk[:n], chunk[n:]
                self._chunks.appendleft(rest)
            return chunk
        if self._recv_error is not None:
            raise self._recv_error
        if self._eof:
            return b""
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def recv_into(self, buffer) -> int:
        self.recv_into_sizes.append(len(buffer))
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        if self._chunks:
            chunk = self._chunks.popleft()
            n = min(len(chunk), len(buffer))
            buffer[:n] = chunk[:n]
            if n < len(chunk):
                self._chunks.appendleft(chunk[n:])
            return n
        if self._recv_error is not None:
            raise self._recv_error
        if self._eof:
            return 0
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def send(self, data) -> int:
        # Recorded as a one-buffer sendmsg too: a pipe writes a lone queued buffer this way.
        self.send_calls += 1
        return self.sendmsg([data])

    def sendmsg(self, buffers) -> int:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        buffers = list(buffers)
        self.sendmsg_calls.append(buffers)
        if self.send_error is not None:
            raise self.send_error
        if self.block_writes:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        data = b"".join(bytes(b) for b in buffers)
        if self.accept_per_call is not None:
            data = data[: self.accept_per_call]
        self.written += data
        return len(data)

    def close(self) -> None:
        self.closed = True
        self.close_calls += 1

    def getpeername(self) -> Any:
        return self.peer


# ---------------------------------------------------------------------------- protocol side


class RecordingStats(Stats):
    """Real counters that also log each ``count`` call into the owner's call list."""

    def __init__(self, calls: list[tuple]) -> None:
        super().__init__()
        self._calls = calls

    def count(self, name: str, n: int = 1) -> None:
        self._calls.append(("stats.count", name, n))
        super().count(name, n)


class RecordingContext:
    """``scaproust.core.context.Context`` for protocol tests: records every call in order.

    ``calls`` holds tuples such as ``("deliver", [b"a"])``, ``("set_send_capacity", 3)``,
    ``("reject_pipe", pipe)``, ``("stats.count", "dropped_unexpected", 1)``. Shortcuts:
    ``delivered`` (every item delivered, flattened), ``capacity`` (the last capacity set,
    None before the first), ``rejected`` (pipes rejected). Timers go to ``loop``.
    """

    def __init__(self, loop: FakeLoop | None = None, options=None) -> None:
        self.loop = loop if loop is not None else FakeLoop()
        if options is not None:  # the socket's options, for a protocol that reads some
            self.options = options
        self.calls: list[tuple] = []
        self.byte_capacities: list[int | None] = []
        self.priorities: list[int] = []
        self.stats = RecordingStats(self.calls)

    def deliver(self, items, priority: int = 8) -> None:
        self.calls.append(("deliver", list(items)))
        self.priorities.append(priority)

    def set_send_capacity(self, capacity: int, nbytes: int | None = None) -> None:
        # Calls keep the message capacity; byte capacities are listed on their own so the
        # tests about message counts read simply.
        self.calls.append(("set_send_capacity", capacity))
        self.byte_capacities.append(nbytes)

    def reject_pipe(self, pipe) -> None:
        self.calls.append(("reject_pipe", pipe))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> FakeTimer:
        self.calls.append(("call_later", delay, fn, args))
        return self.loop.call_later(delay, fn, *args)

    def time(self) -> float:
        self.calls.append(("time",))
        return self.loop.time()

    # ------------------------------------------------------------------ shortcuts

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    @property
    def delivered(self) -> list:
        return [item for call in self.calls if call[0] == "deliver" for item in call[1]]

    @property
    def capacities(self) -> list[int]:
        return [call[1] for call in self.calls if call[0] == "set_send_capacity"]

    @property
    def capacity(self) -> int | None:
        capacities = self.capacities
        return capacities[-1] if capacities else None

    @property
    def rejected(self) -> list:
        return [call[1] for call in self.calls if call[0] == "reject_pipe"]

    def clear(self) -> None:
        self.calls.clear()


class QueueingContext(RecordingContext):
    """A ``RecordingContext`` with a receive queue (``queue``) the protocol can measure
    (``queued``) and trim (``drop_oldest``), as a SUB context bounds its own; its options
    are a SUB's, with ``recv_buffer`` as given."""

    def __init__(self, loop: FakeLoop | None = None, recv_buffer: int = 1024) -> None:
        super().__init__(loop)
        self.options = Options("sub", recv_buffer=recv_buffer)
        self.queue: list = []

    def deliver(self, items, priority: int = 8) -> None:
        super().deliver(items, priority)
        self.queue.extend(items)

    def queued(self) -> int:
        return len(self.queue)

    def drop_oldest(self) -> bool:
        if not self.queue:
            return False
        self.queue.pop(0)
        return True


class FakePipe:
    """What a protocol sees of a pipe: ``id``, ``free`` slots, ``cmd_send``, ``cmd_close``.

    ``cmd_send`` records ``(body, header)`` in ``sent`` (and in the shared ``journal`` list,
    if given, as ``(pipe, body)``, to see the order across pipes) and takes one free slot.
    Sending to a pipe with no free slot is a protocol bug, so it fails the test at once.
    """

    _ids = itertools.count(1)
    #: As a socket sees it: a pipe its callers can never borrow (nothing to poll).
    lender = types.SimpleNamespace(LENDABLE=False)

    def __init__(self, free: int = 1, *, name: str | None = None, journal: list | None = None,
                 free_bytes: int = 1 << 20, send_priority: int = 8, recv_priority: int = 8):
        self.id = next(self._ids)
        self.name = name or f"p{self.id}"
        self.free = free
        self.free_bytes = free_bytes
        self.send_priority = send_priority
        self.recv_priority = recv_priority
        self.sent: list[tuple[bytes, bytes]] = []
        self.many_calls = 0  # cmd_send_many events received
        self.closed = False
        self.journal = journal

    def __repr__(self) -> str:
        return f"<FakePipe {self.name} free={self.free}>"

    def cmd_publish(self, body) -> None:
        self.cmd_send(body)  # PUB's send: the same, the frame shared among real pipes

    def cmd_send(self, body, header=b"") -> None:
        if self.free <= 0:
            raise AssertionError(f"{self!r}: the protocol sent to a pipe with no free slot")
        self.free -= 1
        self.free_bytes = max(0, self.free_bytes - len(header) - len(body))
        self.sent.append((body, header))
        if self.journal is not None:
            self.journal.append((self, body))

    def cmd_send_many(self, bodies: list) -> None:
        """A real pipe's ``enqueue_many``: from the front while it has a free slot, each as
        ``cmd_send`` would; what it has no room for stays in ``bodies``."""
        self.many_calls += 1
        taken = 0
        for body in bodies:
            if self.free <= 0:
                break
            self.cmd_send(body)
            taken += 1
        del bodies[:taken]

    def cmd_publish_many(self, batch) -> None:
        """A real pipe's ``enqueue_published_many``: each body as ``cmd_publish`` would,
        while it has a free slot; the rest counted in ``batch.missed``."""
        self.many_calls += 1
        taken = 0
        for body in batch.bodies:
            if self.free <= 0:
                break
            self.cmd_publish(body)
            taken += 1
        batch.missed += len(batch.bodies) - taken

    def cmd_close(self) -> None:
        self.closed = True

    @property
    def bodies(self) -> list[bytes]:
        return [body for body, _ in self.sent]


# ---------------------------------------------------------------------------- pipe side


class RecordingProto:
    """The protocol machine as a pipe sees it: records each event, in order, in ``calls``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def evt_pipe_added(self, pipe) -> None:
        self.calls.append(("evt_pipe_added", pipe))

    def evt_pipe_removed(self, pipe) -> None:
        self.calls.append(("evt_pipe_removed", pipe))

    def evt_pipe_ready(self, pipe) -> None:
        self.calls.append(("evt_pipe_ready", pipe))

    def evt_pipe_recv(self, pipe, msgs) -> None:
        self.calls.append(("evt_pipe_recv", pipe, list(msgs)))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    @property
    def received(self) -> list:
        """Every message delivered, flattened, in order."""
        return [m for call in self.calls if call[0] == "evt_pipe_recv" for m in call[2]]


class FakeSocket:
    """The ``SocketCore`` a pipe reports to: ``options``, ``info``, ``stats``, ``proto``.

    ``evt_pipe_opened`` tells the protocol about the pipe, as ``SocketCore.track_pipe``
    does; both socket events are recorded in ``opened`` / ``closed``.
    """

    def __init__(self, info, options: Options | None = None) -> None:
        self.info = info
        self.options = options if options is not None else Options()
        self.stats = Stats()
        self.proto = RecordingProto()
        self.opened: list = []
        self.closed: list = []
        self.channel = FakeChannel()
        self.published: tuple = (None, None, b"")  # as SocketCore's (Pipe.enqueue_published)

    def evt_pipe_opened(self, pipe) -> None:
        self.opened.append(pipe)
        self.proto.evt_pipe_added(pipe)

    def evt_pipe_closed(self, pipe) -> None:
        self.closed.append(pipe)


class FakeChannel:
    """The channel a pipe reaches through its socket: counts ``wake_reader`` calls."""

    def __init__(self) -> None:
        self.reader_wakes = 0

    def wake_reader(self) -> None:
        self.reader_wakes += 1


class FakeOwner:
    """The listener or dialer that owns a pipe: records ``opened`` and ``closed`` pipes."""

    def __init__(self) -> None:
        self.opened: list = []
        self.closed: list = []

    def evt_pipe_opened(self, pipe) -> None:
        self.opened.append(pipe)

    def evt_pipe_closed(self, pipe) -> None:
        self.closed.append(pipe)


class FakeTransport:
    """The transport module a pipe uses: ``IPC_FRAMING``, ``finish_connect``,
    ``configure_stream``. ``connect_errno`` is what ``finish_connect`` returns."""

    def __init__(self, *, ipc: bool = False, connect_errno: int = 0) -> None:
        self.IPC_FRAMING = ipc
        self.connect_errno = connect_errno
        self.finished: list = []
        self.configured: list = []

    def finish_connect(self, sock) -> int:
        self.finished.append(sock)
        return self.connect_errno

    def configure_stream(self, sock, *, nodelay: bool = True, keepalive: bool = False,
                         keepalive_timing=None) -> None:
        self.configured.append(sock)
        self.stream_options = (nodelay, keepalive)
        self.keepalive_timing = keepalive_timing


class FakeLowWaterTransport(FakeTransport):
    """A TCP-like transport that can hold a stream's readiness until ``nbytes`` are queued
    (``set_read_low_water``): records every mark set (``marks``); ``supported=False`` is a
    platform that cannot (returns False); ``declines`` large marks are declined for now
    (None: a receive buffer still too small), each one counted in ``declined``; ``error``
    is raised instead."""

    def __init__(self, *, supported: bool = True, declines: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supported = supported
        self.declines = declines
        self.declined: list[int] = []
        self.marks: list[int] = []
        self.error: OSError | None = None

    def set_read_low_water(self, sock, nbytes: int) -> bool | None:
        if self.error is not None:
            raise self.error
        if not self.supported:
            return False
        if nbytes > 1 and self.declines:
            self.declines -= 1
            self.declined.append(nbytes)
            return None
        self.marks.append(nbytes)
        return True


def sent_through(policy, item):
    """What the facade does with a user's send: ``outgoing``, then ``sent`` once queued."""
    out = policy.outgoing(item)
    policy.sent(out)
    return out


class Interleaved(list):
    """A policy's one-item list whose first read runs ``between``: another thread's step,
    landing between that read and what the reader does next (REQ's and REP's policies
    read, compare and clear their request's list without a lock)."""

    def __init__(self, items, between):
        super().__init__(items)
        self._between = between

    def __getitem__(self, index):
        value = super().__getitem__(index)
        between, self._between = self._between, None
        if between is not None:
            between()
        return value
