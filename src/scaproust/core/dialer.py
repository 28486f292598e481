"""A connected endpoint, driven by the generated ``dialer`` machine.

Theory of operation: ``connecting`` opens one dialed pipe; the pipe's connect, header
exchange and life are its own machine's business, and it reports back ``evt_pipe_opened``
(the pipe became active) and ``evt_pipe_closed`` (it died, before or after that). A pipe
that dies before becoming active sends the dialer to ``waiting`` for the reconnect
interval; one that dies after is redialed at once (the nanomsg behaviour, WIRE.md) if it
lasted at least the reconnect interval, else it waits too: a peer that accepts and then
drops us at once (a PAIR that has a partner already) must not cause a reconnect storm.

A host name (``tcp://localhost:5555``) is looked up before every dial, in a worker thread
(``resolving``; transports/resolver.py): a slow DNS answer must not stall the I/O thread,
which serves every socket of the session. The outcome comes back to the loop as
``evt_resolved`` (then ``connecting`` dials the address found) or ``evt_resolve_failed``;
no answer within ``RESOLVE_TIMEOUT`` is ``evt_timeout``. Either failure waits the reconnect
schedule like a refused connection. Address literals and IPC paths skip ``resolving``.

Failures that are not the peer's doing (a name that does not resolve; out of descriptors
or memory when making the socket) are logged as a WARNING once per episode and an INFO
line, with the count, once it works again: not a line per attempt.

Extra fields: ``pipe`` (the current pipe, ``connecting`` and ``connected``), ``_timer``
(``resolving`` and ``waiting``), ``_connected_at`` (loop time of the last ``evt_pipe_opened``),
``_backoff`` (the delay before the next retry; back to ``reconnect_interval`` on success),
``_lookup`` (the pending lookup's Future, ``resolving`` only), ``_resolved`` (its result,
until ``open_pipe`` uses it), ``_lookups`` and ``_starved`` (the two failure episodes).

Every wait is jittered: a random 50-100 % of the delay, so that a hundred clients that
lost the same server do not come back in lockstep. The delay doubles after each failure
up to ``reconnect_interval_max`` (0: it never grows).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import random
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol, cast

from scaproust._generated.dialer import DialerFSM
from scaproust.core.guard import entry_point, log_crash
from scaproust.core.options import EndpointOptions
from scaproust.core.pipe import Pipe
from scaproust.core.pipe_kinds import pipe_class
from scaproust.core.stats import CONNECT_FAILURES
from scaproust.transports import resolver

if TYPE_CHECKING:
    import socket as _socket

    from scaproust.core.interfaces import PipeLoop, Timer
    from scaproust.core.socket import SocketCore
    from scaproust.transports import Transport
    from scaproust.transports.tcp import Resolved
    from scaproust.transports.tls import TLSSetup
    from scaproust.transports.url import Address

    class _Resolving(Protocol):
        """What TCP alone adds to ``Transport`` (transports/tcp.py): name lookups, and a
        ``connect`` that takes the lookup's result."""

        def resolve(self, address: Address | str, *, passive: bool = False,
                    ipv4_only: bool = False) -> Resolved: ...
        def connect(self, address: Address | str, *, ipv4_only: bool = False,
                    resolved: Resolved | None = None) -> tuple[_socket.socket | None, int]: ...

log = logging.getLogger("scaproust.dialer")

#: How long a dial waits for a host name's lookup before it counts as a failed attempt
#: (retried on the reconnect schedule). The C library's own retries against a DNS server
#: that does not answer take about that long (5 s a try by default); a longer wait would
#: only delay the retry, a much shorter one would give up on a slow but working server.
RESOLVE_TIMEOUT = 10.0

#: A dial that fails with one of these is short of descriptors or memory, in this process
#: or the system: worth a WARNING, once per episode (a refused connection is not).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Episode:
    """A failure that recurs on every retry: a WARNING when it starts, DEBUG lines while it
    lasts, an INFO line with the count once it works again."""

    __slots__ = ("what", "failures")

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, err: BaseException) -> None:
        if self.failures:
            log.debug("%s failed again: %s", self.what, err)
        else:
            log.warning("%s failed: %s; retrying on the reconnect schedule, logged once "
                        "until it works", self.what, err)
        self.failures += 1

    def ended(self) -> None:
        if self.failures:
            log.info("%s works again after %d failed attempts", self.what, self.failures)
            self.failures = 0


