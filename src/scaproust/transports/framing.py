"""SP connection header and stream framing, with no I/O (sans-IO).

Theory of operation
-------------------
A TCP or IPC pipe is a byte stream carrying, in order:

1. one 8-byte connection header from each side, sent at once after connecting without
   waiting for the peer's (``encode_handshake`` builds ours, ``check_handshake`` judges the
   peer's);
2. then frames: ``size u64 BE | payload`` over TCP, ``0x01 | size u64 BE | payload`` over
   IPC. ``size`` counts the whole payload (protocol header words plus body).

Everything in this module works on ``bytes`` and never touches a socket, so the pipe
machine and the tests drive it in memory. The reader feeds whatever ``recv`` returned to a
:class:`FrameDecoder`, which returns every complete payload; the writer sends
the prefix (``frame_prefix(len(payload), ipc)``, or the C-level ``prefixer(ipc)`` a pipe
keeps) followed by the payload's pieces as separate buffers of one ``sendmsg``, so a large
body is never copied into a bigger buffer.

The constants below are on-wire facts shared with nanomsg, nng and mangos: they are frozen,
and changing one breaks interoperability (see ``docs/WIRE.md``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Final

from scaproust.errors import ProtocolError

__all__ = [
    "HANDSHAKE_SIZE",
    "IPC_MSG_TYPE",
    "IPC_PREFIX_SIZE",
    "SP_MAGIC",
    "TCP_PREFIX_SIZE",
    "FrameDecoder",
    "OversizeFrame",
    "check_handshake",
    "encode_handshake",
    "frame_prefix",
    "prefixer",
]

# --- Frozen on-wire constants (WIRE.md, "Connection header" and "Framing") ---------------

#: Bytes 0-3 of the connection header: ``00 'S' 'P' 00``. Every peer closes on a mismatch.
SP_MAGIC: Final = b"\x00SP\x00"
#: The connection header is 8 bytes: magic, protocol id (u16 BE), two reserved zero bytes.
HANDSHAKE_SIZE: Final = 8
#: TCP frame prefix: the payload size as a u64 BE.
TCP_PREFIX_SIZE: Final = 8
#: IPC frame prefix: a message-type byte, then the payload size as a u64 BE.
IPC_PREFIX_SIZE: Final = 9
#: The only IPC message type. nng closes on any other; nanomsg *aborts its process*, so we
#: always write 0x01 and close the pipe on reading anything else (WIRE.md, "Framing").
IPC_MSG_TYPE: Final = 0x01

_MAX_FRAME_SIZE: Final = (1 << 64) - 1  # the size field is a u64
#: Incomplete bodies up to this size get their whole buffer at once (FrameDecoder). A peer
#: can make a pipe hold this much by announcing a frame it never finishes, as it could by
#: sending it; ``recv_max_size`` (default 1 MiB) bounds it first.
PREALLOC_MAX: Final = 16 * 1024 * 1024
#: The largest body buffer a decoder keeps for the next body (see FrameDecoder).
SCRATCH_KEEP: Final = 1024 * 1024
#: A chunk is checked for a run of frames of one size (FrameDecoder._take_run) when it
#: has at least RUN_CHUNK_MIN bytes, and a run is taken when it has at least RUN_MIN
#: frames: below either, the check costs about what it saves. Chunks are large when the
#: reader is behind, which is when the run saves time; a lone message skips the check.
RUN_MIN: Final = 16
RUN_CHUNK_MIN: Final = 4096
_HANDSHAKE = struct.Struct(">4sHH")  # magic | protocol id | reserved
_TCP_PREFIX = struct.Struct(">Q")
_IPC_PREFIX = struct.Struct(">BQ")


class OversizeFrame(ProtocolError):
    """A frame's size field exceeds the receive size limit.

    Raised as soon as the size field is read, before any of the body, as every peer does
    (WIRE.md, "Receive size limit"): the pipe must be closed and the event reported loudly,
    naming ``size`` and ``limit`` so the user can find the option to raise.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"incoming frame of {size} bytes exceeds the receive size limit of {limit} bytes"
            " (raise the socket's recv max size option, or set it to 0 for no limit)"
        )
        self.size = size
        self.limit = limit


