"""Routing by backtrace: what REP and RESPONDENT share, raw and cooked.

Both receive a stack of 32-bit words (hops, then the request or survey id with the high
bit: WIRE.md, "Request / reply header") and answer on the pipe the message came from:

- receiving, the backtrace (the words up to and including the id, at most ``ttl`` of them)
  is split off and the user gets ``Message(body, header=pipe_word(pipe.id) + backtrace)``;
  messages are fair-queued because the I/O thread serves pipes in readiness order. Too many
  hops: dropped and counted (``dropped_ttl``), the pipe stays. A malformed backtrace (a
  partial word, or no word with the high bit) closes that pipe (``dropped_malformed``).
- sending, the first header word names the pipe; the rest of the header and the body go
  there. No such pipe (it went away) or no pipe word at all: the answer is dropped
  (``dropped_no_route``) and send() still succeeded. A pipe whose queue is full drops it
  too (``dropped_pipe_full``), as nng's raw REP does: memory stays bounded when a peer asks
  faster than it reads, and its REQ resends.
- sending never blocks: the credit is ``UNBOUNDED`` from the start.

Extra fields: ``pipes`` (active pipes by id, less those closed for a malformed message).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scaproust.core.channel import UNBOUNDED
from scaproust.core.message import Message
from scaproust.core.options import SPECS
from scaproust.core.stats import (
    DROPPED_MALFORMED,
    DROPPED_NO_ROUTE,
    DROPPED_PIPE_FULL,
    DROPPED_REJECTED,
    DROPPED_TTL,
)
from scaproust.protocols._base import ProtocolBase
from scaproust.protocols._headers import (
    MalformedHeader,
    TooManyHops,
    pipe_word,
    split_backtrace,
)

if TYPE_CHECKING:
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe

log = logging.getLogger("scaproust.protocol")

#: The deepest stack a reply or a response may bring back: the most hops any ``ttl``
#: (1..255) lets a request or a survey take.
MAX_HOPS = SPECS["ttl"].maximum or 255


def split_stacks(ctx: Context, pipe: Pipe, payloads: list[bytes], on_top: bytes = b"",
                 *, limit_hops: bool = True) -> tuple[list[Message], Exception | None]:
    """Split each payload's backtrace off: ``Message(body, header=on_top + backtrace)``.

    Messages deeper than the ``ttl`` option are dropped and counted (``dropped_ttl``),
    unless ``limit_hops`` is False: a reply or a response comes back through the hops its
    request or survey took, each of which counted them on the way out (REP and RESPONDENT,
    as nng: its REQ and SURVEYOR take any depth back; a device's raw REQ that dropped them
    lost every reply to a request that had just passed). Any depth a ``ttl`` allows, that
    is: ``MAX_HOPS``; the words are looked at one by one, and a peer's reply of a mebibyte
    of hop words took the I/O thread 40 ms without a bound. At the first malformed one the
    split stops, it is counted (``dropped_malformed``) and its error returned with the
    messages before it: the caller closes that pipe, and the rest of what it sent in that
    read is counted as ``dropped_rejected``.
    """
    ttl = ctx.options.ttl if limit_hops else MAX_HOPS
    out: list[Message] = []
    for index, payload in enumerate(payloads):
        try:
            backtrace, body = split_backtrace(payload, ttl)
        except TooManyHops:
            ctx.stats.count(DROPPED_TTL)
            continue
        except MalformedHeader as err:
            log.debug("pipe %d closed: malformed backtrace: %s", pipe.id, err)
            ctx.stats.count(DROPPED_MALFORMED)
            # What came behind it in the same read dies with the pipe: counted too.
            ctx.stats.count(DROPPED_REJECTED, len(payloads) - index - 1)
            return out, err
        out.append(Message(body, on_top + backtrace))
    return out, None


class BacktraceRouter(ProtocolBase):
    """Shared actions of the REP and RESPONDENT machines."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        self.pipes: dict[int, Pipe] = {}
        #: Each pipe's hop word (pipe_word), made once: a request's backtrace starts with it.
        self.words: dict[int, bytes] = {}
        #: And back, from the word to the pipe: an answer's header starts with it, and a
        #: lookup of its first 4 bytes routes it (no word to unpack; a hop word never has
        #: the high bit, so a request id or a short header finds nothing).
        self.by_word: dict[bytes, Pipe] = {}
        ctx.set_send_capacity(UNBOUNDED, UNBOUNDED)  # answers never wait

    def add_pipe(self, pipe: Pipe) -> None:
        self.pipes[pipe.id] = pipe
        self.words[pipe.id] = word = pipe_word(pipe.id)
        self.by_word[word] = pipe

    def remove_pipe(self, pipe: Pipe) -> None:
        if self.pipes.get(pipe.id) is pipe:
            del self.pipes[pipe.id]
            del self.by_word[self.words.pop(pipe.id)]

    def deliver_with_backtrace(self, pipe: Pipe, msgs: list[bytes]) -> None:
        if self.pipes.get(pipe.id) is not pipe:
            self.ctx.stats.count(DROPPED_REJECTED, len(msgs))  # closing: malformed earlier
            return
        payload = msgs[0]
        if len(msgs) == 1 and len(payload) >= 4 and payload[0] & 0x80:
            # The usual request: alone in its read, and its backtrace is its id alone (no
            # hop). What split_stacks makes of it (any ttl passes one word), without its
            # steps: a tenth of a REP's receive.
            self.ctx.deliver([Message(payload[4:], self.words[pipe.id] + payload[:4])],
                             pipe.recv_priority)
            return
        out, malformed = split_stacks(self.ctx, pipe, msgs, self.words[pipe.id])
        if malformed is not None:
            self.remove_pipe(pipe)
            self.ctx.reject_pipe(pipe)
        if out:
            self.ctx.deliver(out, pipe.recv_priority)

    def route_by_backtrace(self, item: Item) -> None:
        # header_of and body_of, inline: the path of every reply.
        header, body = (b"", item) if isinstance(item, bytes) else (item.header, item.body)
        # Its first word names the pipe; a header shorter than a word routes nowhere.
        pipe = self.by_word.get(header[:4])
        if pipe is None:
            self.ctx.stats.count(DROPPED_NO_ROUTE)
        elif not pipe.free:
            self.ctx.stats.count(DROPPED_PIPE_FULL)
        else:
            pipe.cmd_send(body, header[4:])
