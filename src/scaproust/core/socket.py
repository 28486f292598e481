"""The machines' side of a socket, driven by the generated ``socket`` machine.

Theory of operation: a ``SocketCore`` owns its endpoints (listeners and dialers), the
pipes that are or were active (``pipes``, until each is dead) and its protocol machine
(``proto``), all guarded by the session lock (docs/ARCHITECTURE.md, "One owner at a
time"). The facade reaches it through two paths (core/channel.py): data through the
channel, a lone send run at once in the caller's thread (``_send_now``) and the others
queued and drained here by ``_drain_outbox`` in the I/O thread, and what arrives read
into the channel by the ``CallerReader`` or the I/O thread; control (bind, connect,
close, subscriptions, pipe listeners) through the methods marked ``@facade_call``, run
on the loop thread by ``Session.call``, each returning its answer.

Closing: ``cmd_close`` closes the endpoints (no new pipes) and asks each pipe to close,
which flushes its queued output within ``linger``; the socket is ``closed`` when the last
pipe is dead, and only then tells the protocol and wakes the facade.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs

from scaproust._generated.socket import SocketFSM
from scaproust.core.caller_reader import CallerReader
from scaproust.core.channel import GATHER, Channel
from scaproust.core.context import Context
from scaproust.core.dialer import Dialer
from scaproust.core.guard import crash, entry_point, facade_call, fire, log_crash
from scaproust.core.listener import Listener
from scaproust.core.options import EndpointOptions
from scaproust.core.pipe_kinds import PIPE_CLASSES
from scaproust.core.session import FORKED
from scaproust.core.stats import (
    BYTES_SENT,
    DROPPED_CLOSED,
    MSGS_SENT,
    PIPES_CLOSED,
    PIPES_OPENED,
    Stats,
)
from scaproust.core.user_context import UserContext
from scaproust.errors import Closed, Error, InvalidAddress, NotSupported
from scaproust.transports import lookup
from scaproust.transports.tls_config import prepare

if TYPE_CHECKING:
    from collections import deque

    from scaproust.core.interfaces import Batching, Endpoint, ProtocolMachine, Subscribing
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.pipe import Pipe
    from scaproust.core.protocol_info import ProtocolInfo
    from scaproust.reactor.loop import Loop
    from scaproust.reactor.timers import TimerHandle
    from scaproust.transports import Transport
    from scaproust.transports.tcp import Resolved
    from scaproust.transports.tls_config import TLSSetup

log = logging.getLogger("scaproust.socket")

_endpoint_ids = itertools.count(1)

#: How long a send waits for another owner of the session (a caller reading its pipes, the
#: I/O thread's batch) before it hands the message to the I/O thread instead: owners keep
#: the lock for microseconds, and the bound keeps a long batch from stalling the caller.
OWN_WAIT = 0.001


@attrs.frozen
class PipeEvent:
    """A pipe of a socket became active (``"added"``) or went away (``"removed"``)."""

    kind: str
    pipe_id: int
    peer: str  # the peer's address: tcp://host:port or ipc://path
    endpoint: str  # the url of the endpoint (bind or connect) the pipe belongs to
    #: tls+tcp: the subject of the certificate the peer showed and we verified
    #: (``CN=...,O=...``); empty otherwise.
    peer_subject: str = ""


class _Gatherer:
    """A socket's part in a gathering (core/channel.py, "Gathering"): the channel's
    ``gatherer``."""

    def __init__(self, core: SocketCore) -> None:
        self._core = core
        self._timer: TimerHandle | None = None

    def gather(self) -> None:
        # Channel.grant, in the owner's thread, as it wakes a sender waiting for credit:
        # that sender's burst gathers for GATHER seconds from now, not from an earlier grant.
        if self._timer is not None:
            self._timer.cancel()
        core = self._core
        self._timer = core.loop.call_later(GATHER, core.channel.end_gathering)

    def post_quietly(self) -> None:
        # Channel.put's drain while a burst gathers: the loop's next turn runs it, at the
        # latest when the gathering's timer ends the sleep.
        core = self._core
        core._post_drain(core.loop.call_soon_quietly)

    def nudge(self) -> None:
        self._core.loop.nudge()


class SocketCore(SocketFSM):
    """Backend of one socket: endpoints, pipes, protocol, and the user's channel."""

    def __init__(self, *, loop: Loop, info: ProtocolInfo, options: Options, raw: bool = False,
                 on_closed: Callable[[SocketCore], object] | None = None) -> None:
        self.loop = loop
        self.info = info
        self.options = options
        self.raw = raw
        self.stats = Stats()
        self.pipes: set[Pipe] = set()  # never rebound: the caller reader holds this set
        self.endpoints: dict[int, Endpoint] = {}
        # Callables taking a PipeEvent, run in this thread.
        self.pipe_listeners: list[Callable[[PipeEvent], object]] = []
        self._resume_turn = 0
        self._on_closed = on_closed
        self.channel = Channel(wake_backend=self._wake, resume_reading=self._wake_resume,
                               post_backend=lambda: loop.post_if_open(self._drain_outbox),
                               recv_high=options.recv_buffer,
                               notify_later=loop.notify_after_release)
        self.ctx = Context(loop=loop, channel=self.channel, stats=self.stats,
                           pipes_of_socket=lambda: self.pipes, options=options,
                           on_crash=lambda err: crash(self, err))
        self.proto: ProtocolMachine = info.machine_class(raw)(self.ctx)
        #: A protocol that takes a drained batch in one event (PUSH, raw REQ, PUB):
        #: _drain_outbox. Its table must say so: a cooked REQ has the method of raw REQ's,
        #: which its own table refuses.
        self._send_many: Callable[[list[Item]], object] | None = (
            cast("Batching", self.proto).cmd_send_many
            if "cmd_send_many" in self.proto.EVENTS else None)
        #: The contexts whose protocol keeps their state here (REQ): see user_context.py.
        self.contexts: set[UserContext] = set()
        # A caller's thread whose recv() waits reads the pipes itself (caller_reader.py).
        self.reader = CallerReader(loop, self.channel, self.pipes, self.contexts, options)
        self.channel.reader = self.channel.loans = self.reader
        self.channel.send_now = self._send_now
        # A burst's drain gathers after its sender waited for credit (channel.py).
        self.channel.gatherer = _Gatherer(self)
        #: (body, IPC framing, frame) of the last message published to this socket's pipes
        #: (PUB): the others of its framing queue the same frame (Pipe.enqueue_published).
        self.published: tuple[bytes | None, bool | None, bytes] = (None, None, b"")

    def __repr__(self) -> str:
        return f"<SocketCore {self.info!r} {self.state}>"

    # ------------------------------------------------------------------ data path

    def _send_now(self, hand: list[Item], size: int) -> bool:
        """Send the message in ``hand`` (``size`` bytes) in this thread: Channel.put's lone
        send, not queued. Writing at once saves the hand-off (a wake-up, tens of µs): what a
        request, a reply or an occasional message needs (a burst goes through the outbox
        and the I/O thread's batches instead: Channel.put, DIRECT_SPACING). If another
        thread owns the session, wait for it a little (owners keep it for microseconds);
        False, the message still in hand, if it keeps it longer: put hands it over."""
        loop = self.loop
        if not loop.own(OWN_WAIT):
            return False
        try:  # at once: no call between own() and the try that a Ctrl-C could land in
            self.reader.waited = False
            try:
                self._send_in_hand(hand, size)
            except Exception as err:
                # entry_point's guard, inline (a call less before the frame's write): a bug
                # in the protocol fails this socket, not the caller's thread.
                crash(self, err)
        finally:
            try:
                loop.release()
            except BaseException:
                loop.release_interrupted()  # a Ctrl-C as release() was entered
                raise
            self.channel.last_put = time.monotonic()
        return True

    def _send_in_hand(self, hand: list[Item], size: int) -> None:
        # As _drain_outbox for a batch of one, the message taken from the hand only as the
        # protocol gets it: a Ctrl-C before that leaves it there, and put queues it. One
        # as the pop returns or as cmd_send is entered loses it: at most once, never twice
        # (docs/ARCHITECTURE.md, "One owner at a time", Ctrl-C).
        if self.state == "closed":
            # A send that raced close() (see _drain_outbox): dropped and counted.
            hand.clear()
            self.stats.count(DROPPED_CLOSED)
            return
        ctx = self.ctx
        ctx.outstanding -= 1
        ctx.outstanding_bytes -= size
        loop = self.loop
        try:
            # A pipe that has nothing queued writes the frame at once (Pipe._write_early),
            # before the protocol's actions that follow its send.
            loop.writing_at_once = True
            try:
                self.proto.cmd_send(hand.pop())
            finally:
                loop.writing_at_once = False
            loop.run_end_of_batch()  # the flush before the bookkeeping below
        finally:
            self.stats.count_traffic(MSGS_SENT, BYTES_SENT, 1, size)
        ctx.refill()

    def _wake(self) -> None:
        # Called in the user's thread by Channel.put, for a message it queued: a send in a
        # burst, or one that could not own the session (_send_now). The I/O thread is woken
        # (if it sleeps) to take the outbox along with whatever else gets queued meanwhile,
        # in one write.
        self._post_drain(self.loop.call_soon_threadsafe)

    def _post_drain(self, post: Callable[[Callable[[], None]], None]) -> None:
        try:
            post(self._drain_outbox)
        except RuntimeError:
            if self.loop.forked():
                raise Error(FORKED) from None
            raise Closed("session is closed") from None

    @entry_point
    def _drain_outbox(self) -> None:
        batch = self.channel.take_outbox()
        if self.state == "closed":
            # A send that raced close(): the channel took it just before it closed, and its
            # drain came after the socket (and its protocol) had closed. Nothing can carry
            # it any more: dropped, and counted, never fed to a closed machine.
            if batch:
                self.stats.count(DROPPED_CLOSED, len(batch))
            return
        if (self._send_many is not None and len(batch) > 1
                and threading.get_ident() != threading.main_thread().ident):
            self._drain_batch(batch)
            return
        ctx, send = self.ctx, self.proto.cmd_send
        total = taken = 0
        try:
            for item in batch:
                size = len(item)  # bytes or Message: its size on the wire
                ctx.outstanding -= 1
                ctx.outstanding_bytes -= size
                total += size
                taken += 1  # no call since len(): counted exactly with the two above
                send(item)
        except BaseException:
            # A Ctrl-C, where the main thread drains (a loop it drives itself; core/guard.py,
            # "Interrupts"): the messages not taken yet go back to the front of the outbox
            # for the next drain, in order; the one it stopped in went to its pipe or not.
            self.channel.requeue(itertools.islice(batch, taken, None))
            self.loop.call_soon(self._drain_outbox)
            raise
        finally:
            self.stats.count_traffic(MSGS_SENT, BYTES_SENT, taken, total)
        ctx.refill()

    def _drain_batch(self, batch: deque[Item]) -> None:
        # The whole batch in one protocol event (docs/ARCHITECTURE.md, "The pipe": a PUSH's
        # drain costs a third, a PUB's a fifth). Never in the main thread, the only one
        # a Ctrl-C lands in: an event that takes many messages at once could not say which
        # of them it had placed when interrupted, as the loop above does for one.
        assert self._send_many is not None
        ctx = self.ctx
        count, total = len(batch), sum(map(len, batch))
        ctx.outstanding -= count
        ctx.outstanding_bytes -= total
        self.stats.count_traffic(MSGS_SENT, BYTES_SENT, count, total)
        self._send_many(list(batch))
        ctx.refill()

    def _abandon(self) -> None:
        """A bug in the protocol: fail this socket (callers get ``sp.Closed``), not the loop."""
        self.state = "closed"
        self.channel.close()
        self.reader.close()
        self._close_context_channels()
        if self._on_closed is not None:
            self._on_closed(self)

    def log_crash(self, err: Exception) -> None:
        log_crash(log, f"socket {self.info!r}", err)

    def _wake_resume(self) -> None:
        self.loop.call_soon_threadsafe(self._resume_pipes)

    @entry_point
    def _resume_pipes(self) -> None:
        # Start with a different pipe each time, so that no pipe is always first in line.
        pipes = list(self.pipes)
        if pipes:
            self._resume_turn = (self._resume_turn + 1) % len(pipes)
            for pipe in pipes[self._resume_turn:] + pipes[:self._resume_turn]:
                pipe.cmd_resume()

    # ------------------------------------------------------------------ the facade's calls
    # What the facade asks of the machines, always through ``Session.call`` (on the I/O
    # thread, or inline in a caller's thread that owns the session). Each returns its answer.

    @facade_call
    def bind(self, url: str, endpoint: EndpointOptions | None = None,
             found: Resolved | None = None) -> tuple[int, str]:
        """Listen on ``url``: (endpoint id, the url as bound: the port chosen for port 0).

        ``found`` is the host name's address, looked up in the caller's thread
        (``Socket.bind``), since this may run on the I/O thread, which must not wait on DNS.
        ``AddressInUse`` and ``InvalidAddress`` are raised at once, to the caller."""
        self._refuse_unless_open()
        transport, address = lookup(url)
        _check_pipe_kind(transport)
        # The keywords of this transport's listen (tcp: resolved; ipc: permissions).
        options: dict[str, Any] = {"ipv4_only": self.options.ipv4_only}
        if found is not None:
            options["resolved"] = found
        if address.scheme == "ipc" and self.options.ipc_permissions is not None:
            options["permissions"] = self.options.ipc_permissions
        endpoint = endpoint or EndpointOptions.of(self.options)
        tls = _tls_setup(transport, endpoint, server=True, host=address.host)
        if getattr(transport, "LISTENS_ON_LOOP", False):  # ws, wss: a port accepts on our loop
            options.update(loop=self.loop, tls=tls)
        handle, resolved = transport.listen(address, **options)
        listener = Listener(loop=self.loop, socket=self, transport=transport, handle=handle,
                            url=resolved, endpoint_id=next(_endpoint_ids), endpoint=endpoint)
        listener.tls_setup = tls
        self.cmd_bind(listener)
        return listener.endpoint_id, resolved

    @facade_call
    def connect(self, url: str, endpoint: EndpointOptions | None = None) -> tuple[int, str]:
        """Dial ``url`` in the background: (endpoint id, the url). ``InvalidAddress`` at once."""
        self._refuse_unless_open()
        transport, address = lookup(url)
        _check_pipe_kind(transport)
        if address.is_wildcard:
            raise InvalidAddress(f"cannot connect to a wildcard address: {url!r}")
        endpoint = endpoint or EndpointOptions.of(self.options)
        tls = _tls_setup(transport, endpoint, server=False, host=address.host)
        dialer = Dialer(loop=self.loop, socket=self, transport=transport, address=address,
                        url=address.url, endpoint_id=next(_endpoint_ids), endpoint=endpoint)
        dialer.tls_setup = tls
        self.cmd_connect(dialer)
        return dialer.endpoint_id, address.url

    @facade_call
    def close_endpoint(self, endpoint_id: int) -> None:
        """Close one endpoint made by ``bind`` or ``connect`` (nothing if it is gone)."""
        if self.state == "open":
            self.cmd_close_endpoint(endpoint_id)

    @facade_call
    def subscribe(self, topic: bytes) -> None:
        """SUB: deliver the messages that start with ``topic`` too."""
        cast("Subscribing", self.proto).cmd_subscribe(topic)

    @facade_call
    def unsubscribe(self, topic: bytes) -> None:
        """SUB: stop delivering what only ``topic`` matched."""
        cast("Subscribing", self.proto).cmd_unsubscribe(topic)

    @facade_call
    def open_context(self, options: Options) -> UserContext:
        """A new context kept by the protocol in this thread (REQ), with its own
        ``options`` (a copy of the socket's); ``NotSupported`` if the protocol keeps none."""
        self._refuse_unless_open()
        opener: Callable[[Context], Any] | None = getattr(self.proto, "open_context", None)
        if opener is None:
            raise NotSupported(f"{self.info!r} keeps no contexts in the I/O thread")
        context = UserContext(loop=self.loop, options=options, stats=self.stats, socket=self)
        context.channel.loans = self.reader  # its receives wait for the socket's pipes
        context.machine = opener(context.seam)
        self.contexts.add(context)
        return context

    @facade_call
    def close_context(self, context: UserContext) -> None:
        """Close one context: its machine drops its request, its callers get ``Closed``."""
        self.contexts.discard(context)
        context.close()

    @facade_call
    def subscribe_context(self, context: UserContext, topic: bytes) -> None:
        """SUB: ``context`` also takes the messages that start with ``topic``."""
        cast("Subscribing", context.machine).cmd_subscribe(topic)

    @facade_call
    def unsubscribe_context(self, context: UserContext, topic: bytes) -> None:
        """SUB: ``context`` no longer takes what only ``topic`` matched."""
        cast("Subscribing", context.machine).cmd_unsubscribe(topic)

    def _close_context_channels(self) -> None:
        contexts, self.contexts = list(self.contexts), set()
        for context in contexts:
            context.channel.close()

    @facade_call
    def add_pipe_listener(self, callback: Callable[[PipeEvent], object]) -> None:
        """Call ``callback(PipeEvent)`` in this thread as pipes come and go."""
        self.pipe_listeners.append(callback)

    @facade_call
    def remove_pipe_listener(self, callback: Callable[[PipeEvent], object]) -> None:
        """Stop calling ``callback``; ``ValueError`` if it was not added."""
        self.pipe_listeners.remove(callback)

    @facade_call
    def close(self) -> None:
        """Close the socket (posted by the facade, so run in the I/O thread): guarded like
        an entry point, so a bug fails this socket only."""
        fire(self, "cmd_close")

    def _refuse_unless_open(self) -> None:
        # A command the table refuses while closing would leave a bound port behind.
        if self.state != "open":
            raise Closed("socket is closed")

    # ------------------------------------------------------------------ endpoints

    def start_endpoint(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.endpoint_id] = endpoint
        endpoint.cmd_start()

    def remove_endpoint(self, endpoint_id: int) -> None:
        endpoint = self.endpoints.pop(endpoint_id, None)
        if endpoint is not None:
            endpoint.cmd_close()

    def close_endpoints(self) -> None:
        # on_enter of closing, and of closed (again, harmlessly, after closing).
        endpoints, self.endpoints = list(self.endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.cmd_close()

    # ------------------------------------------------------------------ pipes

    def track_pipe(self, pipe: Pipe) -> None:
        self._add_pipe(pipe)
        self.stats.count(PIPES_OPENED)
        self._announce("added", pipe)
        self.proto.evt_pipe_added(pipe)
        if self.channel.recv_paused:
            pipe.cmd_pause()

    def untrack_pipe(self, pipe: Pipe) -> None:
        if pipe in self.pipes:
            self.pipes.remove(pipe)
            if pipe.lender.LENDABLE:
                self.reader.lendable -= 1
        self.stats.count(PIPES_CLOSED)
        self._announce("removed", pipe)

    def _announce(self, kind: str, pipe: Pipe) -> None:
        if not self.pipe_listeners:
            return
        event = PipeEvent(kind, pipe.id, pipe.peer_addr, getattr(pipe.owner, "url", ""),
                          getattr(pipe, "peer_subject", ""))
        for listener in list(self.pipe_listeners):
            try:
                listener(event)
            except Exception:  # the user's callback: log it, never fail the socket
                log.exception("pipe event listener %r failed on %r", listener, event)

    def _add_pipe(self, pipe: Pipe) -> None:
        if pipe not in self.pipes:
            self.pipes.add(pipe)
            if pipe.lender.LENDABLE:
                self.reader.lendable += 1

    def close_late_pipe(self, pipe: Pipe) -> None:
        self._add_pipe(pipe)
        self.loop.call_soon(fire, pipe, "cmd_close")

    def has_pipes(self) -> bool:
        return bool(self.pipes)

    def has_other_pipes(self, pipe: Pipe) -> bool:
        return bool(self.pipes - {pipe})

    def close_pipes(self) -> None:
        for pipe in list(self.pipes):
            pipe.cmd_close()

    # ------------------------------------------------------------------ closed

    def close_protocol(self) -> None:
        self.proto.cmd_close()

    def notify_closed(self) -> None:
        log.debug("socket %r closed", self.info)
        self.channel.close()
        self.reader.close()
        self._close_context_channels()  # their machines closed with the protocol
        if self._on_closed is not None:
            self._on_closed(self)


def _check_pipe_kind(transport: Transport) -> None:
    """Refuse a transport whose ``PIPE_KIND`` no pipe class drives (docs/TRANSPORTS.md)."""
    kind = getattr(transport, "PIPE_KIND", "stream")
    if kind not in PIPE_CLASSES:
        raise InvalidAddress(f"the {transport.SCHEME} transport declares PIPE_KIND {kind!r} "
                             f"(known: {', '.join(sorted(PIPE_CLASSES))})")


def _tls_setup(transport: Transport, endpoint: EndpointOptions, *, server: bool,
               host: str | None) -> TLSSetup | None:
    """What a TLS endpoint's pipes use, made from its ``tls`` option (a ValueError,
    TypeError or OpenSSL's error loading a file raises to the caller at once); None for
    any other endpoint."""
    if getattr(transport, "PIPE_KIND", "stream") not in ("tls", "wss"):
        return None
    return prepare(endpoint.tls, server=server, host=host)
