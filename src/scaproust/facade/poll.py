"""Waiting on many sockets at once: ``sp.poll`` and ``sp.Poller``.

A poll returns as soon as ANY requested condition holds (scaproust's Rust probe waited
for all of them), or when the timeout expires, which is not an error: the result is then
empty. "Readable" means a message waits (a ``recv()`` returns it without waiting),
"writable" that a ``send()`` would not wait; a closed socket is reported ready both ways so
that the caller's next call raises ``sp.Closed`` instead of the poll hanging. A socket
whose ``recv()`` would refuse at once (a REQ with no request out, a SURVEYOR past its
deadline: ``sp.BadState``) is not readable, as in nng and pyzmq: a poll loop does not spin
on it.

How: every socket's channel keeps a set of watchers (``threading.Event``) that it sets
when it may have become readable, writable or closed; a poll registers one event in each
channel, checks, and sleeps on the event until the next change.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from scaproust.reactor.waker import LONGEST_SLEEP

if TYPE_CHECKING:
    from scaproust.facade.context import SocketContext
    from scaproust.facade.socket import Socket

#: What can be polled: a socket, or a context of one (facade/context.py).
Pollable: TypeAlias = "Socket | SocketContext"
#: Sockets and their conditions (``POLLIN | POLLOUT``): what a poll asks, and what it finds.
Interest: TypeAlias = "dict[Pollable, int]"
P = TypeVar("P", bound="Pollable")

POLLIN = 1
POLLOUT = 2


def poll(interest: Mapping[P, int], timeout: float | None = None, *,
         wake: threading.Event | None = None,
         stopped: Callable[[], bool] | None = None) -> dict[P, int]:
    """Wait until one of the sockets is ready as asked.

    ``interest`` maps each socket (or context: ``sock.context()``) to ``sp.POLLIN``,
    ``sp.POLLOUT`` or both (``|``). Returns a dict of the sockets that are ready, each with the conditions that hold (an empty
    dict on timeout). ``timeout`` in seconds, None = forever.

    ``wake`` and ``stopped`` let another thread end the wait early (devices use them): it
    sets its flag, then ``wake``; the poll then returns what is ready, possibly nothing.
    """
    timeout = _seconds(timeout)
    wanted = dict(interest)
    for sock, flags in wanted.items():
        if not flags or flags & ~(POLLIN | POLLOUT):
            raise ValueError(f"poll flags for {sock!r} must be POLLIN, POLLOUT or both, not {flags!r}")
        sock._check_fork()  # a socket inherited across os.fork() would never become ready
    event = wake if wake is not None else threading.Event()
    channels = [sock._channel for sock in wanted]
    for channel in channels:
        channel.add_watcher(event)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event.clear()
            ready = _ready(wanted)
            if ready or (stopped is not None and stopped()):
                return ready
            if deadline is None:
                event.wait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {}
                event.wait(min(left, LONGEST_SLEEP))  # looked at again: see LONGEST_SLEEP
    finally:
        for channel in channels:
            channel.remove_watcher(event)


def _seconds(timeout: object) -> float | None:
    """A poll's ``timeout``, checked as the sockets' timeouts are (docs/OPTIONS.md): None
    or a number of seconds >= 0, infinity being None. (Unchecked, -1 returned at once where
    pyzmq and nng wait for ever, and NaN never returned, spinning a core.)"""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"poll timeout must be None or a number of seconds >= 0, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"poll timeout must be None or a number of seconds >= 0, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def _ready(interest: Mapping[P, int]) -> dict[P, int]:
    ready: dict[P, int] = {}
    for sock, flags in interest.items():
        readable, writable = sock._readiness()
        got = (POLLIN if readable and flags & POLLIN else 0) | (POLLOUT if writable and flags & POLLOUT else 0)
        if got:
            ready[sock] = got
    return ready


class Poller:
    """A reusable set of sockets to poll (like pyzmq's ``zmq.Poller``)."""

    def __init__(self) -> None:
        self._interest: Interest = {}

    def register(self, sock: Pollable, flags: int = POLLIN | POLLOUT) -> None:
        """Watch ``sock`` for ``flags``; registering again replaces its flags."""
        self._interest[sock] = flags

    def unregister(self, sock: Pollable) -> None:
        del self._interest[sock]

    def poll(self, timeout: float | None = None) -> Interest:
        """As ``sp.poll`` over the registered sockets."""
        return poll(self._interest, timeout)
