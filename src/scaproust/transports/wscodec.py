"""WebSocket (RFC 6455) for the SP WebSocket mapping, with no I/O (sans-IO).

Theory of operation
-------------------
A ``ws://`` connection is a TCP connection that starts as HTTP/1.1:

1. the client sends a ``GET`` with ``Upgrade: websocket``, a random 16-byte
   ``Sec-WebSocket-Key`` and the subprotocol ``<peer>.sp.nanomsg.org``, where ``<peer>``
   is the name of the protocol it wants on the other side (``rep`` for a REQ socket:
   :func:`subprotocol`); :func:`build_request`;
2. the server reads the request head (:func:`head_end`, :func:`parse_request`), refuses a
   path nobody listens on with 404 and a request that is not a WebSocket upgrade for its own
   protocol with 400 (:func:`check_request`, :func:`build_error_response`), or answers 101
   with the same subprotocol and ``Sec-WebSocket-Accept`` (:func:`build_response`);
3. the client checks that answer (:func:`check_response`): a 101 without the subprotocol
   is refused;
4. from then on each SP message (protocol header and body) is one binary WebSocket message:
   no SP header exchange, no length prefix. :func:`encode_message` cuts a message into
   frames of at most :data:`MAX_FRAGMENT` bytes; :class:`WsDecoder` reassembles fragmented
   messages, collects pings to answer and the peer's close frame, and refuses what the RFC
   and the mapping forbid, each with the close code to send: 1003 for a text frame, 1009
   for a message over the receive limit (known from the frame header, before any of its
   body is kept), 1002 for any other violation.

A client masks every frame it sends and a server none (RFC 6455, 5.1); each side refuses
the other's frames if they are not so. Nothing here touches a socket.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from scaproust.errors import ProtocolError
from scaproust.transports.framing import OversizeFrame

__all__ = [
    "MAX_FRAGMENT",
    "MAX_HEAD",
    "HttpRefusal",
    "Request",
    "Response",
    "WsDecoder",
    "WsError",
    "WsOversize",
    "accept_key",
    "build_error_response",
    "build_request",
    "build_response",
    "check_request",
    "check_response",
    "encode_close",
    "encode_control",
    "encode_message",
    "head_end",
    "mask",
    "new_key",
    "parse_request",
    "parse_response",
    "subprotocol",
]

#: The GUID every server hashes with the client's key (RFC 6455, 1.3).
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The SP mapping's subprotocol suffix: ``<protocol name>.sp.nanomsg.org``.
SUBPROTOCOL_SUFFIX: Final = ".sp.nanomsg.org"
#: The largest frame payload we send; longer messages are fragmented.
MAX_FRAGMENT: Final = 64 * 1024
#: The longest HTTP head (request or response, blank line included) we read.
MAX_HEAD: Final = 8 * 1024
#: Messages up to this size are sent as one buffer (frame header joined with the payload).
JOIN_MAX: Final = 16 * 1024
#: From this many bytes on, :func:`mask` works on the four byte lanes with
#: ``bytes.translate`` rather than through one big integer: both take 1.8 µs for 512
#: bytes, and the lanes 0.6 µs less for 768.
STRIDED_MIN: Final = 512

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_NO_STATUS: Final = 1005
CLOSE_TOO_BIG: Final = 1009

_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")


def subprotocol(protocol_name: str) -> str:
    """The subprotocol naming an SP protocol: ``rep`` -> ``rep.sp.nanomsg.org``."""
    return protocol_name + SUBPROTOCOL_SUFFIX


# --------------------------------------------------------------------------- errors


class WsError(ProtocolError):
    """The peer broke RFC 6455 or the SP mapping; ``code`` is the close code to send."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class WsOversize(OversizeFrame):
    """A message over the receive limit (close code 1009), known from a frame header."""

    code = CLOSE_TOO_BIG


class HttpRefusal(ProtocolError):
    """An upgrade refused: ``status`` is the HTTP status a server answers with (400,
    404, ...); a client raises it for an answer it cannot accept (``status`` 0)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- handshake


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server answers ``key`` with."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()  # noqa: S324 - RFC 6455
    return base64.b64encode(digest).decode("ascii")


@attrs.frozen
class Request:
    """A parsed HTTP request head: method, target, version, and the headers (names lower
    case; a header sent twice has its values joined with ``", "``)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