# --- Connection header ---------------------------------------------------------------------


def encode_handshake(proto_id: int) -> bytes:
    """Return our 8-byte connection header: ``00 53 50 00 | proto_id u16 BE | 00 00``.

    ``proto_id`` is the sending socket's own protocol id (e.g. 0x30 for REQ).
    Raises ``ValueError`` if it does not fit in 16 bits.
    """
    if not 0 <= proto_id <= 0xFFFF:
        raise ValueError(f"protocol id {proto_id!r} does not fit in 16 bits")
    return _HANDSHAKE.pack(SP_MAGIC, proto_id, 0)


def check_handshake(data: bytes, expected_peer_id: int) -> None:
    """Judge the peer's 8-byte connection header; return if it is acceptable.

    Raises :class:`ProtocolError`, with a reason, when the magic is not ``00 53 50 00``,
    when the peer's protocol id is not ``expected_peer_id`` (both named in hex), or when the
    reserved bytes 6-7 are not zero. nanomsg ignores the reserved bytes but nng and mangos
    close on them, and so do we (WIRE.md, "Connection header").

    ``data`` must be exactly :data:`HANDSHAKE_SIZE` bytes (collecting them, possibly one byte
    at a time, is the caller's job); any other length is a caller bug: ``ValueError``.
    """
    if len(data) != HANDSHAKE_SIZE:
        raise ValueError(f"a connection header is {HANDSHAKE_SIZE} bytes, got {len(data)}")
    magic, peer_id, reserved = _HANDSHAKE.unpack(data)
    if magic != SP_MAGIC:
        raise ProtocolError(
            f"bad SP header magic {bytes(magic).hex(' ')} (expected {SP_MAGIC.hex(' ')}):"
            " the peer does not speak the SP protocols"
        )
    if peer_id != expected_peer_id:
        raise ProtocolError(
            f"peer protocol 0x{peer_id:04x} is not a valid peer for this socket"
            f" (expected 0x{expected_peer_id:04x})"
        )
    if reserved != 0:
        raise ProtocolError(f"SP header reserved bytes are 0x{reserved:04x}, must be zero")


# --- Frames --------------------------------------------------------------------------------


def frame_prefix(size: int, ipc: bool) -> bytes:
    """Return the prefix to write before a payload of ``size`` bytes.

    8 bytes (u64 BE size) for TCP, 9 bytes (``0x01`` then the u64 BE size) for IPC. The
    writer sends it and the payload pieces as separate ``sendmsg`` buffers.
    """
    if not 0 <= size <= _MAX_FRAME_SIZE:
        raise ValueError(f"frame size {size!r} does not fit in a u64")
    if ipc:
        return _IPC_PREFIX.pack(IPC_MSG_TYPE, size)
    return _TCP_PREFIX.pack(size)


def prefixer(ipc: bool) -> Callable[[int], bytes]:
    """``frame_prefix`` for one framing, as a C-level callable: what a pipe calls once per
    message. No range check: a size from ``len()`` always fits in a u64."""
    if ipc:
        return functools.partial(_IPC_PREFIX.pack, IPC_MSG_TYPE)
    return _TCP_PREFIX.pack


