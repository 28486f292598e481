"""Devices: forward messages between two raw sockets of peer protocols, headers included.

``sp.device(left, right)`` joins, for instance, a raw REP facing clients and a raw REQ
facing servers: requests go left to right with the backtrace the raw REP built (its pipe
id word pushed on top), replies come back right to left and the raw REP pops that word to
find the client. Each device adds one word, so chains grow the backtrace one word per hop
until the TTL drops the message. ``sp.device(sock)`` with one raw BUS or PAIR socket
reflects what it receives back onto that socket (a raw BUS excludes the sender).

A device runs until either socket or the session closes, or ``stop()``: in the calling
thread by default, or in a background thread with ``background=True`` (then it returns
the ``Device``, whose ``stop()`` ends it and ``join()`` waits for it).

It is one thread. Each direction holds at most one message that its destination could
not take yet: the thread polls a direction's source for messages while it holds none, and
its destination for room while it holds one, so one direction that stalls (its destination
full: a peer that does not read until its own sends went through) never stops the other.
Both sockets are watched for a close all the time, and ``stop()`` wakes the poll: the end
is always prompt.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from scaproust.errors import Closed, WouldBlock
from scaproust.facade.poll import POLLIN, POLLOUT, poll

if TYPE_CHECKING:
    from scaproust.core.message import Message
    from scaproust.facade.socket import Socket

log = logging.getLogger("scaproust.device")

REFLECTING = ("bus", "pair", "pair1")


class Device:
    """A running (or runnable) device; see ``sp.device``."""

    def __init__(self, left: Socket, right: Socket | None = None) -> None:
        _check(left, right)
        self.left, self.right = left, right
        self._routes = {left: left} if right is None else {left: right, right: left}
        self._stopped = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.forwarded = 0

    def __repr__(self) -> str:
        return f"<scaproust.Device {self.left!r} <-> {self.right!r}>"

    def run(self) -> None:
        """Forward until a socket or the session closes, or ``stop()`` is called."""
        # By source: the message its destination could not take yet (see the docstring).
        # A single message that waited for its destination used to stop both directions:
        # two peers each sending a stream before reading deadlocked through the device.
        held: dict[Socket, Message] = {}
        channels = [sock._channel for sock in self._routes]
        try:
            while not self._stopped and not any(channel.closed for channel in channels):
                interest: dict[Socket, int] = {}
                for source, destination in self._routes.items():
                    if source in held:
                        interest[destination] = interest.get(destination, 0) | POLLOUT
                    else:
                        interest[source] = interest.get(source, 0) | POLLIN
                # Every socket's close wakes the poll, polled now or not (a poll takes its
                # event off the channels it polled when it returns: set again each time).
                for channel in channels:
                    channel.add_watcher(self._wake)
                ready = poll(interest, wake=self._wake, stopped=self._is_stopped)
                for source, destination in self._routes.items():
                    msg = held.pop(source, None)
                    if msg is None:
                        if not ready.get(source, 0) & POLLIN:
                            continue
                        try:
                            msg = source.recv_msg(block=False)
                        except WouldBlock:  # another reader of the same socket took it
                            continue
                    try:
                        destination.send_msg(msg, block=False)
                    except WouldBlock:
                        held[source] = msg  # until its destination has room
                        continue
                    self.forwarded += 1
        except Closed:
            pass
        finally:
            for channel in channels:
                channel.remove_watcher(self._wake)
        if not self._stopped:
            log.debug("%r: a socket closed, the device stops", self)

    def start(self) -> Device:
        """Run in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("device already started")
        self._thread = threading.Thread(target=self.run, name="scaproust-device", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop forwarding (promptly, also when a message waits for its destination)."""
        self._stopped = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread; True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _is_stopped(self) -> bool:
        return self._stopped or any(sock._channel.closed for sock in self._routes)


def device(left: Socket, right: Socket | None = None, *,
           background: bool = False) -> Device | None:
    """Forward messages between two raw sockets of peer protocols (or reflect on one raw
    BUS or PAIR socket) until either socket or the session closes.

    Runs in the calling thread and returns None when it ends; with ``background=True`` it
    runs in a daemon thread and returns the ``Device`` (``stop()``, ``join()``).
    """
    dev = Device(left, right)
    if background:
        return dev.start()
    dev.run()
    return None


def _check(left: Socket, right: Socket | None) -> None:
    for sock in (left, right):
        if sock is not None and not sock.raw:
            raise ValueError(f"a device needs raw sockets: {sock!r} is cooked (use raw=True)")
    if right is None:
        if left.protocol.name not in REFLECTING:
            raise ValueError(f"a device with one socket reflects on raw BUS or PAIR, not {left.protocol!r}")
    elif right.protocol.id != left.protocol.peer_id:
        raise ValueError(f"a device joins peer protocols: {left.protocol!r} and {right.protocol!r} are not")