@attrs.frozen
class Response:
    """A parsed HTTP response head."""

    version: str
    status: int
    reason: str
    headers: dict[str, str]


def head_end(buffer: bytes | bytearray) -> int:
    """The length of the HTTP head at the start of ``buffer`` (through the blank line), or
    0 if it is not complete yet. ``HttpRefusal`` (431) once more than :data:`MAX_HEAD`
    bytes came without one."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end >= 0:
        return end + 4
    if len(buffer) >= MAX_HEAD:
        raise HttpRefusal(f"HTTP head longer than {MAX_HEAD} bytes", 431)
    return 0


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    try:
        text = head.decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - every byte decodes in latin-1
        raise HttpRefusal("HTTP head is not text") from None
    lines = text.split("\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HttpRefusal("empty HTTP head")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HttpRefusal(f"malformed HTTP header line {line[:80]!r}")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return lines[0], headers


def parse_request(head: bytes) -> Request:
    """The request in ``head`` (what :func:`head_end` measured); ``HttpRefusal`` (400) if
    it is not HTTP."""
    line, headers = _parse_head(head)
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpRefusal(f"malformed HTTP request line {line[:80]!r}")
    return Request(parts[0], parts[1], parts[2], headers)


def parse_response(head: bytes) -> Response:
    """The response in ``head``; ``HttpRefusal`` if it is not HTTP."""
    line, headers = _parse_head(head)
    parts = line.split(" ", 2)
    # isascii: isdigit() alone takes "¹²³", which int() refuses (a ValueError, not a refusal).
    if (len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isascii()
            or not parts[1].isdigit()):
        raise HttpRefusal(f"malformed HTTP status line {line[:80]!r}", 0)
    return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in value.split(",")] if value else []


def build_request(host: str, path: str, key: str, protocol: str) -> bytes:
    """The client's upgrade request for ``path`` on ``host`` (``host[:port]``, as the
    ``Host`` header wants it), offering the subprotocol ``protocol``."""
    return (f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Upgrade: websocket\r\n"
            f"Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n"
            f"\r\n").encode("ascii")


def check_request(request: Request, protocol: str) -> str:
    """Check an upgrade request for our subprotocol ``protocol``; return its key.
    ``HttpRefusal`` (400) naming what is wrong."""
    headers = request.headers
    if request.method != "GET":
        raise HttpRefusal(f"method {request.method!r}, not GET")
    if request.version != "HTTP/1.1":
        raise HttpRefusal(f"{request.version}, not HTTP/1.1")
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise HttpRefusal("not a WebSocket upgrade (no 'Upgrade: websocket')")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise HttpRefusal("not a WebSocket upgrade (no 'Connection: Upgrade')")
    if headers.get("sec-websocket-version") != "13":
        raise HttpRefusal(f"WebSocket version {headers.get('sec-websocket-version')!r}, not 13")
    key = headers.get("sec-websocket-key", "")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HttpRefusal(f"bad Sec-WebSocket-Key {key!r}")
    offered = _tokens(headers.get("sec-websocket-protocol"))
    if protocol.lower() not in offered:
        raise HttpRefusal(f"subprotocol {protocol!r} not offered "
                          f"(offered: {headers.get('sec-websocket-protocol', 'none')!r})")
    return key


def build_response(key: str, protocol: str) -> bytes:
    """The server's 101 answer to a request with ``key``, accepting ``protocol``."""
    return (f"HTTP/1.1 101 Switching Protocols\r\n"
            f"Upgrade: websocket\r\n"
            f"Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n"
            f"\r\n").encode("ascii")


