"""A connected endpoint, driven by the generated ``dialer`` machine.

Theory of operation: ``connecting`` opens one dialed pipe; the pipe's connect, header
exchange and life are its own machine's business, and it reports back ``evt_pipe_opened``
(the pipe became active) and ``evt_pipe_closed`` (it died, before or after that). A pipe
that dies before becoming active sends the dialer to ``waiting`` for the reconnect
interval; one that dies after is redialed at once (the nanomsg behaviour, WIRE.md) if it
lasted at least the reconnect interval, else it waits too: a peer that accepts and then
drops us at once (a PAIR that has a partner already) must not cause a reconnect storm.

Extra fields: ``pipe`` (the current pipe, ``connecting`` and ``connected``), ``_timer``
(``waiting`` only), ``_connected_at`` (loop time of the last ``evt_pipe_opened``),
``_backoff`` (the delay before the next retry; back to ``reconnect_interval`` on success).

Every wait is jittered: a random 50-100 % of the delay, so that a hundred clients that
lost the same server do not come back in lockstep. The delay doubles after each failure
up to ``reconnect_interval_max`` (0: it never grows).
"""

from __future__ import annotations

import logging
import random

from scaproust._generated.dialer import DialerFSM
from scaproust.core.guard import entry_point, log_crash
from scaproust.core.options import EndpointOptions
from scaproust.core.pipe import Pipe

log = logging.getLogger("scaproust.dialer")


class Dialer(DialerFSM):
    """The I/O-thread side of an endpoint made by ``connect()``."""

    def __init__(self, *, loop, socket, transport, address, url: str, endpoint_id: int,
                 endpoint=None):
        # EndpointOptions: the pipe's priorities and size limit, and the reconnect schedule.
        self.endpoint = endpoint if endpoint is not None else EndpointOptions.of(socket.options)
        self.loop = loop
        self.socket = socket
        self.transport = transport
        self.address = address
        self.url = url
        self.endpoint_id = endpoint_id
        self.pipe: Pipe | None = None
        self._timer = None
        self._connected_at = 0.0
        self._backoff = None  # None: start from reconnect_interval
        self._random = random.random

    def __repr__(self) -> str:
        return f"<Dialer {self.url} {self.state}>"

    @property
    def pipes(self) -> set:
        return {self.pipe} if self.pipe is not None else set()

    def open_pipe(self, *args) -> None:
        log.debug("dialing %s", self.url)
        try:
            stream, err = self.transport.connect(self.address, ipv4_only=self.socket.options.ipv4_only)
        except OSError as exc:  # e.g. name resolution failed: retry later like a refusal
            stream, err = None, exc  # the error itself: it may have no errno
        self.pipe = Pipe(loop=self.loop, stream=stream, transport=self.transport,
                         socket=self.socket, owner=self, dialed=True,
                         connect_error=0 if stream is not None else err, peer_addr=self.url,
                         endpoint=self.endpoint)
        self.pipe.cmd_open()

    def reset_backoff(self, pipe) -> None:
        self._backoff = None
        self._connected_at = self.loop.time()
        log.debug("connected to %s", self.url)

    def lasted(self, pipe) -> bool:
        return self.loop.time() - self._connected_at >= self.endpoint.reconnect_interval

    def log_disconnect(self, pipe) -> None:
        # Runs after the new state's on_enter: open_pipe (connecting) has already replaced
        # self.pipe with the new connection, and start_retry_timer (waiting) cleared it.
        log.debug("connection to %s lost", self.url)

    def start_retry_timer(self, *args) -> None:
        self.pipe = None
        self.socket.stats.count("connect_failures")
        delay = self._next_delay()
        log.debug("redialing %s in %.3f s", self.url, delay)
        self._timer = self.loop.call_later(delay, self._on_timeout)

    def _next_delay(self) -> float:
        endpoint = self.endpoint
        delay = endpoint.reconnect_interval if self._backoff is None else self._backoff
        ceiling = endpoint.reconnect_interval_max
        self._backoff = min(delay * 2, ceiling) if ceiling > delay else delay
        return delay * (0.5 + 0.5 * self._random())

    @entry_point
    def _on_timeout(self) -> None:
        self._timer = None
        self.evt_timeout()

    def log_crash(self, err) -> None:
        log_crash(log, f"dialer {self.url}", err)

    def _abandon(self) -> None:
        self.state = "closed"
        self.cancel_retry_timer()

    def cancel_retry_timer(self, *args) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_pipe(self, *args) -> None:
        if self.pipe is not None and self.pipe.state != "dead":
            self.pipe.cmd_close()