class FrameDecoder:
    """Incremental decoder of a pipe's frames (TCP or IPC framing).

    ``feed`` takes chunks of any size and returns every payload they complete, in order.
    ``max_size`` is the receive size limit in bytes (0 = unlimited); a frame whose size field
    exceeds it raises :class:`OversizeFrame` as soon as the prefix is complete. A bad IPC
    type byte raises :class:`ProtocolError` as soon as that byte arrives. After either error
    the stream cannot be resynchronised: the pipe must be closed, and any further ``feed``
    raises ``ProtocolError`` again.

    Performance notes (this is the receive hot path):

    * Chunks are parsed in place with ``struct.unpack_from`` at an offset, and each payload
      is one slice of the chunk: a chunk full of small frames costs one slice per frame and
      no buffer compaction at all.
    * A chunk that starts with a run of frames of one size (fixed-size records; at least
      ``RUN_MIN`` of them) is checked as a whole, one byte position of all the prefixes at
      a time (a strided slice and an ``lstrip``, both in C), and its bodies are cut in one
      list comprehension: 60 % of the cost of the frame-by-frame loop (measured: a chunk
      of 2,000 64-byte frames, 100 ns a frame against 170). Frames of varying sizes pay
      one short check per chunk (a one-byte-a-frame slice) and go through the loop.
    * Only an incomplete *prefix* (at most 8 bytes) is ever copied into the small carry
      buffer.
    * An incomplete *body* of up to ``PREALLOC_MAX`` bytes gets a buffer of its full size
      at once: ``pending_body()`` hands the missing part to the reader, which receives
      straight into it (``recv_into``) and reports with ``body_filled(n)``; when the last
      byte is there the body is copied once into the ``bytes`` handed to the user. A 1 MiB
      message costs one copy in the kernel and one here, and no allocation per read:
      measured, reading 256 KiB chunks and joining them cost an mmap, page faults and a
      munmap per chunk plus two copies, a third of the ceiling's throughput.
    * A larger body is collected as a list of chunks and joined once when its last byte
      arrives (a peer announcing a huge frame holds only the memory it really sent).
      Chunks given as bytearray or memoryview cost one more copy, taken because the caller
      may reuse that buffer.
    """

    __slots__ = ("_body", "_failed", "_have", "_ipc", "_max_size", "_parts", "_parts_len",
                 "_prefix", "_scratch", "body_missing")

    def __init__(self, ipc: bool, max_size: int) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0 (0 = unlimited), got {max_size!r}")
        self._ipc = ipc
        self._max_size = max_size
        # Bytes of an incomplete frame prefix (fewer than the prefix size).
        self._prefix = bytearray()
        # While a body is incomplete: its chunks so far and their total length.
        self._parts: list[bytes] = []
        self._parts_len = 0
        #: Bytes of the current frame's body still to come (0 while reading a prefix). An
        #: attribute, not a property: the pipe reads it at every receive, where each call
        #: costs (docs/PERFORMANCE.md, "Where the time goes": code run after a wake-up).
        self.body_missing = 0
        # Or, for a body of up to PREALLOC_MAX bytes: its buffer and how much of it is there.
        # The buffer is a view of ``_scratch``, kept from one body to the next when it is
        # at most SCRATCH_KEEP bytes: a stream of large messages then costs no allocation
        # and no zeroing per message, only the copy into the bytes handed over.
        self._body: memoryview | None = None
        self._have = 0
        self._scratch: bytearray | None = None
        self._failed = False

    @property
    def pending_bytes(self) -> int:
        """Bytes received and kept, belonging to a frame that is not complete yet."""
        return len(self._prefix) + self._parts_len + self._have

    def pending_body(self) -> memoryview | None:
        """The missing part of a preallocated body, for the reader to receive straight
        into (then ``body_filled``), or None: read a chunk and ``feed`` it."""
        if self._body is None:
            return None
        return self._body[self._have:]

    @property
    def to_next_body(self) -> int:
        """Bytes to read before the next frame's body starts: what is missing of the
        current body, if any, and of the next prefix."""
        prefix_size = IPC_PREFIX_SIZE if self._ipc else TCP_PREFIX_SIZE
        if self.body_missing:
            return self.body_missing + prefix_size
        return prefix_size - len(self._prefix)

    @property
    def body_size(self) -> int:
        """The whole size of the preallocated body being received (0 if none): what
        ``pending_body`` is the missing part of."""
        return len(self._body) if self._body is not None else 0

    @property
    def body_untouched(self) -> bool:
        """A preallocated body of which nothing is received yet: the reader may receive
        all of it as one ``bytes`` (then ``body_received``), with no copy here."""
        return self._body is not None and not self._have

    def body_received(self, data: bytes) -> list[bytes]:
        """``data`` was received for the missing part of a preallocated body: the body if
        that completes it. A whole untouched body is handed over as it is; a part is
        copied into the body's buffer, as ``pending_body`` then ``body_filled`` would."""
        body = self._body
        assert body is not None  # only called while a preallocated body is missing
        n = len(data)
        if n == self.body_missing and not self._have:
            self._body, self.body_missing = None, 0
            return [data]
        body[self._have:self._have + n] = data
        return self.body_filled(n)

    def body_filled(self, n: int) -> list[bytes]:
        """``n`` bytes were received into ``pending_body()``; return the body if complete."""
        self._have += n
        self.body_missing -= n
        if self.body_missing:
            return []
        body, self._body, self._have = self._body, None, 0
        assert body is not None  # only called after pending_body() gave a buffer
        return [body.tobytes()]

    @property
    def ipc(self) -> bool:
        """True if this decoder expects IPC framing (a 0x01 type byte before each size)."""
        return self._ipc

    @property
    def max_size(self) -> int:
        """The receive size limit in bytes (0 = unlimited)."""
        return self._max_size

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Consume one chunk; return the payloads of every frame it completes, in order."""
        if self._failed:
            raise ProtocolError("frame decoder already failed: the pipe must be closed")
        # The caller may reuse its buffer (recv_into): keep only immutable copies.
        if type(data) is not bytes:
            data = bytes(data)
        if not (self.body_missing or self._prefix):  # (a preallocated body is wanted too)
            # At a frame boundary, and (below) the chunk is exactly one whole frame within
            # the size limit: what each side of a round trip reads. Its body, without the
            # general loop's steps; anything else, a bad frame included, takes that loop.
            if self._ipc:
                psize = IPC_PREFIX_SIZE
                size = len(data) - psize
                whole = (size >= 0 and data[0] == IPC_MSG_TYPE
                         and _IPC_PREFIX.unpack_from(data)[1] == size)
            else:
                psize = TCP_PREFIX_SIZE
                size = len(data) - psize
                whole = size >= 0 and _TCP_PREFIX.unpack_from(data)[0] == size
            if whole and (size <= self._max_size or not self._max_size):
                return [data[psize:]]
        out: list[bytes] = []
        try:
            return self._feed(data, out)
        except ProtocolError as err:
            # Frames completed before the bad one are good: hand them over with the error
            # so the pipe can deliver them before it closes ("bad input loses nothing").
            err.frames = out
            self._failed = True
            raise

    def _feed(self, data: bytes, out: list[bytes]) -> list[bytes]:
        end = len(data)
        pos = 0

        if self._body is not None:
            # Continue a preallocated body (fed as a chunk rather than received into it).
            take = min(self.body_missing, end)
            self._body[self._have:self._have + take] = memoryview(data)[:take]
            out.extend(self.body_filled(take))
            pos = take
        elif self.body_missing:
            # Continue a pending body.
            want = self.body_missing
            if end < want:
                self._parts.append(data)
                self._parts_len += end
                self.body_missing = want - end
                return out
            self._parts.append(data[:want])
            out.append(b"".join(self._parts))
            self._parts = []
            self._parts_len = 0
            self.body_missing = 0
            pos = want
        elif self._prefix:
            # Complete a prefix split across chunks (rare: at most 8 bytes copied).
            prefix = self._prefix
            psize = IPC_PREFIX_SIZE if self._ipc else TCP_PREFIX_SIZE
            take = min(psize - len(prefix), end)
            prefix += data[:take]
            pos = take
            if len(prefix) < psize:
                return out
            size = self._check_prefix(prefix)
            self._prefix = bytearray()
            pos = self._start_body(data, pos, size, out)

        if end - pos >= RUN_CHUNK_MIN:
            pos = self._take_run(data, pos, out)

        # Hot loop: whole frames inside this chunk.
        max_size = self._max_size
        append = out.append
        if self._ipc:
            unpack = _IPC_PREFIX.unpack_from
            while pos < end:
                if end - pos < IPC_PREFIX_SIZE:
                    break
                kind, size = unpack(data, pos)
                if kind != IPC_MSG_TYPE:
                    raise _bad_ipc_type(kind)
                if max_size and size > max_size:
                    raise OversizeFrame(size, max_size)
                pos += IPC_PREFIX_SIZE
                stop = pos + size
                if stop > end:
                    pos = self._start_body(data, pos, size, out)
                    break
                append(data[pos:stop])
                pos = stop
        else:
            unpack = _TCP_PREFIX.unpack_from
            while pos < end:
                if end - pos < TCP_PREFIX_SIZE:
                    break
                (size,) = unpack(data, pos)
                if max_size and size > max_size:
                    raise OversizeFrame(size, max_size)
                pos += TCP_PREFIX_SIZE
                stop = pos + size
                if stop > end:
                    pos = self._start_body(data, pos, size, out)
                    break
                append(data[pos:stop])
                pos = stop

        if pos < end:
            # A partial prefix remains. Judge an IPC type byte now rather than when the size
            # arrives: a bad stream should be closed at the first wrong byte.
            if self._ipc and data[pos] != IPC_MSG_TYPE:
                raise _bad_ipc_type(data[pos])
            self._prefix += data[pos:]
        return out

    def _take_run(self, data: bytes, pos: int, out: list[bytes]) -> int:
        """Take the frames from ``data[pos]`` on that have the size of the first, as many as
        follow each other among the whole frames the chunk holds, if they are at least
        ``RUN_MIN``; return the offset after them, or ``pos`` (nothing taken) for the
        frame-by-frame loop, which also raises what must be raised (a bad type byte, a
        frame over the limit)."""
        psize = IPC_PREFIX_SIZE if self._ipc else TCP_PREFIX_SIZE
        prefix = data[pos:pos + psize]
        if len(prefix) < psize or (self._ipc and prefix[0] != IPC_MSG_TYPE):
            return pos
        size = int.from_bytes(prefix[psize - TCP_PREFIX_SIZE:], "big")
        step = psize + size
        run = (len(data) - pos) // step
        if run < RUN_MIN or (self._max_size and size > self._max_size):
            return pos
        # Byte j of the prefixes of frames of this size is data[pos + j::step]: the run
        # ends at the first frame where one of them differs from the first prefix's, which
        # lstrip finds in C. The frames before it are all of this size, so the bytes
        # compared up to there are prefixes. The size's low byte first: the likeliest to
        # differ, and each check shortens the next one.
        for j in range(psize - 1, -1, -1):
            run -= len(data[pos + j:pos + run * step:step].lstrip(prefix[j:j + 1]))
            if run < RUN_MIN:
                return pos
        stop = pos + run * step
        out.extend([data[body:body + size] for body in range(pos + psize, stop + psize, step)])
        return stop

    def _check_prefix(self, prefix: bytearray) -> int:
        """Validate a complete frame prefix; return the body size it announces."""
        size: int
        if self._ipc:
            kind, size = _IPC_PREFIX.unpack(prefix)
            if kind != IPC_MSG_TYPE:
                raise _bad_ipc_type(kind)
        else:
            (size,) = _TCP_PREFIX.unpack(prefix)
        if self._max_size and size > self._max_size:
            raise OversizeFrame(size, self._max_size)
        return size

    def _start_body(self, data: bytes, start: int, size: int, out: list[bytes]) -> int:
        """Take a body of ``size`` bytes starting at ``data[start]``; return the new offset.

        Either the body is complete in ``data`` (appended to ``out``) or the decoder keeps
        what there is and waits for the rest.
        """
        end = len(data)
        stop = start + size
        if stop <= end:
            out.append(data[start:stop])
            return stop
        have = end - start
        if size <= PREALLOC_MAX:
            scratch = self._scratch
            if scratch is None or len(scratch) < size:
                scratch = bytearray(size)
                self._scratch = scratch if size <= SCRATCH_KEEP else None
            self._body = body = memoryview(scratch)[:size]
            body[:have] = memoryview(data)[start:]
            self._have = have
        else:
            if have:
                self._parts.append(data[start:])
            self._parts_len = have
        self.body_missing = size - have
        return end


def _bad_ipc_type(kind: int) -> ProtocolError:
    return ProtocolError(
        f"bad IPC message type byte 0x{kind:02x} (expected 0x{IPC_MSG_TYPE:02x})"
    )
