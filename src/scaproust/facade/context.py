"""Contexts: many concurrent requests (REQ), replies (REP, RESPONDENT), surveys (SURVEYOR)
or subscriptions (SUB) on one socket, each with its own state, as nng's contexts
(docs/PROTOCOLS.md, "Contexts").

``ctx = sock.context()`` gives an object with the data methods of a socket (``send``,
``recv``, ``send_msg``, ``recv_msg``, ``try_*``, ``asend``, ``arecv``, ``async for``) and
its own ``send_timeout`` / ``recv_timeout`` (and ``resend_interval`` on a REQ,
``survey_deadline`` on a SURVEYOR, ``recv_buffer`` and ``prefer_new`` on a SUB), copied from
the socket when it is made. The socket's own send/recv stay its default context, on their
own path.

Its state lives in the protocol's ``ContextPolicy`` (core/policy.py), in the caller's
thread, and for REQ, SURVEYOR and SUB in a machine of the I/O thread too (``req_ctx``,
``surveyor_ctx``, ``sub_ctx``, reached through a channel of the context's own:
core/user_context.py). A context is polled and awaited like
a socket: through the watchers of its channel (its own, or for REP and RESPONDENT the
socket's, which holds the requests any context may take).

Closing a context wakes its callers with ``sp.Closed``; closing its socket closes it.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from scaproust.core import options as _options
from scaproust.core.message import Item, Message, as_message, body_of
from scaproust.core.policy import send_in_order
from scaproust.errors import Closed, Error, NotSupported, Timeout, WouldBlock
from scaproust.facade.aio import AsyncSocketMixin
from scaproust.facade.socket import _DEFAULT, DataShortcuts, Socket, TimeoutArg, _as_item

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from scaproust.core.channel import Channel
    from scaproust.core.policy import ContextPolicy, Subscriptions
    from scaproust.core.user_context import UserContext

T = TypeVar("T")


class _ContextOption(Generic[T]):
    """An option a context has of its own (its value copied from the socket's at creation)."""

    def __set_name__(self, owner: type[SocketContext], name: str) -> None:
        self.name = name
        self.spec = _options.SPECS[name]
        self.__doc__ = self.spec.doc

    def __get__(self, ctx: SocketContext | None, owner: type[SocketContext] | None = None) -> T:
        if ctx is None:
            return self  # type: ignore[return-value]  # on the class: the descriptor
        self._check_applies(ctx)
        return cast(T, getattr(ctx._options, self.name))

    def __set__(self, ctx: SocketContext, value: T) -> None:
        if ctx.closed:  # as a closed socket's options
            raise Closed("context is closed" if ctx._closed else "socket is closed")
        self._check_applies(ctx)  # as reading it: another protocol's option is no attribute
        ctx._options.set(self.name, value)

    def _check_applies(self, ctx: SocketContext) -> None:
        if not _options.applies(self.spec, ctx._socket.protocol):
            raise AttributeError(f"a {ctx._socket.protocol.name} context has no option {self.name!r}")


class SocketContext(DataShortcuts, AsyncSocketMixin):
    """One context of a socket: made by ``sock.context()`` (alias ``sock.new_context()``)."""

    send_timeout: _ContextOption[float | None] = _ContextOption()
    recv_timeout: _ContextOption[float | None] = _ContextOption()
    resend_interval: _ContextOption[float] = _ContextOption()
    survey_deadline: _ContextOption[float] = _ContextOption()
    recv_buffer: _ContextOption[int] = _ContextOption()

    def __init__(self, sock: Socket) -> None:
        info = sock.protocol
        kind = info.context_policy_class()
        if sock.raw or kind is None:
            what = f"a raw {info!r}" if sock.raw and kind is not None else f"{info!r}"
            raise NotSupported(f"{what} has no contexts (cooked sp.Req, sp.Rep, sp.Surveyor, "
                               "sp.Respondent and sp.Sub sockets have)")
        self._socket = sock
        self._io_loop = sock._io_loop
        self._options = copy.copy(sock._options)
        self._closed = False
        self._close_lock = threading.Lock()
        self._core_context: UserContext | None = None
        channel: Channel = sock._channel
        if kind.own_machine:
            self._core_context = sock._control(sock._core.open_context, self._options)
            channel = self._core_context.channel
        self._channel = channel
        self._policy: ContextPolicy = kind(channel, self._options, sock._core.stats,
                                           sock._policy)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<scaproust.SocketContext of {self._socket!r} {state}>"

    @property
    def socket(self) -> Socket:
        """The socket this context belongs to."""
        return self._socket

    @property
    def closed(self) -> bool:
        return self._closed or self._socket.closed

    def _readiness(self) -> tuple[bool, bool]:
        """For ``sp.poll``: as a socket's; a closed context is ready both ways, so that
        the next call raises ``sp.Closed``."""
        if self._closed:
            return True, True
        return self._channel.readiness()

    # ------------------------------------------------------------------ data

    def send(self, data: ReadableBuffer | Message, *, timeout: TimeoutArg = _DEFAULT,
             block: bool = True) -> None:
        """Send one message on this context (a request on REQ, the reply to this context's
        request on REP and RESPONDENT); as ``Socket.send``."""
        send_in_order(self._policy, self._channel, self._sendable(data),
                      self._seconds(timeout, block, "send_timeout"))

    def _sendable(self, data: ReadableBuffer | Message) -> Item:
        self._check_open()
        if not self._socket.protocol.can_send:
            raise NotSupported(f"{self._socket.protocol!r} contexts cannot send")
        return data if type(data) is bytes else _as_item(data)

    def recv(self, *, timeout: TimeoutArg = _DEFAULT, block: bool = True) -> bytes:
        """Receive this context's next message body; as ``Socket.recv``."""
        return body_of(self._get(timeout, block))

    def recv_msg(self, *, timeout: TimeoutArg = _DEFAULT, block: bool = True) -> Message:
        """Receive this context's next message with its header."""
        return as_message(self._get(timeout, block))

    def _seconds(self, timeout: TimeoutArg, block: bool, option: str) -> float | None:
        default: float | None = getattr(self._options, option)
        return Socket._timeout(timeout, block, option, default)

    def _get(self, timeout: TimeoutArg, block: bool) -> Item:
        self._check_open()
        seconds = self._seconds(timeout, block, "recv_timeout")
        policy = self._policy
        token = policy.begin_recv()
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while True:
                wait = policy.recv_wait(deadline)
                if wait is not None and wait <= 0 and seconds != 0:
                    raise Timeout("recv timed out")
                epoch = policy.epoch
                try:
                    got = self._take(wait, token)
                except Timeout:
                    if policy.renewed(epoch):
                        continue  # a new survey, sent meanwhile: its deadline now
                    raise
                item = policy.incoming_for(got, token)
                if item is not None:
                    return item
        finally:
            policy.end_recv(token)

    def _take(self, wait: float | None, token: object) -> Item:
        try:
            return self._policy.take(wait, token)
        except Closed:
            raise Closed("context is closed" if self._closed else "socket is closed") from None

    # ------------------------------------------------------------------ subscriptions (SUB)

    def subscribe(self, topic: bytes | str) -> None:
        """SUB: this context also receives the messages whose body starts with ``topic``
        (its own topics: the socket's and other contexts' are apart). As
        ``Socket.subscribe``; ``sp.NotSupported`` on contexts of other protocols."""
        subscriptions, core_context = self._subscriptions()
        sock = self._socket
        subscriptions.subscribe(
            topic, lambda t: sock._control(sock._core.subscribe_context, core_context, t))

    def unsubscribe(self, topic: bytes | str) -> None:
        """SUB: stop receiving what only ``topic`` matched, already queued included;
        ``ValueError`` if this context was not subscribed to it."""
        subscriptions, core_context = self._subscriptions()
        sock = self._socket
        subscriptions.unsubscribe(
            topic, lambda t: sock._control(sock._core.unsubscribe_context, core_context, t))

    def _subscriptions(self) -> tuple[Subscriptions, UserContext]:
        self._check_open()
        if not hasattr(self._policy, "subscribe") or self._core_context is None:
            raise NotSupported(f"{self._socket.protocol!r} contexts have no subscriptions "
                               "(only sp.Sub's have)")
        return cast("Subscriptions", self._policy), self._core_context

    @property
    def prefer_new(self) -> bool:
        """SUB: when this context's queue (``recv_buffer`` messages) is full, lose its
        oldest queued message (True, the default, as nng's sub:prefnew) or the new one
        (False); either way counted as ``dropped_context_full``."""
        return bool(getattr(self._sub_machine(), "prefer_new"))  # noqa: B009

    @prefer_new.setter
    def prefer_new(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"prefer_new is a bool, not {type(value).__name__}")
        self._sub_machine().prefer_new = value  # type: ignore[attr-defined]

    def _sub_machine(self) -> object:
        if self._core_context is None or not hasattr(self._core_context.machine, "prefer_new"):
            raise AttributeError(f"a {self._socket.protocol.name} context has no option "
                                 "'prefer_new'")
        return self._core_context.machine

    # ------------------------------------------------------------------ asyncio

    async def arecv_msg(self) -> Message:
        """Receive this context's next message without blocking the event loop."""
        self._check_open()
        policy = self._policy
        token = policy.begin_recv()
        try:
            cap = self._options.recv_timeout
            limit = policy.recv_wait(None)
            if limit is not None and (cap is None or limit < cap):
                cap = limit
            return await self._wait_async(lambda: self._attempt(token), cap, "recv",
                                          lend=True)
        finally:
            policy.end_recv(token)

    def _attempt(self, token: object) -> Message | None:
        """One try of ``arecv_msg``: the message, or None if none is there now."""
        self._check_open()
        while True:
            try:
                taken = self._take(0, token)
            except WouldBlock:
                return None
            item = self._policy.incoming_for(taken, token)
            if item is not None:
                return as_message(item)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the context: its callers wake with ``sp.Closed``, a request it holds is
        dropped. The socket stays open. Closing twice is harmless."""
        if not self._shut():
            return
        self._socket._forget_context(self)
        core_context = self._core_context
        if core_context is not None:
            # Waited for: once close() returns, nothing more reaches this context (a reply
            # arriving now finds no context with its id, and is counted as stale).
            sock = self._socket
            try:
                sock._control(sock._core.close_context, core_context)
            except (Closed, Error):
                pass  # the socket or session is gone: so is the context's machine

    def _shut(self) -> bool:
        """Mark closed and wake the callers (also when the socket closes); False if it was."""
        with self._close_lock:
            if self._closed:
                return False
            self._closed = True
        self._policy.close()
        if self._core_context is not None:
            self._channel.close()
        return True

    def __del__(self) -> None:
        # A context dropped without close(): its machine (if it has one) is closed in the
        # I/O thread, without waiting and without taking any lock here (the collector may
        # run inside one: see Socket.__del__), so that it stops taking messages.
        try:
            core_context = self._core_context
            if not self._closed and core_context is not None:
                self._closed = True
                sock = self._socket
                sock._session._core.post(sock._core.close_context, core_context)
        except Exception:
            pass

    def _begin_close(self) -> bool:
        was_open = not self._closed
        self.close()
        return was_open

    def _wait_closed(self) -> None:
        """Nothing to wait for: a context flushes nothing of its own."""

    def __enter__(self) -> SocketContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        self._socket._check_fork()
        if self._closed:
            raise Closed("context is closed")
        if self._socket.closed:
            raise Closed("socket is closed")

    def _check_fork(self) -> None:
        self._socket._check_fork()