class Dialer(DialerFSM):
    """The I/O-thread side of an endpoint made by ``connect()``."""

    #: tls+tcp: the TLS context (and name to check) of this endpoint's pipes.
    tls_setup: TLSSetup | None = None

    def __init__(self, *, loop: PipeLoop, socket: SocketCore, transport: Transport,
                 address: Address, url: str, endpoint_id: int,
                 endpoint: EndpointOptions | None = None) -> None:
        # EndpointOptions: the pipe's priorities and size limit, and the reconnect schedule.
        self.endpoint = endpoint if endpoint is not None else EndpointOptions.of(socket.options)
        self.loop = loop
        self.socket = socket
        self.transport = transport
        # its pipe class, loaded now (at connect) rather than at the first pipe
        self._pipe_class = pipe_class(transport)
        self.address = address
        self.url = url
        self.endpoint_id = endpoint_id
        self.pipe: Pipe | None = None
        self._timer: Timer | None = None
        self._connected_at = 0.0
        self._backoff: float | None = None  # None: start from reconnect_interval
        self._random = random.random
        needs_resolution = getattr(transport, "needs_resolution", None)  # TCP only
        self._has_name = bool(needs_resolution and needs_resolution(address))
        # The lookup's worker (tests substitute their own).
        self._submit: Callable[[Callable[[], Resolved]], Future[Resolved]] = resolver.submit
        self._lookup: Future[Resolved] | None = None
        self._resolved: Resolved | None = None
        host = getattr(address, "host", None)
        self._lookups = _Episode(f"resolving {host!r} for {url}")
        self._starved = _Episode(f"dialing {url}")

    def __repr__(self) -> str:
        return f"<Dialer {self.url} {self.state}>"

    @property
    def pipes(self) -> set[Pipe]:
        return {self.pipe} if self.pipe is not None else set()

    # ------------------------------------------------------------------ resolving

    def has_name(self, *args: object) -> bool:
        # *args: a guard of cmd_start and evt_timeout (nothing) and evt_pipe_closed (pipe).
        return self._has_name

    def start_resolving(self) -> None:
        log.debug("resolving %s", self.url)
        self.pipe = None
        lookup = self._submit(functools.partial(
            cast("_Resolving", self.transport).resolve, self.address, ipv4_only=self.socket.options.ipv4_only))
        self._lookup = lookup
        self._timer = self.loop.call_later(RESOLVE_TIMEOUT, self._on_timeout)
        lookup.add_done_callback(self._post_lookup)

    def _post_lookup(self, lookup: Future[Resolved]) -> None:
        """The lookup's done-callback, in the worker's thread: hand the outcome to the loop."""
        try:
            self.loop.call_soon_threadsafe(self._on_lookup_done, lookup)
        except RuntimeError:
            pass  # the session is closed (or this is a forked child): nobody waits for it

    @entry_point
    def _on_lookup_done(self, lookup: Future[Resolved]) -> None:
        if lookup is not self._lookup:
            return  # it timed out, or the dialer closed: a later dial looks the name up again
        err = lookup.exception()
        if err is not None:
            self.evt_resolve_failed(err)
            return
        self._lookups.ended()
        self._resolved = lookup.result()
        self.evt_resolved()

    def stop_resolving(self) -> None:
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup.cancel()  # still queued: it never runs
        self.cancel_retry_timer()

    def note_resolve_failure(self, err: BaseException) -> None:
        self._lookups.failed(err)

    def note_resolve_timeout(self) -> None:
        self._lookups.failed(TimeoutError(f"no answer within {RESOLVE_TIMEOUT:g} s"))

    # ------------------------------------------------------------------ connecting

    def open_pipe(self) -> None:
        log.debug("dialing %s", self.url)
        resolved, self._resolved = self._resolved, None
        err: int | OSError
        try:
            stream, err = self._connect(resolved)
        except OSError as exc:  # e.g. out of descriptors: retry later like a refusal
            stream, err = None, exc  # the error itself: it may have no errno
        self._note_resources(err)
        self.pipe = self._pipe_class(
            loop=self.loop, stream=stream, transport=self.transport, socket=self.socket,
            owner=self, dialed=True, connect_error=0 if stream is not None else err,
            peer_addr=self.url, endpoint=self.endpoint)
        self.pipe.cmd_open()

    def _connect(self, resolved: Resolved | None) -> tuple[_socket.socket | None, int]:
        ipv4_only = self.socket.options.ipv4_only
        if resolved is not None:  # a host name, looked up while resolving (TCP only)
            return cast("_Resolving", self.transport).connect(
                self.address, ipv4_only=ipv4_only, resolved=resolved)
        return self.transport.connect(self.address, ipv4_only=ipv4_only)

    def _note_resources(self, err: int | OSError) -> None:
        """Log a dial short of descriptors or memory once per episode (see ``_Episode``)."""
        code = err.errno if isinstance(err, OSError) else err
        if code in OUT_OF_RESOURCES:
            self._starved.failed(err if isinstance(err, OSError) else OSError(code, os.strerror(code)))
        else:
            self._starved.ended()

    def reset_backoff(self, pipe: Pipe) -> None:
        self._backoff = None
        self._connected_at = self.loop.time()
        log.debug("connected to %s", self.url)

    def lasted(self, pipe: Pipe) -> bool:
        return self.loop.time() - self._connected_at >= self.endpoint.reconnect_interval

    def log_disconnect(self, pipe: Pipe) -> None:
        # Runs after the new state's on_enter: open_pipe (connecting) has already replaced
        # self.pipe with the new connection, and start_retry_timer (waiting) cleared it.
        log.debug("connection to %s lost", self.url)

    def start_retry_timer(self) -> None:
        self.pipe = None
        self.socket.stats.count(CONNECT_FAILURES)
        delay = self._next_delay()
        log.debug("redialing %s in %.3f s", self.url, delay)
        self._timer = self.loop.call_later(delay, self._on_timeout)

    def _next_delay(self) -> float:
        endpoint = self.endpoint
        delay = endpoint.reconnect_interval if self._backoff is None else self._backoff
        ceiling = endpoint.reconnect_interval_max
        # Doubled up to the ceiling, which bounds every later wait even below the interval
        # (as nng's dialer); 0 means no growth.
        self._backoff = min(delay * 2, ceiling) if ceiling > 0 else delay
        return delay * (0.5 + 0.5 * self._random())

    @entry_point
    def _on_timeout(self) -> None:
        self._timer = None
        self.evt_timeout()

    def log_crash(self, err: Exception) -> None:
        log_crash(log, f"dialer {self.url}", err)

    def _abandon(self) -> None:
        self.state = "closed"
        self.stop_resolving()

    def cancel_retry_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_pipe(self) -> None:
        if self.pipe is not None and self.pipe.state != "dead":
            self.pipe.cmd_close()
