"""The public socket: what users call. It runs in the user's thread.

Data goes through the channel without waiting for the I/O thread (core/channel.py);
control requests (bind, connect, close) go to the I/O thread and wait for its reply.

A socket inherited across ``os.fork()`` has no I/O thread in the child, and a lock some
thread of the parent held at the fork stays held there; so every method checks for a fork
first, before any lock or queue, and raises ``sp.Error`` (``FORKED``). The check compares
two integers (``Loop.forked``), cheap enough for every message.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import (
    TYPE_CHECKING,
    Final,
    Generic,
    Literal,
    TypeAlias,
    TypeVar,
    TypeVarTuple,
    cast,
    overload,
)

from scaproust.core import options as _options
from scaproust.core.message import Item, Message, as_message
from scaproust.core.policy import send_in_order
from scaproust.core.session import FORKED
from scaproust.core.socket import PipeEvent, SocketCore
from scaproust.errors import Closed, Error, NotSupported, Timeout, WouldBlock
from scaproust.facade.aio import AsyncSocketMixin
from scaproust.facade.endpoint import Endpoint
from scaproust.fsm.errors import MachineError
from scaproust.reactor.waker import LONGEST_SLEEP
from scaproust.transports import lookup
from scaproust.transports.tls_config import TLSConfig

if TYPE_CHECKING:
    import ssl

    from _typeshed import ReadableBuffer

    from scaproust.core.channel import Channel
    from scaproust.core.policy import Policy, Subscriptions
    from scaproust.core.protocol_info import ProtocolInfo
    from scaproust.facade.context import SocketContext
    from scaproust.facade.session import Session
    from scaproust.transports.tcp import Resolved
    from scaproust.transports.url import Address

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Default(enum.Enum):
    """The type of ``_DEFAULT``."""

    TOKEN = enum.auto()


_DEFAULT: Final = _Default.TOKEN  # "use the socket's option", distinct from None ("forever")
#: A ``timeout=`` argument: seconds, None (forever) or ``_DEFAULT`` (the socket's option).
TimeoutArg: TypeAlias = "float | None | Literal[_Default.TOKEN]"


class _Option(Generic[T]):
    """One option of core/options.py's ``SPECS`` as an attribute of the socket, of type
    ``T``: reading returns its value, assigning validates it at once.

    ``Socket`` declares one per option (``send_timeout: _Option[float | None]``), so
    IDEs and type checkers see them; tests/core/test_options.py checks the declarations
    against ``SPECS``, names and types. An option of another protocol
    (``resend_interval`` on a PUSH) is no attribute of the socket: ``AttributeError``.
    """

    def __set_name__(self, owner: type[Socket], name: str) -> None:
        self.name = name
        self.spec = _options.SPECS[name]  # not an option: fails at import
        self.__doc__ = self.spec.doc

    @overload
    def __get__(self, sock: None, owner: type[Socket]) -> _Option[T]: ...
    @overload
    def __get__(self, sock: Socket, owner: type[Socket] | None = None) -> T: ...

    def __get__(self, sock: Socket | None, owner: type[Socket] | None = None) -> T | _Option[T]:
        if sock is None:
            return self
        sock._check_fork()
        if not _options.applies(self.spec, sock._info):
            raise AttributeError(f"a {sock._info.name} socket has no option {self.name!r}")
        return cast(T, getattr(sock._options, self.name))

    def __set__(self, sock: Socket, value: T) -> None:
        sock._check_open()  # as nng (ECLOSED) and pyzmq: a closed socket takes no option
        if not _options.applies(self.spec, sock._info):  # as reading it (a TypeError before)
            raise AttributeError(f"a {sock._info.name} socket has no option {self.name!r}")
        sock._options.set(self.name, value)
        if self.name == "recv_buffer":
            sock._channel.recv_high = sock._options.recv_buffer


class DataShortcuts:
    """What a socket and a context (facade/context.py) derive from their ``send`` and
    ``recv``."""

    if TYPE_CHECKING:
        def send(self, data: ReadableBuffer | Message, *, timeout: TimeoutArg = _DEFAULT,
                 block: bool = True) -> None: ...
        def recv(self, *, timeout: TimeoutArg = _DEFAULT, block: bool = True) -> bytes: ...

    def send_msg(self, msg: Message, *, timeout: TimeoutArg = _DEFAULT,
                 block: bool = True) -> None:
        """Send an ``sp.Message`` (its header matters in raw mode)."""
        if not isinstance(msg, Message):
            raise TypeError(f"send_msg takes an sp.Message, not {type(msg).__name__}")
        self.send(msg, timeout=timeout, block=block)

    def try_send(self, data: ReadableBuffer | Message) -> bool:
        """Send without waiting; return False (instead of raising) if it would block."""
        try:
            self.send(data, block=False)
        except BlockingIOError:
            return False
        return True

    def try_recv(self) -> bytes | None:
        """Receive without waiting; return None if no message is there."""
        try:
            return self.recv(block=False)
        except BlockingIOError:
            return None

    def try_recv_many(self, limit: int = 1024) -> list[bytes]:
        """Receive every message there now, at most ``limit``, without waiting: a list in
        the order ``try_recv`` would have returned them, empty if none is there.

        Raises what ``try_recv`` raises (``sp.Closed``, ``sp.BadState`` for a survey past
        its deadline) when it would have raised before the first message. After one, the
        batch ends and the messages taken are returned; those errors come from the socket's
        state, which the batch does not change, so the next call raises it."""
        _check_limit(limit)
        out: list[bytes] = []
        while len(out) < limit:
            try:
                body = self.try_recv()
            except Exception:
                if out:
                    break  # the messages taken are handed out; the next call raises it
                raise
            if body is None:
                break
            out.append(body)
        return out


class Socket(DataShortcuts, AsyncSocketMixin):
    """A scalability-protocol socket. Create one with ``session.socket(sp.Push, ...)``.

    Every option of ``docs/OPTIONS.md`` is a keyword argument of ``session.socket`` and an
    attribute of the socket. Methods raise ``sp.Closed`` once the socket is closed.
    """

    def __init__(self, session: Session, info: ProtocolInfo, *, raw: bool = False,
                 **options: object) -> None:
        self._session = session
        self._io_loop = session._core.loop  # for the fork check of every call
        self._info = info
        self._raw = bool(raw)
        self._options = _options.Options(info, **options)
        self._closed = False
        self._close_lock = threading.Lock()
        self._done = threading.Event()
        self._endpoints: dict[int, Endpoint] = {}
        self._contexts: weakref.WeakSet[SocketContext] = weakref.WeakSet()
        self._core: SocketCore = session._core.call(self._make_core)
        self._channel = self._core.channel
        self._can_recv = info.can_recv
        policy = None if raw else info.policy_class()
        self._policy: Policy | None = (
            policy(self._channel, self._options, self._core.stats) if policy else None)
        # The two fast paths' flags fold in everything those paths must check, so that each
        # checks one attribute: both are cleared by close() and, in a forked child, by
        # _after_fork_in_child (the parent's sockets must refuse every call there).
        #: A send of bytes goes straight to the channel: this socket sends, and no policy
        #: must see or change what it sends (PUSH, PAIR, BUS, PUB, raw sockets).
        self._plain_send = info.can_send and self._policy is None
        #: The policy a send of bytes goes through (REQ, REP, SURVEYOR, RESPONDENT), with
        #: _sendable's checks holding as for _plain_send; None otherwise, and once closed or
        #: in a forked child.
        self._send_policy = self._policy if info.can_send else None
        #: The policy a receive goes through (REQ, REP, SURVEYOR, RESPONDENT, SUB), with
        #: _get's checks holding as for _send_policy; None otherwise, and once closed or in
        #: a forked child.
        self._recv_policy = self._policy if info.can_recv else None
        #: A queued item may go to the user as it is: this socket receives, and its policy
        #: needs not see what it receives (``Policy.plain_recv``): the receive fast path,
        #: ``_queued``. Only an unsubscribe changes it (``_plain_recv_again``).
        self._plain_recv = False
        self._plain_recv_again()
        _SOCKETS.add(self)

    # ------------------------------------------------------------------ options
    # One attribute per option of SPECS (docs/OPTIONS.md), in its order, with its type.

    send_timeout: _Option[float | None] = _Option()
    recv_timeout: _Option[float | None] = _Option()
    recv_spin: _Option[float] = _Option()
    recv_max_size: _Option[int] = _Option()
    reconnect_interval: _Option[float] = _Option()
    reconnect_interval_max: _Option[float] = _Option()
    handshake_timeout: _Option[float] = _Option()
    linger: _Option[float] = _Option()
    send_buffer: _Option[int] = _Option()
    recv_buffer: _Option[int] = _Option()
    tcp_nodelay: _Option[bool] = _Option()
    tcp_keepalive: _Option[bool] = _Option()
    tcp_keepalive_idle: _Option[int] = _Option()
    tcp_keepalive_interval: _Option[int] = _Option()
    tcp_keepalive_count: _Option[int] = _Option()
    ipc_permissions: _Option[int | None] = _Option()
    max_pipes: _Option[int] = _Option()
    ipv4_only: _Option[bool] = _Option()
    socket_name: _Option[str] = _Option()
    tls: _Option[TLSConfig | ssl.SSLContext | None] = _Option()
    send_priority: _Option[int] = _Option()
    recv_priority: _Option[int] = _Option()
    # Only on the sockets whose protocol declares them (REQ; SURVEYOR; those with a ttl).
    resend_interval: _Option[float] = _Option()
    survey_deadline: _Option[float] = _Option()
    ttl: _Option[int] = _Option()

    def _make_core(self) -> SocketCore:
        # The callback holds the event, not the facade: the I/O thread must not keep an
        # unreferenced facade socket alive, so that garbage collection can close it.
        done, closing = self._done, self._session._closing

        def closed(core: SocketCore) -> None:
            done.set()
            closing.pop(id(done), None)

        core: SocketCore = SocketCore(loop=self._session._core.loop, info=self._info,
                                      options=self._options, raw=self._raw, on_closed=closed)
        return core

    def _closing_begins(self) -> None:
        """The session waits for this close too (``Session._closing``), from now until
        the core reports the socket closed (at once if it failed already)."""
        if not self._done.is_set():
            self._session._closing[id(self._done)] = (self._done, self._options.linger)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        name = f" {self._options.socket_name!r}" if self._options.socket_name else ""
        raw = " raw" if self._raw else ""
        urls = "".join(f" {ep.url}" for ep in self.endpoints)
        return f"<scaproust.Socket {self._info!r}{raw}{name} {state}{urls}>"

    # ------------------------------------------------------------------ read-only facts

    @property
    def protocol(self) -> ProtocolInfo:
        """The protocol of this socket (e.g. ``sp.Push``)."""
        return self._info

    @property
    def peer(self) -> ProtocolInfo:
        """The protocol this socket talks to (e.g. ``sp.Pull`` for a PUSH socket)."""
        return self._info.peer()

    @property
    def raw(self) -> bool:
        """True for a raw-mode socket (hop-by-hop headers left to the user)."""
        return self._raw

    def __setattr__(self, name: str, value: object) -> None:
        # A misspelt option (``sock.recv_timout = 1``) was stored and did nothing: only the
        # options and the socket's own (private) fields may be set, as in pyzmq.
        if not name.startswith("_") and not hasattr(type(self), name):
            raise AttributeError(f"a {self._info.name} socket has no option {name!r} "
                                 f"(docs/OPTIONS.md lists them)")
        object.__setattr__(self, name, value)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints made by bind() and connect() that are still open."""
        return [ep for ep in self._endpoints.values() if not ep.closed]

    def add_pipe_listener(self, callback: Callable[[PipeEvent], object]) -> None:
        """Call ``callback(event)`` whenever a pipe of this socket becomes active
        (``event.kind == "added"``) or goes away (``"removed"``), with ``event.pipe_id``,
        ``event.peer`` (the peer's address) and ``event.endpoint`` (its endpoint's url).

        The callback runs in the session's I/O thread: it must be quick and must not call
        blocking methods of any socket of the session (hand the event to a queue instead).
        An exception in it is logged and ignored.
        """
        self._check_open()
        self._control(self._core.add_pipe_listener, callback)

    def remove_pipe_listener(self, callback: Callable[[PipeEvent], object]) -> None:
        """Stop calling ``callback``; a ValueError if it was not added."""
        self._check_open()
        self._control(self._core.remove_pipe_listener, callback)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages sent and received, pipes opened and closed, drops by reason."""
        self._check_fork()
        counts: dict[str, int] = self._core.stats.snapshot()
        return counts

    # ------------------------------------------------------------------ endpoints

    def bind(self, url: str, **endpoint_options: object) -> Endpoint:
        """Listen on ``url`` (``tcp://host:port``, ``tcp://*:0``, ``ipc:///path``).

        Raises ``sp.AddressInUse`` or ``sp.InvalidAddress`` at once. The returned endpoint's
        ``url`` names the real address (the port the system chose for port 0).

        The options fixed per endpoint (``send_priority``, ``recv_priority``,
        ``recv_max_size``, ``reconnect_interval``, ``reconnect_interval_max``) take the
        socket's values at this moment unless given here as keyword arguments.

        ``tls=`` (an ``sp.TLSConfig`` or ``ssl.SSLContext``) secures a ``tls+tcp://``
        endpoint, instead of the socket's ``tls`` option (docs/TRANSPORTS.md).

        A host name (``tcp://localhost:5555``) is looked up in this thread, before the bind
        is handed to the session: its I/O thread serves every socket and must not wait on DNS.
        """
        return self._add_endpoint(self._core.bind, url, endpoint_options, look_up=True)

    def connect(self, url: str, **endpoint_options: object) -> Endpoint:
        """Dial ``url``; returns at once, connecting and reconnecting in the background.

        Raises ``sp.InvalidAddress`` at once for a URL that cannot be used. Endpoint
        options as for ``bind``. A host name is looked up before every dial, in the
        background; one that does not resolve is retried like a refused connection.
        """
        return self._add_endpoint(self._core.connect, url, endpoint_options)

    def _add_endpoint(self, command: Callable[..., tuple[int, str]], url: str,
                      endpoint_options: dict[str, object], look_up: bool = False) -> Endpoint:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        self._check_open()
        fixed = _options.EndpointOptions.of(self._options, **endpoint_options)
        found = (_look_up_bind_address(url, self._options.ipv4_only),) if look_up else ()
        endpoint_id, resolved = self._control(command, url, fixed, *found)
        endpoint = Endpoint(self, endpoint_id, resolved)
        self._endpoints[endpoint_id] = endpoint
        return endpoint

    def _close_endpoint(self, endpoint_id: int) -> None:
        self._endpoints.pop(endpoint_id, None)
        if not self._closed:
            self._control(self._core.close_endpoint, endpoint_id)

    # ------------------------------------------------------------------ data

    def send(self, data: ReadableBuffer | Message, *, timeout: TimeoutArg = _DEFAULT,
             block: bool = True) -> None:
        """Send one message (any bytes-like object, or an ``sp.Message``).

        Returns once the socket has accepted it (it is then sent in the background).
        Waits while the protocol cannot accept it: up to ``timeout`` seconds (default: the
        ``send_timeout`` option; None = forever), raising ``sp.Timeout``; with
        ``block=False`` raises ``sp.WouldBlock`` instead of waiting.
        """
        if type(data) is bytes and timeout is _DEFAULT and block:
            # The usual call, inline (a call saved is a tenth of this path): bytes, the
            # option's wait; _sendable's checks hold by _plain_send or _send_policy (not
            # closed, not in a forked child).
            if self._plain_send:  # no policy
                self._channel.put(data, self._options.send_timeout)
                return
            policy = self._send_policy
            if policy is not None:
                # send_in_order's first try (put_now), inline: two calls fewer a send.
                with policy.send_lock:
                    item = policy.outgoing(data)
                    try:
                        self._channel.put(item, 0)
                    except WouldBlock:
                        pass  # no credit: the wait below, without the lock
                    else:
                        policy.sent(item)
                        return
                send_in_order(policy, self._channel, data, self._options.send_timeout, item)
                return
        item = self._sendable(data)
        if timeout is _DEFAULT and block:  # the option's wait
            wait = self._options.send_timeout
        else:
            wait = self._timeout(timeout, block, "send_timeout", self._options.send_timeout)
        if self._policy is None:
            self._channel.put(item, wait)
        else:
            send_in_order(self._policy, self._channel, item, wait)

    def _sendable(self, data: ReadableBuffer | Message) -> Item:
        """Check and convert what the user sends, once per send (the policy's ``outgoing``
        comes next, in ``send_in_order``)."""
        if self._closed or self._io_loop.forked():
            self._refuse()
        if not self._info.can_send:
            raise NotSupported(f"{self._info!r} sockets cannot send")
        return data if type(data) is bytes else _as_item(data)

    def recv(self, *, timeout: TimeoutArg = _DEFAULT, block: bool = True) -> bytes:
        """Receive the next message's body.

        Waits up to ``timeout`` seconds (default: the ``recv_timeout`` option; None =
        forever), raising ``sp.Timeout``; with ``block=False`` raises ``sp.WouldBlock``.
        """
        if self._plain_recv and (timeout is _DEFAULT or timeout is None):
            # _queued's step, inline (a call is a tenth of a receive's fast path). Only
            # with a timeout known good: a bad one is refused even when a message waits.
            item = self._channel.take()
            if item is None:
                item = self._get(timeout, block)
        elif (policy := self._recv_policy) is not None and timeout is _DEFAULT and block:
            # The usual call of a cooked REQ or REP: _get's checks hold by _recv_policy, and
            # the wait is the option's.
            item = self._get_through(policy, self._options.recv_timeout)
        else:
            item = self._get(timeout, block)
        return item if isinstance(item, bytes) else item.body

    def recv_msg(self, *, timeout: TimeoutArg = _DEFAULT, block: bool = True) -> Message:
        """Receive the next message with its protocol header as an ``sp.Message``."""
        item = self._queued() if timeout is _DEFAULT or timeout is None else None
        if item is None:
            item = self._get(timeout, block)
        return as_message(item)

    def try_recv(self) -> bytes | None:
        """Receive without waiting; return None if no message is there."""
        # _queued's steps, inline: a consumer draining a burst calls this once per message,
        # and a call costs a tenth of the whole fast path.
        item = self._channel.take() if self._plain_recv else None
        if item is None:
            item = self._nothing_queued()
            if item is None:
                return None
        return item if isinstance(item, bytes) else item.body

    def try_recv_many(self, limit: int = 1024) -> list[bytes]:
        # One lock section for the whole run when the policy needs not see each message:
        # a consumer behind a burst (a subscriber, a PULL) pays a call and a lock section
        # per batch instead of per message.
        if self._plain_recv:
            _check_limit(limit)
            items = self._channel.take_many(limit)
            if items:
                return [item if isinstance(item, bytes) else item.body for item in items]
        return DataShortcuts.try_recv_many(self, limit)

    def _recv_now(self) -> Item | None:
        """What a receive that must not wait gets: the next item, or None if none is there
        now. "None there" is told without an exception: it is the usual answer of a drain
        loop's last try and of the attempt an awaiting task makes, and raising and catching
        ``WouldBlock`` cost 2-3 µs. Anything else a receive raises (closed, a REQ with no
        request, a survey past its deadline) is raised."""
        item = self._queued()
        return item if item is not None else self._nothing_queued()

    def _nothing_queued(self) -> Item | None:
        """``_recv_now`` once its fast path (``_queued``) found nothing to take."""
        channel = self._channel
        # A loan a waiting recv() kept goes back, what the kernel held for it read now:
        # the checks below then find it in the inbox.
        channel.take_back_loan()
        if (channel.inbox.count or channel.closed or self._closed or not self._can_recv
                or self._io_loop.forked()):
            # An item the policy must see, or something to raise: the full path.
            try:
                return self._get(0, False)
            except WouldBlock:
                return None  # the policy dropped what was there
        if self._policy is not None:
            # What _get's call would raise (a REQ with no request) or do (a REP forgets
            # the request it did not answer), without a wait to compute.
            self._policy.recv_wait(None)
        return None

    def _queued(self) -> Item | None:
        """The fast path of every receive: the next queued item, when one is there and the
        protocol's policy needs not see it (``Policy.plain_recv``); else None, and the
        caller takes the full path (``_get``), which also raises what must be raised."""
        return self._channel.take() if self._plain_recv else None

    def _plain_recv_again(self) -> None:
        """Set ``_plain_recv`` from what it depends on (at the start, and after each
        unsubscribe): under the close lock, so that a close in another thread, which
        clears it, is never undone."""
        policy = self._policy
        with self._close_lock:
            self._plain_recv = (self._can_recv and (policy is None or policy.plain_recv)
                                and not self._closed and not self._io_loop.forked())

    def _get(self, timeout: TimeoutArg, block: bool) -> Item:
        if self._closed or self._io_loop.forked():
            self._refuse()
        if not self._info.can_recv:
            raise NotSupported(f"{self._info!r} sockets cannot receive")
        if timeout is _DEFAULT and block:  # the option's wait: _timeout's answer, inline
            seconds = self._options.recv_timeout
        else:
            seconds = self._timeout(timeout, block, "recv_timeout", self._options.recv_timeout)
        policy = self._policy
        if policy is None:
            return self._channel.get(seconds)
        return self._get_through(policy, seconds)

    def _get_through(self, policy: Policy, seconds: float | None) -> Item:
        """``_get`` for a socket with a policy, once its checks passed: a cooked protocol
        may cap the wait (a survey's deadline), refuse the call (REQ before any request)
        or drop what it receives (a reply to an older request)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            wait = policy.recv_wait(deadline)
            if wait is not None and wait <= 0 and seconds != 0:
                raise Timeout("recv timed out")
            epoch = policy.epoch
            try:
                got = self._channel.get(wait)
            except Timeout:
                if policy.renewed(epoch):
                    continue  # a new survey, sent meanwhile: its deadline now
                raise
            item = policy.incoming(got)
            if item is not None:
                return item

    @staticmethod
    def _timeout(timeout: TimeoutArg, block: bool, option: str,
                 default: float | None) -> float | None:
        """The seconds a call waits: ``timeout`` (validated as ``option``, which it
        overrides), else the option's value ``default``; 0 without ``block``."""
        if not block:
            return 0
        if timeout is _DEFAULT:
            return default
        if timeout is None:
            return None
        return cast("float | None", _options.validate(option, timeout))

    # ------------------------------------------------------------------ subscriptions (SUB)

    def subscribe(self, topic: bytes | str) -> None:
        """SUB only: also receive the messages whose body starts with ``topic`` (bytes, or
        str encoded as UTF-8). The empty topic matches every message; a SUB with no topic
        receives nothing. Subscribing twice to a topic is harmless. Filtering happens in
        the I/O thread, before messages are queued for recv(); the peers never see topics.

        Raises ``sp.NotSupported`` on other sockets and on a raw SUB, which receives every
        message unfiltered (as nng's raw sub0 does).
        """
        self._check_open()
        policy = self._policy
        if not hasattr(policy, "subscribe"):
            kind = f"a raw {self._info!r} receives everything and" if self._raw else f"{self._info!r}"
            raise NotSupported(f"{kind} has no subscriptions (only a cooked sp.Sub has)")
        cast("Subscriptions", policy).subscribe(
            topic, lambda t: self._control(self._core.subscribe, t))

    def unsubscribe(self, topic: bytes | str) -> None:
        """SUB only: stop receiving the messages that match ``topic`` and no other topic,
        including those already waiting for recv() (as nng and nanomsg do).

        Raises ``ValueError`` naming the topic if it was not subscribed; ``sp.NotSupported``
        as ``subscribe`` does.
        """
        self._check_open()
        policy = self._policy
        if not hasattr(policy, "unsubscribe"):
            kind = f"a raw {self._info!r} receives everything and" if self._raw else f"{self._info!r}"
            raise NotSupported(f"{kind} has no subscriptions (only a cooked sp.Sub has)")
        try:
            cast("Subscriptions", policy).unsubscribe(
                topic, lambda t: self._control(self._core.unsubscribe, t))
        finally:
            self._plain_recv_again()  # before returning: from now on recv() purges (SubPolicy)

    # ------------------------------------------------------------------ contexts

    def context(self) -> SocketContext:
        """A new context of this socket (cooked REQ, REP, SURVEYOR, RESPONDENT, SUB): its
        own request, reply, survey or subscriptions, used concurrently with the others and
        with the socket's own send/recv (docs/PROTOCOLS.md, "Contexts"). Its
        ``send_timeout`` and ``recv_timeout`` start as the socket's. ``sp.NotSupported`` on
        other protocols and on raw sockets."""
        from scaproust.facade.context import SocketContext  # it imports this module

        self._check_open()
        ctx = SocketContext(self)
        with self._close_lock:
            if not self._closed:
                self._contexts.add(ctx)
                return ctx
        ctx._shut()
        raise Closed("socket is closed")

    #: pynng's name for ``context``.
    new_context = context

    def _readiness(self) -> tuple[bool, bool]:
        """(a recv would not wait, a send would not wait), for ``sp.poll``."""
        return self._channel.readiness()

    def _forget_context(self, ctx: SocketContext) -> None:
        self._contexts.discard(ctx)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the socket: endpoints stop, queued output is flushed for up to ``linger``
        seconds, then every pipe closes. Threads blocked in send()/recv() on this socket
        wake with ``sp.Closed``. Closing twice is harmless."""
        if not self._begin_close():
            return
        self._wait_closed()

    def _begin_close(self) -> bool:
        self._check_fork()  # in a child, the parent's threads may have held these locks
        with self._close_lock:
            if self._closed:
                return False
            self._closed = True
            self._plain_send = self._plain_recv = False  # the fast paths refuse from now on
            self._send_policy = self._recv_policy = None
        for endpoint in self._endpoints.values():
            endpoint.closed = True  # they close with the socket: its ports are free again
        # Threads blocked in send()/recv() wake now with sp.Closed; what send() accepted
        # before still goes out (the close request is queued behind it), within linger.
        self._channel.close()
        for ctx in list(self._contexts):
            ctx._shut()  # its callers wake with sp.Closed too
        self._closing_begins()
        try:
            self._session._core.post(self._core.close)
        except Closed:
            self._done.set()
            self._session._closing.pop(id(self._done), None)
        self._session._forget(self)
        return True

    def _wait_closed(self) -> None:
        # Bounded: linger, plus a margin for the I/O thread to notice the last pipe.
        if not wait_at_most(self._done, self._options.linger + 5.0):
            self._channel.close()

    def __del__(self) -> None:
        # An unclosed socket that is garbage-collected is closed, quietly and without
        # waiting (its queued output still gets its linger in the I/O thread). The collector
        # runs at any allocation, in any thread, possibly inside a critical section holding
        # one of our locks (the session's, this channel's): so take no lock here and leave
        # the whole close to the I/O thread. Nobody else can reach this socket any more, and
        # the session's weak dictionary forgets it by itself.
        try:
            if not self._closed:
                self._closed = True
                self._plain_send = self._plain_recv = False
                self._send_policy = self._recv_policy = None
                self._closing_begins()  # Session.close() waits for its linger
                self._session._core.post(_close_collected, self._channel, self._core)
        except Exception:
            pass

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed or self._io_loop.forked():
            self._refuse()

    def _check_fork(self) -> None:
        """Raise the fork error in a child process that inherited this socket."""
        if self._io_loop.forked():
            raise Error(FORKED)

    def _refuse(self) -> None:
        """Why a call cannot proceed: the fork error first, else ``sp.Closed``."""
        self._check_fork()
        raise Closed("socket is closed")

    def _control(self, command: Callable[[*Ts], T], *args: *Ts) -> T:
        with _translate_machine_errors(self):
            return self._session._core.call(command, *args)


#: Every socket alive, for the fork hook below.
_SOCKETS: weakref.WeakSet[Socket] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's sockets refuse every call in a child (its I/O thread is not there): their
    # fast paths must not take from or put into their channels, whose locks another thread
    # of the parent may have held at the fork; the slow paths raise the fork error.
    for sock in list(_SOCKETS):
        sock._plain_send = sock._plain_recv = False
        sock._send_policy = sock._recv_policy = None


if hasattr(os, "register_at_fork"):  # POSIX only, and there is no fork anywhere else
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _look_up_bind_address(url: str, ipv4_only: bool) -> Resolved | None:
    """The address of a bind URL's host name, looked up in the caller's thread (it may
    block on DNS); None when there is no name to look up (a literal, ``*``, an IPC path)."""
    transport, address = lookup(url)
    needs_resolution: Callable[[Address], bool] | None = getattr(
        transport, "needs_resolution", None)  # TCP only, with resolve
    if needs_resolution is None or not needs_resolution(address):
        return None
    resolve: Callable[..., Resolved] = getattr(transport, "resolve")  # noqa: B009
    return resolve(address, passive=True, ipv4_only=ipv4_only)


def _close_collected(channel: Channel, core: SocketCore) -> None:
    """Close a garbage-collected socket, in the I/O thread (see ``Socket.__del__``)."""
    channel.close()
    core.close()


def _check_limit(limit: int) -> None:
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be an int of at least 1, not {limit!r}")


def wait_at_most(event: threading.Event, seconds: float) -> bool:
    """``event.wait(seconds)`` for any number of seconds an option allows: a day at a time
    (``LONGEST_SLEEP``: a single wait of a month or more raised OverflowError)."""
    deadline = time.monotonic() + seconds
    while not event.wait(min(max(deadline - time.monotonic(), 0.0), LONGEST_SLEEP)):
        if time.monotonic() >= deadline:
            return False
    return True


def _as_item(data: ReadableBuffer | Message) -> Item:
    """What the user sends, as the queues carry it (core/message.py): a bytes-like object
    copied to ``bytes``; an ``sp.Message`` as given if its body and header are ``bytes``,
    else a new one with them copied (``sp.Message`` checks nothing: a ``str`` or a
    ``bytearray`` in it failed later, in the I/O thread or the receiver's ``recv()``)."""
    if isinstance(data, Message):
        if type(data.body) is bytes and type(data.header) is bytes:
            return data
        return Message(_as_bytes(data.body), _as_bytes(data.header))
    return _as_bytes(data)


def _as_bytes(data: ReadableBuffer) -> bytes:
    if isinstance(data, str):
        raise TypeError("send() takes bytes, not str: encode it first (e.g. text.encode())")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"send() takes a bytes-like object or sp.Message, not {type(data).__name__}") from None


@contextlib.contextmanager
def _translate_machine_errors(socket: Socket) -> Iterator[None]:
    """A command the socket's machine refuses because it is closing is ``sp.Closed``."""
    try:
        yield
    except MachineError as err:
        if socket.closed or socket._core.state != "open":
            raise Closed("socket is closed") from None
        raise RuntimeError(f"scaproust internal error: {err}") from err
