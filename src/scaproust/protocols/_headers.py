"""The SP header words of REQ/REP and SURVEYOR/RESPONDENT, and PAIR v1's hop count.

On-wire facts, frozen (WIRE.md, "Request / reply header"): a stack of 32-bit big-endian
words. A word with its most significant bit clear is a hop (a pipe id, 31 bits); the first
word with it set ends the stack and holds the request (or survey) id.
"""

from __future__ import annotations

import struct

from scaproust.errors import ProtocolError

WORD = struct.Struct(">I")
END_OF_STACK = 0x80000000  # the bit that marks the request id, the bottom of the stack
ID_MASK = 0x7FFFFFFF


class MalformedHeader(ProtocolError):
    """A backtrace with a partial word or no request id: the pipe is closed (nng's choice)."""


class TooManyHops(ProtocolError):
    """More words than the TTL allows: the message is dropped silently, the pipe stays."""


def id_word(request_id: int) -> bytes:
    """The 4-byte word a REQ or SURVEYOR puts on the wire for ``request_id``."""
    return WORD.pack(END_OF_STACK | (request_id & ID_MASK))


def pipe_word(pipe_id: int) -> bytes:
    """The 4-byte hop word for a pipe (most significant bit clear)."""
    return WORD.pack(pipe_id & ID_MASK)


def split_backtrace(payload: bytes, ttl: int) -> tuple[bytes, bytes]:
    """Split a request into (backtrace, body): words up to and including the first with
    the end-of-stack bit. Raises MalformedHeader, or TooManyHops past ``ttl`` words
    (counting the id: 8 pass, 9 are dropped, WIRE.md)."""
    unpack, end = WORD.unpack_from, len(payload)
    offset = 0
    while True:
        if offset + 4 > end:
            raise MalformedHeader(f"backtrace without a request id ({end} bytes)")
        (word,) = unpack(payload, offset)
        offset += 4
        if word & END_OF_STACK:
            break
        if offset // 4 >= ttl:  # the id would be word ttl + 1 at the earliest
            raise TooManyHops(f"more than ttl={ttl} hops")
    return payload[:offset], payload[offset:]