_REASONS = {400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large"}


def build_error_response(status: int, detail: str = "") -> bytes:
    """A complete refusal (the connection is closed after it)."""
    reason = _REASONS.get(status, "Error")
    body = (detail or reason).encode("utf-8", "replace") + b"\n"
    return (f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: close\r\n"
            f"\r\n").encode("ascii") + body


def check_response(response: Response, key: str, protocol: str) -> None:
    """Check the server's answer to our request with ``key`` offering ``protocol``;
    ``HttpRefusal`` (status 0) naming what is wrong."""
    headers = response.headers
    if response.status != 101:
        raise HttpRefusal(f"server answered {response.status} {response.reason}".rstrip(), 0)
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise HttpRefusal("101 without 'Upgrade: websocket'", 0)
    if "upgrade" not in _tokens(headers.get("connection")):
        raise HttpRefusal("101 without 'Connection: Upgrade'", 0)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HttpRefusal(f"wrong Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}",
                          0)
    chosen = headers.get("sec-websocket-protocol")
    if chosen is None:
        raise HttpRefusal(f"101 without a subprotocol (we offered {protocol!r})", 0)
    if chosen.strip().lower() != protocol.lower():
        raise HttpRefusal(f"server chose subprotocol {chosen!r}, we offered {protocol!r}", 0)


# --------------------------------------------------------------------------- frames


def mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes | bytearray:
    """``data`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same).

    Pure Python has no vector XOR. Small payloads go through one big integer (from bytes,
    XOR, back to bytes: three passes, each a C loop, but slow ones: 3.5 ms a MiB here).
    From :data:`STRIDED_MIN` bytes on, every fourth byte is XORed with the same key byte,
    so each of the four lanes is a table lookup, ``bytes.translate``: a copy, then four
    strided reads, translations and writes, twice as fast from 4 KiB on and three times
    for 1 MiB (1.1 ms), measured alone."""
    n = len(data)
    if not n:
        return b""
    if n < STRIDED_MIN:
        stream = (key * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "little")
                ^ int.from_bytes(stream, "little")).to_bytes(n, "little")
    out = bytearray(data)
    for lane, byte in enumerate(key):
        if byte:
            out[lane::4] = out[lane::4].translate(_xor_table(byte))
    return out


def _xor_table(byte: int) -> bytes:
    """The ``bytes.translate`` table of XOR with ``byte``: made on first use (the 256 of them
    at import would cost milliseconds), then kept (64 KiB at most)."""
    table = _XOR_TABLES.get(byte)
    if table is None:
        table = _XOR_TABLES[byte] = bytes(b ^ byte for b in range(256))
    return table


_XOR_TABLES: dict[int, bytes] = {}


def _header(opcode: int, length: int, fin: bool, key: bytes | None) -> bytes:
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if key is not None else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 0x10000:
        head = bytes((first, bit | 126)) + _U16.pack(length)
    else:
        head = bytes((first, bit | 127)) + _U64.pack(length)
    return head + key if key is not None else head


def _rotate(key: bytes, offset: int) -> bytes:
    offset %= 4
    return key[offset:] + key[:offset] if offset else key


def encode_message(parts: Sequence[bytes | memoryview], *, masked: bool,
                   fragment: int = MAX_FRAGMENT,
                   head: Callable[[bytes], bytes] = bytes) -> list[bytes | bytearray | memoryview]:
    """One binary message made of ``parts`` (the SP protocol header, then the body) as
    buffers to send in order: frames of at most ``fragment`` payload bytes each.

    A server's frames (``masked`` False) reference the parts' bytes, never copying them,
    except that a message of at most :data:`JOIN_MAX` bytes is joined with its frame header
    into one buffer. A client masks with a fresh random key per frame, which writes each
    payload byte once into a new buffer (the one copy). The frame headers of a message sent
    in several buffers are made by ``head`` (a pipe tells them from payload by their type).
    """
    total = sum(len(p) for p in parts)
    if total <= min(JOIN_MAX, fragment):
        key = os.urandom(4) if masked else None
        payload = b"".join(parts)
        return [_header(OP_BINARY, total, True, key) + (mask(payload, key) if key else payload)]
    out: list[bytes | bytearray | memoryview] = []
    views = [memoryview(p) for p in parts if len(p)]
    index = offset = 0
    sent = 0
    opcode = OP_BINARY
    while True:
        size = min(fragment, total - sent)
        sent += size
        key = os.urandom(4) if masked else None
        out.append(head(_header(opcode, size, sent == total, key)))
        at = 0  # payload bytes of this frame so far (for the key's rotation)
        while size:
            view = views[index]
            take = min(size, len(view) - offset)
            piece = view[offset:offset + take]
            out.append(mask(piece, _rotate(key, at)) if key is not None else piece)
            at += take
            size -= take
            offset += take
            if offset == len(view):
                index += 1
                offset = 0
        opcode = OP_CONTINUATION
        if sent == total:
            return out


