"""A pipe inside TLS (``tls+tcp://``), driven by the generated ``tls_pipe`` machine.

The machine is the pipe's (protocols.yaml, ``tls_pipe`` extends ``pipe``) with two more
states: ``tls_handshaking``, between the TCP connection (or the accept) and the SP header
exchange, and ``tls_closing``, between the last queued frame and death. Everything else,
the header exchange, the frames, the caller-thread reads and writes, is the plain pipe's
code, run over a :class:`~scaproust.transports.tls.TLSStream` instead of the socket: the
stream's ``recv``, ``send`` and ``sendmsg`` carry plaintext and keep the socket's
contract.

``tls_handshaking``: ``start_tls`` wraps the connected socket and takes the first step
(the client's hello) from the loop; each readiness of the socket advances the handshake
(``_tls_step``) until it completes (``evt_tls_done``), fails (``evt_tls_failed``, with the
reason OpenSSL gave, logged and counted in ``tls_handshake_failures``), or the handshake
timer fires. A dialer then redials on its schedule, as after any failed connection.

``tls_closing``: close_notify is sent without waiting for the peer's, and the pipe dies
on the next loop turn (``evt_flushed``).

Extra fields: ``_tls`` (the TLS stream, from ``tls_handshaking`` on), ``_raw`` (the TCP
socket under it), ``_tls_writer`` (the handshake waits for the socket to take its bytes),
``peer_subject`` (the peer's certificate subject, once verified; empty otherwise).
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, ClassVar, cast

from scaproust._generated.tls_pipe import TlsPipeFSM
from scaproust.core.guard import entry_point
from scaproust.core.pipe import Pipe
from scaproust.core.stats import TLS_HANDSHAKE_FAILURES
from scaproust.transports.tls import TLSStream, subject_of

if TYPE_CHECKING:
    import socket

    from scaproust.core.interfaces import Stream

log = logging.getLogger("scaproust.pipe")


class TLSPipe(TlsPipeFSM, Pipe):
    """One TLS connection; to its socket's protocol, a pipe like any other."""

    _tls: TLSStream | None = None
    _raw: socket.socket | None = None
    _tls_writer = False
    _tuned = False
    #: The peer's certificate subject (``CN=...,O=...``), once the handshake verified it.
    peer_subject = ""
    # The pipe's own (with its default), not the generated declaration: the same function,
    # no extra call on the send path.
    enqueue = Pipe.enqueue

    # ---------------------------------------------------------------- tls_handshaking

    def tune_stream(self) -> None:
        # on_enter of tls_handshaking and of handshaking: the TCP socket's options, once.
        if not self._tuned:
            self._tuned = True
            super().tune_stream()

    def start_tls(self) -> None:
        setup = self.owner.tls_setup
        assert setup is not None  # made at bind()/connect() (core/socket.py)
        self._raw = cast("socket.socket", self.stream)
        self._tls = TLSStream(self._raw, setup)
        # From here on the pipe reads and writes plaintext through the TLS stream.
        self.stream = cast("Stream", self._tls)
        self.loop.add_reader(self.stream, self._tls_step)
        self._watching = True
        self.loop.call_soon(self._tls_step)  # the client speaks first

    @entry_point
    def _tls_step(self) -> None:
        tls = self._tls
        if self.state != "tls_handshaking" or tls is None:
            return
        try:
            done = tls.handshake_step()
        except ssl.SSLError as err:
            self.evt_tls_failed(err)
            return
        except EOFError:
            self.evt_peer_closed()
            return
        except OSError as err:
            self.evt_io_error(err)
            return
        if done:
            self.evt_tls_done()
        elif tls.backlog and not self._tls_writer:
            self._tls_writer = True
            self.loop.add_writer(self.stream, self._tls_step)
        elif not tls.backlog and self._tls_writer:
            self._tls_writer = False
            self.loop.remove_writer(self.stream)

    def stop_tls_io(self) -> None:
        # on_exit of tls_handshaking: the header exchange (or release) takes the reader.
        if self._tls_writer:
            self._tls_writer = False
            self.loop.remove_writer(self.stream)
        if self._watching:
            self._watching = False
            self.loop.remove_reader(self.stream)

    def note_peer(self) -> None:
        tls = self._tls
        assert tls is not None
        self.peer_subject = subject_of(tls.ssl.getpeercert())
        log.debug("pipe %d to %s: %s %s, peer %r", self.id, self.peer_addr, tls.ssl.version(),
                  (tls.ssl.cipher() or ("?",))[0], self.peer_subject or "(no certificate)")

    def log_tls_failure(self, err: ssl.SSLError) -> None:
        self.socket.stats.count(TLS_HANDSHAKE_FAILURES)
        reason = getattr(err, "verify_message", None) or err.reason or str(err)
        log.warning("pipe %d %s %s: TLS handshake failed: %s (%s)", self.id,
                    "to" if self._dialed else "from", self.peer_addr, reason, err)

    def log_tls_failure_eof(self) -> None:
        self.socket.stats.count(TLS_HANDSHAKE_FAILURES)
        log.warning("pipe %d %s %s: TLS handshake failed: the peer closed the connection "
                    "(it may have refused our certificate, or sent none we could check)",
                    self.id, "to" if self._dialed else "from", self.peer_addr)

    def log_tls_timeout(self) -> None:
        self.socket.stats.count(TLS_HANDSHAKE_FAILURES)
        log.warning("pipe %d %s %s: TLS handshake failed: not complete within "
                    "handshake_timeout=%ss", self.id, "to" if self._dialed else "from",
                    self.peer_addr, self._options.handshake_timeout)

    def log_io_error(self, err: OSError) -> None:
        if isinstance(err, ssl.SSLError) and not self._attached:
            # TLS 1.3: a server refuses the client's certificate after the client's side of
            # the handshake is over, so the client learns it from its first read (during
            # the SP header exchange): a failed handshake all the same.
            self.log_tls_failure(err)
        elif isinstance(err, ssl.SSLError):
            log.warning("pipe %d to %s closed: TLS error: %s", self.id, self.peer_addr, err)
        else:
            super().log_io_error(err)

    # ---------------------------------------------------------------- handshaking

    def watch_handshake(self) -> None:
        super().watch_handshake()
        # The peer's header may have come with its last handshake message: it is in the
        # TLS stream already, where no readiness of the socket announces it.
        self.loop.call_soon(self._read_buffered_header)

    @entry_point
    def _read_buffered_header(self) -> None:
        if self.state == "handshaking" and not self._lent:
            self._read_handshake()

    @entry_point
    def _read_handshake(self) -> None:
        super()._read_handshake()
        self._after_read()

    #: The states whose rows take the peer's close and a read error (``_after_read``).
    READING_STATES: ClassVar[frozenset[str]] = frozenset(
        {"handshaking", "active", "closing", "tls_closing"})

    def _after_read(self) -> None:
        """What the read that returned the peer's last plaintext met behind it, which no
        readiness of the socket may ever announce: a TLS error (the stream keeps it for the
        next ``recv``, which raises it: the pipe fails), or the peer's close (a peer that
        sends close_notify and waits for ours sends nothing more)."""
        tls = self._tls
        if tls is None or self.stream is None or self.state not in self.READING_STATES:
            return  # the read ended the pipe already, or it is past reading
        if tls.failed:
            self._recv()
        elif tls.peer_closed:
            self.evt_peer_closed()

    # ---------------------------------------------------------------- active

    @entry_point
    def _read_frames(self) -> None:
        # TLSStream.recv returns all the plaintext the socket's bytes make, so the large-body
        # read straight into the message's buffer (Pipe._read_frames) does not apply.
        data = self._recv()
        if data is not None:
            self._feed(data)
            self._after_read()

    # ---------------------------------------------------------------- tls_closing

    def send_close_notify(self) -> None:
        if self._tls is not None:
            self._tls.send_close_notify()
        self.loop.call_soon(self._closed_tls)

    @entry_point
    def _closed_tls(self) -> None:
        if self.state == "tls_closing":
            self.evt_flushed()
