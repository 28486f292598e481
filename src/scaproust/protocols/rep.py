"""REP, raw and cooked (tables: machines ``rep_raw`` and ``rep`` in protocols.yaml).

Theory of operation
-------------------
``RepRaw`` keeps no state beyond its pipes (one working state in the table); receiving
and routing replies by backtrace is shared with RESPONDENT (protocols/_backtrace.py).

``Rep`` is the same machine; its policy, ``RepPolicy`` (run in the caller's thread), keeps the header of the request the
user is answering and puts it back on the reply: a cooked REP's recv() returns the body,
recv_msg() shows the backtrace too, and send() needs only the body.

Extra fields: see _backtrace.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.rep import RepFSM
from scaproust._generated.rep_raw import RepRawFSM
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.policy import Policy
from scaproust.errors import BadState
from scaproust.protocols._backtrace import BacktraceRouter

if TYPE_CHECKING:
    from scaproust.core.channel import Channel
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.stats import Stats


class RepRaw(RepRawFSM, BacktraceRouter):
    """Raw REP protocol machine; the cooked one adds nothing to it."""


class Rep(RepFSM, RepRaw):
    """Cooked REP protocol machine: the raw one, with RepPolicy in the caller's thread."""


class RepPolicy(Policy):
    """The user-visible state of a cooked REP: the request being answered.

    ``pending`` is the header (pipe word + backtrace) of the last request handed to the
    user and not yet answered; None when there is none. A new recv() abandons it, even if
    that recv() then times out, as in nng.
    """

    plain_recv = False  # each request received becomes the one to answer

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        self.pending: bytes | None = None

    def outgoing(self, item: Item) -> Item:
        with self.lock:
            header = self.pending
        if header is None:
            raise BadState("a REP socket sends a reply only to a request it has recv()ed")
        return Message(body_of(item), header)

    def sent(self, item: Item) -> None:
        with self.lock:
            # What outgoing returned: a Message.
            if self.pending == item.header:  # type: ignore[union-attr]
                self.pending = None  # answered

    def recv_wait(self, deadline: float | None) -> float | None:
        with self.lock:
            self.pending = None  # a new recv abandons the request not answered yet (nng)
        return super().recv_wait(deadline)

    def incoming(self, item: Item) -> Item | None:
        header = header_of(item)
        if not header:
            return None  # no backtrace: nowhere to reply (not from a REP machine)
        with self.lock:
            self.pending = header
        return item  # recv() hands over the body, recv_msg() the backtrace too