def encode_control(opcode: int, payload: bytes = b"", *, masked: bool) -> bytes:
    """A ping, pong or close frame (payload at most 125 bytes)."""
    if len(payload) > 125:
        raise ValueError(f"a control frame carries at most 125 bytes, not {len(payload)}")
    key = os.urandom(4) if masked else None
    return _header(opcode, len(payload), True, key) + (mask(payload, key) if key else payload)


def encode_close(code: int, reason: str = "", *, masked: bool) -> bytes:
    """A close frame with ``code`` and a reason (cut to fit 125 bytes)."""
    text = reason.encode("utf-8")[:123]
    while True:  # never cut a character in two
        try:
            text.decode("utf-8")
            break
        except UnicodeDecodeError:
            text = text[:-1]
    return encode_control(OP_CLOSE, _U16.pack(code) + text, masked=masked)


class WsDecoder:
    """Incremental decoder of the frames a peer sends once the upgrade is done.

    ``feed`` takes chunks of any size and returns every binary message they complete, in
    order. Control frames found on the way are kept for the pipe: ``pings`` (payloads to
    answer with a pong, oldest first; the pipe empties the list) and ``close`` (the peer's
    close frame as ``(code, reason)``: 1005 when it carried no code; nothing after it is
    read). ``masked``: True on a server (every frame must be masked), False on a client
    (none may be). ``max_size`` bounds a message (0 = unlimited).

    A violation raises :class:`WsError` (or :class:`WsOversize`) with the close code to
    send, and ``frames`` set to the messages completed before it in the same chunk; the
    decoder is then unusable.

    Copies: a message's payload is kept as views of the chunks it came in, and joined once
    when it is complete (a message that is a whole slice of one chunk is that one slice).
    A masked frame's pieces are unmasked when the frame is complete, each into a new
    buffer, and those are joined once for a message of several pieces: a server writes
    each byte of a message that came in one piece once, of any other twice.
    """

    __slots__ = ("_failed", "_frame", "_head", "_masked", "_max_size", "_message", "_size",
                 "close", "pings")

    def __init__(self, *, masked: bool, max_size: int) -> None:
        self._masked = masked
        self._max_size = max_size
        self._head = bytearray()  # an incomplete frame header
        # The frame being read, or None between frames.
        self._frame: _Frame | None = None
        # The message being reassembled: its pieces (None: no message in progress), and size.
        self._message: list[bytes | bytearray | memoryview] | None = None
        self._size = 0
        self._failed = False
        self.pings: list[bytes] = []
        self.close: tuple[int, str] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received and kept for a message or frame that is not complete yet."""
        frame = self._frame
        in_frame = sum(len(p) for p in frame.pieces) if frame is not None else 0
        return len(self._head) + self._size + in_frame

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume one chunk; return the messages it completes, in order."""
        if self._failed:
            raise WsError("WebSocket decoder already failed: the pipe must be closed")
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse its buffer
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except ProtocolError as err:
            err.frames = out
            self._failed = True
            raise
        return out

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end and self.close is None:
            frame = self._frame
            if frame is None:
                pos = self._read_header(data, pos)
                continue
            take = min(frame.remaining, end - pos)
            if take:
                frame.pieces.append(view[pos:pos + take])
                pos += take
                frame.remaining -= take
            if not frame.remaining:
                self._frame = None
                self._end_frame(frame, out)
        frame = self._frame
        if frame is not None and not frame.remaining and self.close is None:
            self._frame = None  # an empty frame at the end of the chunk
            self._end_frame(frame, out)

    def _read_header(self, data: bytes, pos: int) -> int:
        """Parse a frame header starting at ``data[pos]`` (after the bytes of one kept in
        ``_head``); return the offset after what was used."""
        kept = len(self._head)
        if kept:
            buf, at = bytes(self._head) + data[pos:pos + 14], 0
        else:
            buf, at = data, pos
        need = _header_size(buf, at)
        if not need or len(buf) - at < need:  # incomplete: keep what there is
            self._head = bytearray(buf[at:at + 14]) if kept else bytearray(data[pos:])
            return len(data)
        self._head = bytearray()
        self._start_frame(buf, at)
        return pos + need - kept

    def _start_frame(self, buf: bytes, at: int) -> None:
        b0, b1 = buf[at], buf[at + 1]
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise WsError(f"reserved bits set in a frame header (0x{b0:02x}): no extension "
                          f"was agreed")
        is_masked = bool(b1 & 0x80)
        if is_masked != self._masked:
            raise WsError("an unmasked frame from a client" if self._masked
                          else "a masked frame from a server")
        length = b1 & 0x7F
        at += 2
        if length == 126:
            (length,) = _U16.unpack_from(buf, at)
            at += 2
        elif length == 127:
            (length,) = _U64.unpack_from(buf, at)
            at += 8
            if length >> 63:
                raise WsError("frame length with its most significant bit set")
        key = bytes(buf[at:at + 4]) if is_masked else None
        if opcode >= 0x8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise WsError(f"unknown control opcode 0x{opcode:x}")
            if not fin or length > 125:
                raise WsError("a fragmented or longer than 125 bytes control frame")
        elif opcode == OP_TEXT:
            raise WsError("a text frame: the SP mapping carries binary messages only",
                          CLOSE_UNSUPPORTED)
        elif opcode == OP_BINARY:
            if self._message is not None:
                raise WsError("a new message before the last fragment of the previous one")
            self._message, self._size = [], 0
        elif opcode == OP_CONTINUATION:
            if self._message is None:
                raise WsError("a continuation frame with no message to continue")
        else:
            raise WsError(f"unknown data opcode 0x{opcode:x}")
        if opcode < 0x8:
            size = self._size + length
            if self._max_size and size > self._max_size:
                raise WsOversize(size, self._max_size)
        self._frame = _Frame(opcode, fin, key, length)

    def _end_frame(self, frame: _Frame, out: list[bytes]) -> None:
        opcode, key = frame.opcode, frame.key
        pieces: Sequence[bytes | bytearray | memoryview] = frame.pieces
        if key is not None:  # unmasked piece by piece: each byte written once
            at = 0
            plain: list[bytes | bytearray | memoryview] = []
            for piece in pieces:
                plain.append(mask(piece, _rotate(key, at)))
                at += len(piece)
            pieces = plain
        if opcode >= 0x8:
            payload = b"".join(pieces)
            if opcode == OP_PING:
                self.pings.append(payload)
            elif opcode == OP_CLOSE:
                self.close = _close_payload(payload)
            return
        message = self._message
        assert message is not None
        message.extend(pieces)
        self._size += sum(len(p) for p in pieces)
        if frame.fin:
            self._message, self._size = None, 0
            if not message:
                out.append(b"")
            elif len(message) == 1:
                only = message[0]
                out.append(only if type(only) is bytes else bytes(only))
            else:
                out.append(b"".join(message))


class _Frame:
    """The frame being read: its header's facts, the payload bytes still to come, and the
    views of those that came."""

    __slots__ = ("fin", "key", "opcode", "pieces", "remaining")

    def __init__(self, opcode: int, fin: bool, key: bytes | None, remaining: int) -> None:
        self.opcode = opcode
        self.fin = fin
        self.key = key
        self.remaining = remaining
        self.pieces: list[bytes | memoryview] = []


def _header_size(buf: bytes, at: int) -> int:
    """The size of the frame header at ``buf[at]``, or 0 if its first two bytes are not
    there yet."""
    if len(buf) - at < 2:
        return 0
    b1 = buf[at + 1]
    length = b1 & 0x7F
    return 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)


def _close_payload(payload: bytes) -> tuple[int, str]:
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise WsError("a close frame with a 1-byte payload")
    (code,) = _U16.unpack_from(payload)
    return code, payload[2:].decode("utf-8", "replace")
