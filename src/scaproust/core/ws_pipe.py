"""A WebSocket pipe (``ws://``), driven by the generated ``ws_pipe`` machine.

The machine is the pipe's (protocols.yaml, ``ws_pipe`` extends ``pipe``) with the HTTP
upgrade in place of the SP header exchange and a close handshake before death:

- ``handshaking``, RFC 6455's opening handshake: a dialed pipe sends the upgrade request (offering
  ``<peer>.sp.nanomsg.org``) and reads the answer until its head is complete
  (``_read_upgrade``); an accepted pipe checks the request its port read
  (transports/ws.py routed it here by its path) and answers 101, or goes to
  ``ws_refusing``, which sends 400 and dies once it left. Bounded by ``handshake_timeout``.
- ``active``: the plain pipe's, with the frames of transports/wscodec.py: each SP
  message (protocol header and body) is one binary WebSocket message, cut into frames of
  at most 64 KiB, masked by a client; pings are answered; the peer's close frame is
  answered and ends the pipe; a violation sends the close code it calls for (1002, 1003,
  1009) and ends it.
- ``ws_closing``: our close frame (1000) is sent (after any queued output, ``closing``) and the
  peer's awaited for at most :data:`CLOSE_TIMEOUT`, then the connection is closed.

``WSSPipe`` (``wss://``, machine ``wss_pipe``) is the same over transports/tls.py's
``TLSStream``, with a dialed pipe's TLS handshake first (``tls_handshaking``, TLSPipe's).

The caller-thread fast path works unchanged: a caller that lends this pipe polls the TCP
socket and calls its ``_read_frames``, which reads and decodes here (a wss pipe's, TLSPipe's,
then looks behind the plaintext for the peer's close or a TLS error; its ``_tls`` is the
stream its port made for an accepted pipe, start_tls's for a dialed one).

Extra fields: ``_ws`` (the frame decoder, from ``active`` on), ``_key`` (a dialed pipe's
``Sec-WebSocket-Key``), ``_upgrade`` (the answer's bytes so far). Frames that came in the
same read as the HTTP head are decoded as soon as the pipe is ``active``, before any other
read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar, cast

from scaproust._generated.ws_pipe import WsPipeFSM
from scaproust._generated.wss_pipe import WssPipeFSM
from scaproust.core.guard import entry_point
from scaproust.core.pipe import Pipe, Publication, _Head
from scaproust.core.tls_pipe import TLSPipe
from scaproust.errors import ProtocolError
from scaproust.transports.tls import subject_of
from scaproust.transports.ws import WsSocket, WssStream, http_host
from scaproust.transports.wscodec import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    OP_PONG,
    HttpRefusal,
    WsDecoder,
    build_error_response,
    build_request,
    build_response,
    check_request,
    check_response,
    encode_close,
    encode_control,
    encode_message,
    head_end,
    new_key,
    parse_response,
    subprotocol,
)

if TYPE_CHECKING:
    from scaproust.core.dialer import Dialer

log = logging.getLogger("scaproust.pipe")

#: Seconds ``ws_closing`` waits for the peer's close frame once ours is sent.
CLOSE_TIMEOUT = 1.0


class WSPipe(WsPipeFSM, Pipe):
    """One WebSocket connection; to its socket's protocol, a pipe like any other."""

    _ws: WsDecoder | None = None
    _key = ""
    _upgrade = b""
    _refusal = b""
    _close_code = CLOSE_NORMAL
    _close_reason = ""

    # ---------------------------------------------------------------- handshaking

    def send_handshake(self) -> None:
        # The opening handshake replaces the SP header exchange.
        if self._dialed:
            address = cast("Dialer", self.owner).address
            assert address.path is not None
            self._key = new_key()
            self._queue(_Head(build_request(http_host(address), address.path, self._key,
                                            subprotocol(self.socket.info.peer_name))))
        else:
            # The port read the request and routed it here (transports/ws.py); the answer
            # is decided from the loop, once this transition is over.
            self.loop.call_soon(self._answer_request)

    def watch_handshake(self) -> None:
        if self._dialed:
            self.loop.add_reader(self.stream, self._read_upgrade)
            self._watching = True

    @entry_point
    def _answer_request(self) -> None:
        if self.state != "handshaking":
            return
        stream = cast("WsSocket | WssStream", self.stream)
        request = stream.request
        assert request is not None
        ours = subprotocol(self.socket.info.name)
        try:
            key = check_request(request, ours)
        except HttpRefusal as err:
            self._refusal = build_error_response(err.status, str(err))
            self.evt_upgrade_refused(
                HttpRefusal(f"WebSocket upgrade refused with {err.status}: {err}", err.status))
            return
        leftover, stream.leftover = stream.leftover, b""
        self._queue(_Head(build_response(key, ours)))
        self._upgraded(leftover)
        self._after_read()  # what came with the request, its port's read

    @entry_point
    def _read_upgrade(self) -> None:
        data = self._recv()
        if data is not None:
            self._take_upgrade(data)
            self._after_read()

    def _take_upgrade(self, data: bytes) -> None:
        self._upgrade += data
        try:
            size = head_end(self._upgrade)
            if not size:
                return
            response = parse_response(self._upgrade[:size])
            check_response(response, self._key, subprotocol(self.socket.info.peer_name))
        except HttpRefusal as err:
            self.evt_handshake_bad(HttpRefusal(f"WebSocket upgrade refused: {err}", err.status))
            return
        leftover, self._upgrade = self._upgrade[size:], b""
        self._upgraded(leftover)

    def _upgraded(self, leftover: bytes) -> None:
        """The upgrade is done: the pipe is active, and the frames that came in the same
        read as the HTTP head are decoded at once. The next read of the stream may be a
        caller's that borrowed the pipe as soon as it was active: a frame deferred to the
        loop's next round came after those."""
        self.evt_handshake_ok()
        if leftover and self.state == "active":
            self._feed(leftover)

    def _after_read(self) -> None:
        """Over TCP a read says all it met: nothing to look at behind it (see WSSPipe's)."""

    def log_handshake_timeout(self) -> None:
        log.warning("pipe %d %s %s closed: WebSocket upgrade not complete within "
                    "handshake_timeout=%ss", self.id, "to" if self._dialed else "from",
                    self.peer_addr, self._options.handshake_timeout)

    # ---------------------------------------------------------------- ws_refusing

    def send_refusal(self) -> None:
        self._queue(_Head(self._refusal))

    # ---------------------------------------------------------------- active

    def watch_frames(self) -> None:
        self._ws = WsDecoder(masked=not self._dialed, max_size=self.endpoint.recv_max_size)
        self.loop.add_reader(self.stream, self._read_frames)
        self._watching = True

    @entry_point
    def _read_frames(self) -> None:
        data = self._recv()
        if data is not None:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        decoder = self._ws
        assert decoder is not None
        try:
            msgs = decoder.feed(data)
        except ProtocolError as err:
            good = getattr(err, "frames", None)
            if good:
                self.evt_msgs(good)
            if self.state in ("active", "closing", "ws_closing", "ws_dropping"):
                self._close_code = getattr(err, "code", CLOSE_PROTOCOL_ERROR)
                self._close_reason = str(err)
                self.evt_bad_frame(err)
            return
        if msgs:
            self.evt_msgs(msgs)
        if decoder.pings:
            pings, decoder.pings = decoder.pings, []
            if self.state in ("active", "closing"):
                for payload in pings:
                    self._queue(_Head(encode_control(OP_PONG, payload, masked=self._dialed)))
        if decoder.close is not None and self.state in ("active", "closing", "ws_closing",
                                                         "ws_dropping"):
            self.evt_ws_close(decoder.close[0])

    def enqueue(self, body: bytes, header: bytes = b"") -> None:
        # Every buffer that is not a frame header counts as the end of a message when it
        # leaves (core/pipe.py), so a fragmented message counts once per fragment in
        # ``_out_msgs`` (the count of unsent messages a linger expiry reports).
        for buf in encode_message((header, body) if header else (body,), masked=self._dialed,
                                  head=_Head):
            if type(buf) is not _Head:
                self._out_msgs += 1
            self._queue(buf)

    def enqueue_published(self, body: bytes) -> None:
        # WebSocket frames, masked per message by a dialer: built for each pipe.
        self.enqueue(body)

    def enqueue_many(self, bodies: list[bytes]) -> None:
        self._enqueue_each(bodies)  # each message its own WebSocket frames

    def enqueue_published_many(self, batch: Publication) -> None:
        self._publish_each(batch)  # masked per message by a dialer: built for each pipe

    def log_ws_close(self, code: int) -> None:
        log.debug("pipe %d: %s closed the WebSocket (code %d)", self.id, self.peer_addr, code)

    # ---------------------------------------------------------------- ws_closing

    def send_close_frame(self) -> None:
        # ws_closing and ws_dropping: 1000, or the code of the peer's violation (_feed).
        self._queue(_Head(encode_close(self._close_code, self._close_reason,
                                       masked=self._dialed)))

    def start_close_timer(self) -> None:
        self._timer = self.loop.call_later(CLOSE_TIMEOUT, self._on_timeout)


class WSSPipe(WssPipeFSM, WSPipe, TLSPipe):
    """One wss:// connection: a WebSocket pipe over a ``TLSStream``. A dialed pipe runs
    its TLS handshake in ``tls_handshaking`` (TLSPipe's), an accepted one was handed the
    stream its port made (transports/ws.py), with its handshake done."""

    #: The states whose rows take the peer's close and a read error (``_after_read``).
    READING_STATES: ClassVar[frozenset[str]] = frozenset(
        {"handshaking", "active", "closing", "ws_closing", "ws_dropping"})
    # TLSPipe's, not WSPipe's (first in the bases): the read then looks behind the
    # plaintext for a TLS error or the peer's close, which no readiness may announce.
    _read_frames = TLSPipe._read_frames
    _after_read = TLSPipe._after_read

    def enqueue(self, body: bytes, header: bytes = b"") -> None:
        # WSPipe's (named here: the generated base declares it too, without the default).
        WSPipe.enqueue(self, body, header)

    def send_handshake(self) -> None:
        if not self._dialed:
            # The TLS stream its port made (a dialed pipe's is start_tls's).
            self._tls = stream = cast("WssStream", self.stream)
            self.peer_subject = subject_of(stream.ssl.getpeercert())
        super().send_handshake()
