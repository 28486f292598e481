"""REP, raw and cooked (tables: machines ``rep_raw`` and ``rep`` in protocols.yaml).

Theory of operation
-------------------
``RepRaw`` keeps no state beyond its pipes (one working state in the table); receiving
and routing replies by backtrace is shared with RESPONDENT (protocols/_backtrace.py).

``Rep`` is the same machine; its policy, ``RepPolicy`` (run in the caller's thread), keeps the header of the request the
user is answering and puts it back on the reply: a cooked REP's recv() returns the body,
recv_msg() shows the backtrace too, and send() needs only the body.

Extra fields: see _backtrace.py.

Contexts (``sock.context()``, machine ``rep_ctx``)
---------------------------------------------------
A REP context keeps no state in the I/O thread: requests wait in the socket's receive
queue, fair-queued from every pipe, and whoever receives first (the socket or any context)
takes the next one. Its state is the socket's policy's, one per context, kept by the
``RepContext`` machine in the caller's thread: the header of the request it took, the reply
due, and whether a receive waits (a second one is refused, as in nng). The reply goes out
through the socket's channel like the socket's own, and the raw machine routes it by its
pipe word: a pipe that has gone drops it, counted as ``dropped_no_route``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.rep import RepFSM
from scaproust._generated.rep_ctx import RepCtxFSM
from scaproust._generated.rep_raw import RepRawFSM
from scaproust.core.message import Message, body_of, header_of
from scaproust.core.policy import ContextPolicy, Policy
from scaproust.core.stats import DROPPED_CLOSED
from scaproust.errors import BadState, Closed
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


#: ``RepPolicy.pending`` when no request waits for its answer: never written (``sent``
#: writes only into a list holding the header it answers, and a header is bytes).
_NO_REQUEST: list[bytes | None] = [None]


class RepPolicy(Policy):
    """The user-visible state of a cooked REP: the request being answered.

    ``pending`` holds the header (pipe word + backtrace) of the last request handed to the
    user and not yet answered, or None when there is none. A new recv() abandons it, even
    if that recv() then times out, as in nng.

    No lock: ``pending`` is a one-item list, a new one for each request (``incoming``), or
    ``_NO_REQUEST``. ``sent`` reads the list, compares and clears that same list, so a
    request received meanwhile in another thread, which came with a list of its own, is
    never cleared by the answer to the one before; and each other step is one read or one
    write of the attribute. A lock section was 0.2 µs of every request's receive, between
    its arrival and the reply.
    """

    plain_recv = False  # each request received becomes the one to answer
    #: What a send() with nothing to answer raises (RESPONDENT says it of surveys).
    unanswerable = "a REP socket sends a reply only to a request it has recv()ed"

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        self.pending = _NO_REQUEST

    def outgoing(self, item: Item) -> Item:
        header = self.pending[0]
        if header is None:
            raise BadState(self.unanswerable)
        return Message(item if isinstance(item, bytes) else item.body, header)  # body_of

    def sent(self, item: Item) -> None:
        pending = self.pending
        # What outgoing returned: a Message.
        if pending[0] == item.header:  # type: ignore[union-attr]
            pending[0] = None  # answered

    def recv_wait(self, deadline: float | None) -> float | None:
        # A new recv abandons the request not answered yet (nng).
        self.pending = _NO_REQUEST
        return Policy.recv_wait(self, deadline)  # no super(): a tenth of a µs

    def incoming(self, item: Item) -> Item | None:
        header = b"" if isinstance(item, bytes) else item.header  # header_of, inline
        if not header:
            return None  # no backtrace: nowhere to reply (not from a REP machine)
        self.pending = [header]
        return item  # recv() hands over the body, recv_msg() the backtrace too


class RepContext(RepCtxFSM):
    """The state of one REP context (machine ``rep_ctx``), run in its caller's thread under
    its policy's lock. ``pending``: the header of the request taken and not yet answered."""

    #: How errors name the socket and what it answers (RESPONDENT: a survey).
    kind = "REP"
    question = "request"

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.pending: bytes | None = None

    def answers_request(self, header: bytes) -> bool:
        return header == self.pending

    def forget_request(self, *args: object) -> None:
        # *args: on_enter of closed and an action of cmd_recv (nothing), of evt_sent (header).
        self.pending = None

    def keep_request(self, header: bytes) -> None:
        self.pending = header

    def refuse_second_recv(self) -> None:
        raise BadState(f"a receive already waits on this {self.kind} context")

    def refuse_send(self) -> None:
        raise BadState(f"a {self.kind} context sends only in answer to a {self.question} "
                       "it has received")

    def refuse_closed(self) -> None:
        raise Closed("context is closed")

    def drop_request(self, header: bytes) -> None:
        self.stats.count_from_caller(DROPPED_CLOSED)


class RepContextPolicy(ContextPolicy):
    """A REP context's caller-side half: its ``RepContext`` machine, over the socket's
    channel (requests are shared by the socket and its contexts)."""

    machine_class: type[RepContext] = RepContext

    def __init__(self, channel: Channel, options: Options, stats: Stats | None = None,
                 parent: Policy | None = None) -> None:
        super().__init__(channel, options, stats, parent)
        self.machine = self.machine_class(self.stats)

    def outgoing(self, item: Item) -> Item:
        with self.lock:
            self.machine.cmd_send()  # sp.BadState with no request, sp.Closed once closed
            header = self.machine.pending
        return Message(body_of(item), header)  # type: ignore[arg-type]  # answering

    def sent(self, item: Item) -> None:
        with self.lock:
            self.machine.evt_sent(header_of(item))

    def begin_recv(self) -> object:
        with self.lock:
            self.machine.cmd_recv()
        return None

    def end_recv(self, token: object = None) -> None:
        with self.lock:
            if self.machine.state == "receiving":  # ended without a request
                self.machine.evt_recv_failed()

    def take(self, wait: float | None, token: object = None) -> Item:
        return self.channel.get_unless(wait, self._stopped)

    def _stopped(self) -> bool:
        return self.closed

    def incoming_for(self, item: Item, token: object) -> Item | None:
        header = header_of(item)
        if not header:
            return None  # no backtrace: nowhere to reply (as the socket's policy)
        with self.lock:
            self.machine.evt_request(header)
            taken = self.machine.state == "answering"
        return item if taken else None  # closed meanwhile: dropped, counted

    def close(self) -> None:
        with self.lock:
            self.machine.cmd_close()
            self.closed = True
        self.channel.kick()
