"""A bound endpoint, driven by the generated ``listener`` machine.

Theory of operation: the listening socket is created by ``SocketCore.add_listener`` before
this machine exists, so that ``bind()`` reports ``AddressInUse`` at once in the caller's
thread. While ``listening`` the loop watches it for readability; each readiness accepts
every pending connection and opens one pipe per connection. ``closed`` closes the
listening socket (freeing the port or removing the IPC path at once) and every pipe.

An accept that fails (EMFILE/ENFILE: out of file descriptors; ENOBUFS/ENOMEM; anything but
"nothing pending") leaves the connection in the kernel's queue, so the listening socket
stays readable: retrying at once would spin a core and log a line per attempt. Instead
the listener goes ``backing_off``: it stops watching the socket for ``ACCEPT_BACKOFF_MIN``,
doubling up to ``ACCEPT_BACKOFF_MAX`` while the failures last, then watches it again and
the next readiness retries (nng does the same). Its pipes carry on meanwhile. An episode
is logged twice: a WARNING at its first failure and an INFO line, with the count, once an
accept works again; every failure is counted in ``accept_errors``.

Extra fields: ``pipes`` (live pipes accepted here, any state), ``handle`` (the transport's
listener, until ``closed``), ``_timer`` (``backing_off`` only), ``_backoff`` (the next
pause), ``_failures`` (failed accepts in the current episode; 0 when there is none),
``_failure`` (an accept error waiting to be reported as ``evt_accept_failed``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scaproust._generated.listener import ListenerFSM
from scaproust.core.guard import entry_point, log_crash
from scaproust.core.pipe import Pipe
from scaproust.core.pipe_kinds import pipe_class
from scaproust.core.stats import ACCEPT_ERRORS, PIPES_REFUSED

if TYPE_CHECKING:
    import socket as _socket

    from scaproust.core.interfaces import PipeLoop, Timer
    from scaproust.core.options import EndpointOptions
    from scaproust.core.socket import SocketCore
    from scaproust.transports import ListeningSocket, Transport
    from scaproust.transports.tls import TLSSetup

log = logging.getLogger("scaproust.listener")

#: Connections accepted per readiness event, so one busy listener cannot monopolise the loop.
ACCEPT_BATCH = 64

#: The first pause after a failed accept, and the longest: short enough that a listener
#: resumes within a second once descriptors free up, long enough that an exhausted process
#: spends nothing on retries (nng backs off from 10 ms to 1 s the same way; retrying at once
#: cost a full core and about 90,000 log lines a second).
ACCEPT_BACKOFF_MIN = 0.01
ACCEPT_BACKOFF_MAX = 1.0


class Listener(ListenerFSM):
    """The I/O-thread side of an endpoint made by ``bind()``."""

    #: tls+tcp: the TLS context (and name to check) of this endpoint's pipes.
    tls_setup: TLSSetup | None = None

    def __init__(self, *, loop: PipeLoop, socket: SocketCore, transport: Transport,
                 handle: ListeningSocket, url: str, endpoint_id: int,
                 endpoint: EndpointOptions | None = None) -> None:
        self.endpoint = endpoint  # EndpointOptions for every pipe accepted here
        self.loop = loop
        self.socket = socket
        self.transport = transport
        self.handle = handle
        # its pipe class, loaded now (at bind) rather than at the first connection
        self._pipe_class = pipe_class(transport)
        self.url = url
        self.endpoint_id = endpoint_id
        self.pipes: set[Pipe] = set()
        self._timer: Timer | None = None
        self._backoff = ACCEPT_BACKOFF_MIN
        self._failures = 0
        self._failure: OSError | None = None
        self._refused = False  # a connection beyond max_pipes was refused (logged once)

    def __repr__(self) -> str:
        return f"<Listener {self.url} {self.state}>"

    def watch_accept(self) -> None:
        log.debug("listening on %s", self.url)
        self.loop.add_reader(self.handle, self._on_acceptable)

    def unwatch_accept(self) -> None:
        self.loop.remove_reader(self.handle)

    @entry_point
    def _on_acceptable(self) -> None:
        self.evt_acceptable()
        # A failure is reported once the accepting transition is over, not from inside it.
        err, self._failure = self._failure, None
        if err is not None:
            self.evt_accept_failed(err)

    def log_crash(self, err: Exception) -> None:
        log_crash(log, f"listener {self.url}", err)

    def _abandon(self) -> None:
        self.state = "closed"
        self.loop.remove_reader(self.handle)
        self.cancel_backoff_timer()
        self.transport.close_listener(self.handle)

    def accept_connections(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                stream = self.transport.accept(self.handle)
            except OSError as err:
                # EMFILE and friends: the connection stays queued and the socket readable;
                # _on_acceptable reports it once this transition is over (backing_off).
                self._failure = err
                return
            self._recovered()
            if stream is None:
                return
            limit = self.endpoint.max_pipes if self.endpoint is not None else 0
            if limit and len(self.pipes) >= limit:
                self._refuse(stream, limit)
                continue
            scheme = self.transport.SCHEME
            peer = self.url if scheme == "inproc" else _peer_name(stream, scheme)
            pipe = self._pipe_class(
                loop=self.loop, stream=stream, transport=self.transport, socket=self.socket,
                owner=self, dialed=False, peer_addr=peer, endpoint=self.endpoint)
            self.pipes.add(pipe)
            pipe.cmd_open()

    def _refuse(self, stream: _socket.socket, limit: int) -> None:
        """Close a connection beyond ``max_pipes`` at once (before any byte is exchanged),
        counted, and logged once per endpoint at WARNING (a flood must not flood the log)."""
        stream.close()
        self.socket.stats.count(PIPES_REFUSED)
        if not self._refused:
            self._refused = True
            log.warning("listener %s refuses connections beyond max_pipes=%d (counted as "
                        "pipes_refused; logged once)", self.url, limit)

    def _recovered(self) -> None:
        """An accept worked (or found nothing pending): end the failure episode, if any."""
        if self._failures:
            log.info("accepting on %s again after %d failed accepts", self.url, self._failures)
            self._failures = 0
            self._backoff = ACCEPT_BACKOFF_MIN

    def note_accept_failure(self, err: OSError) -> None:
        self.socket.stats.count(ACCEPT_ERRORS)
        if not self._failures:
            log.warning("accept on %s failed: %s; pausing accepts (%g s, doubling up to %g s) "
                        "until one works, logged once per episode", self.url, err,
                        ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX)
        self._failures += 1

    def start_backoff_timer(self) -> None:
        delay = self._backoff
        self._backoff = min(delay * 2, ACCEPT_BACKOFF_MAX)
        self._timer = self.loop.call_later(delay, self._on_timeout)

    def cancel_backoff_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @entry_point
    def _on_timeout(self) -> None:
        self._timer = None
        self.evt_timeout()  # listening again: the next readiness retries the accept

    def forget_pipe(self, pipe: Pipe) -> None:
        self.pipes.discard(pipe)

    def close_listening_socket(self) -> None:
        log.debug("listener %s closed", self.url)
        self.transport.close_listener(self.handle)

    def close_pipes(self) -> None:
        for pipe in list(self.pipes):
            pipe.cmd_close()


def _peer_name(stream: _socket.socket, scheme: str) -> str:
    try:
        name = stream.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    if isinstance(name, bytes):  # an abstract socket's name: NUL, then the name
        from urllib.parse import quote  # loaded only by abstract:// (what loads at import)

        name = quote(name[1:], safe="")  # percent-encoded, as ep.url shows it
    return f"{scheme}://{name}" if name else f"{scheme}://(unnamed)"
