"""PAIR v1, raw and cooked (tables: machines ``pair1_raw`` and ``pair1`` in protocols.yaml).

Theory of operation
-------------------
PAIR v1 is PAIR v0 (protocols/pair.py: one peer; a second pipe is closed, the first stays;
send waits for a peer) plus a hop count: every payload on the wire starts with one 32-bit
big-endian word (WIRE.md, "PAIR v1"). The states and the peer logic are PAIR v0's, reused
by subclassing ``Pair``; what this module adds is the word, following nng's pair1
(src/sp/protocol/pair1/pair.c, read for facts only):

- **Sending**, nng increments the word of every message as it goes onto the pipe: a cooked
  message starts at 0, so it leaves with hop count 1; a raw message must carry a header of
  exactly one word under 0xff (else nng fails the send with EPROTO) and leaves with that
  value plus one. So a device (raw recv, raw send) adds one hop per pass. Ours does the
  same, except that a raw send cannot fail in the caller's thread here (raw sockets have
  no facade policy), so a bad header is dropped, counted (``dropped_bad_header``) and
  logged as a warning.
- **Receiving**, cooked and raw alike: a payload shorter than one word, or a word over 0xff,
  is malformed: nng closes the pipe. Ours closes it too (``ctx.reject_pipe``, deferred, a
  debug line, ``dropped_malformed``), delivers what came before it in the same read, and
  forgets the peer at once, so its later bytes are discarded and a new pipe may pair. A
  word over the ``ttl`` option (default 8, 1..255) drops that message silently
  (``dropped_ttl``) and the pipe stays. Otherwise nng keeps the word, as received (it is
  not incremented on receipt), as the message header: ``Pair1Raw`` hands over
  ``Message(body, header=word)``, ``Pair1`` only the body.

Extra fields: as PAIR v0 (``peer``, ``backlog``). The backlog holds what the user sent,
untouched; the word is made as a message leaves for the pipe (``_frame``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scaproust._generated.pair1 import Pair1FSM
from scaproust._generated.pair1_raw import Pair1RawFSM
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.stats import (
    DROPPED_BAD_HEADER,
    DROPPED_MALFORMED,
    DROPPED_REJECTED,
    DROPPED_TTL,
)
from scaproust.protocols._headers import WORD
from scaproust.protocols.pair import Pair

if TYPE_CHECKING:
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe

log = logging.getLogger("scaproust.protocol")

#: On-wire facts, frozen (WIRE.md "PAIR v1"; nng pair1): the largest hop count a peer may
#: send (more closes the pipe), and the word a cooked message leaves with (first hop).
MAX_HOPS = 0xFF
FIRST_HOP = WORD.pack(1)
_HOP_LIMIT = bytes(3)  # a word is at most 0xff when its first three bytes are zero


class Pair1Raw(Pair1RawFSM, Pair):
    """Raw PAIR v1 protocol machine: the header is the hop count word."""

    # ---------------------------------------------------------------- receiving

    def hops_well_formed(self, pipe: Pipe, msgs: list[bytes]) -> bool:
        for payload in msgs:
            if not _hops_ok(payload):
                return False
        return True

    def deliver_with_hops(self, pipe: Pipe, msgs: list[bytes]) -> None:
        self._deliver(pipe, msgs, raw=True)

    def reject_malformed_peer(self, pipe: Pipe, msgs: list[bytes]) -> None:
        log.debug("pipe %d closed: a PAIR v1 message without a hop count of at most %d", pipe.id, MAX_HOPS)
        self.ctx.stats.count(DROPPED_MALFORMED)
        # What came behind it in the same read dies with the pipe: counted too.
        bad = next(i for i, payload in enumerate(msgs) if not _hops_ok(payload))
        self.ctx.stats.count(DROPPED_REJECTED, len(msgs) - bad - 1)
        self.ctx.reject_pipe(pipe)

    def forget_peer(self, pipe: Pipe, *args: object) -> None:
        # PAIR v0's, also after a malformed message: evt_pipe_removed carries (pipe),
        # evt_pipe_recv (pipe, msgs), hence *args for the messages it does not need.
        self.peer = None

    def _deliver(self, pipe: Pipe, msgs: list[bytes], raw: bool) -> None:
        """Deliver the messages up to the first malformed one; drop those over the ttl."""
        ttl = self.ctx.options.ttl
        out: list[Item] = []
        for payload in msgs:
            if not _hops_ok(payload):
                break  # the table's second evt_pipe_recv row closes the pipe
            if payload[3] > ttl:
                self.ctx.stats.count(DROPPED_TTL)
                continue
            out.append(Message(payload[4:], payload[:4]) if raw else payload[4:])
        if out:
            self.ctx.deliver(out, pipe.recv_priority)

    # ---------------------------------------------------------------- sending

    def hop_header_ok(self, item: Item) -> bool:
        header = header_of(item)
        return len(header) == 4 and header[:3] == _HOP_LIMIT and header[3] < MAX_HOPS

    def refuse_header(self, item: Item) -> None:
        header = header_of(item)
        self.ctx.stats.count(DROPPED_BAD_HEADER)
        log.warning("raw PAIR v1 send dropped: its header must be one hop count word under %d, "
                    "not %r", MAX_HOPS, bytes(header[:8]))

    def send_backlog(self, pipe: Pipe) -> None:
        backlog, peer = self.backlog, self.peer
        while backlog and peer.free:  # type: ignore[union-attr]  # paired: see Pair
            peer.cmd_send(*self._frame(backlog.popleft()))  # type: ignore[union-attr]

    def send_to_peer(self, item: Item) -> None:
        if self.backlog or not self.peer.free:  # type: ignore[union-attr]  # paired: see Pair
            self.backlog.append(item)
        else:
            self.peer.cmd_send(*self._frame(item))  # type: ignore[union-attr]

    def _frame(self, item: Item) -> tuple[bytes, bytes]:
        """(body, hop count word) of a message as it leaves: one more hop than its header."""
        # A Message: hop_header_ok let through only an item with a 4-byte header.
        return item.body, WORD.pack(item.header[3] + 1)  # type: ignore[union-attr]


class Pair1(Pair1FSM, Pair1Raw):
    """Cooked PAIR v1 protocol machine: bodies in and out, hop count 1 on every send."""

    def deliver_bodies(self, pipe: Pipe, msgs: list[bytes]) -> None:
        self._deliver(pipe, msgs, raw=False)

    def _frame(self, item: Item) -> tuple[bytes, bytes]:
        return body_of(item), FIRST_HOP


def _hops_ok(payload: bytes) -> bool:
    """A hop count word leads the message and is at most MAX_HOPS."""
    return len(payload) >= 4 and payload[:3] == _HOP_LIMIT
