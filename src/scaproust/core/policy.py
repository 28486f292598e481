"""Protocol policies: the user-visible state of a cooked protocol, checked in the caller's thread.

Some rules must hold at the moment the user calls: a REQ cannot receive before it has sent,
a REP cannot reply without a request, a SURVEYOR's recv times out at the survey deadline.
Asking the I/O thread would cost a round trip per message, so this state lives here, next
to the channel, as h11 keeps a connection's state on the caller's side. The I/O thread keeps its own part
of each protocol (ids in flight, resend timers, routing) in the protocol machines.

A policy sees every outgoing item before it is queued (``outgoing``: return the item to
queue, or raise), learns that it was queued (``sent``: only then does its state change, so
a send that times out changes nothing), and sees every received item before the user does
(``incoming``: return what the user gets, or None to drop it and keep waiting);
``recv_wait`` turns the caller's deadline into the time to wait, or raises.

The three steps of a send run as one against the other threads' sends through the same
policy (``send_in_order``, under ``send_lock``): the protocol's machine takes requests in
the order they are queued, and the policy must end with the same one outstanding. Two
threads sending on one REQ at once otherwise could queue A then B and mark B then A sent:
the machine waited for B's reply and the policy for A's, and ``recv()`` got neither. The
lock is never held across a wait for credit: a sender that finds none lets it go, waits,
and tries again, so an asyncio task can take it without blocking its event loop.

Raw sockets have no policy: headers are the user's business there.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from scaproust.core.stats import Stats
from scaproust.errors import WouldBlock

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from scaproust.core.channel import Channel
    from scaproust.core.message import Item
    from scaproust.core.options import Options

    class Subscriptions(Protocol):
        """The policy of a cooked SUB (protocols/sub.py): topics, changed in the caller's
        thread around ``run(topic)``, which asks the I/O thread to do the same."""

        def subscribe(self, topic: bytes | str, run: Callable[[bytes], object]) -> None: ...
        def unsubscribe(self, topic: bytes | str, run: Callable[[bytes], object]) -> None: ...


class Policy:
    """No user-visible state: everything passes."""

    #: True while ``incoming`` returns every item unchanged and ``recv_wait`` is this
    #: class's: the facade may then hand a queued item to the user without calling them
    #: (its fast path). A policy that checks or changes what is received sets it False.
    plain_recv = True

    def __init__(self, channel: Channel, options: Options, stats: Stats | None = None) -> None:
        self.channel = channel
        self.options = options
        #: The socket's counters: what a policy drops at recv time is counted here too.
        self.stats = stats if stats is not None else Stats()
        self.lock = threading.Lock()
        #: Held by a send from ``outgoing`` to ``sent`` (``send_in_order``), never while
        #: waiting for credit.
        self.send_lock = threading.Lock()

    def outgoing(self, item: Item) -> Item:
        return item

    def sent(self, item: Item) -> None:
        """``item`` (what ``outgoing`` returned) was accepted by the socket."""

    def recv_wait(self, deadline: float | None) -> float | None:
        """Seconds to wait for the next item (None: forever), given the caller's deadline."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()  # max(0.0, ...) without the builtin's call
        return left if left > 0 else 0.0

    def incoming(self, item: Item) -> Item | None:
        return item

    #: Bumped by each send that changes how long a receive may wait (a new survey): a
    #: receive reads it before its wait, and hands it to ``renewed`` if the wait times out.
    epoch = 0

    def renewed(self, epoch: int) -> bool:
        """Whether a receive whose wait timed out, begun at ``epoch``, waits again: a wait
        capped by what ``recv_wait`` said no longer holds (another thread sent a new survey,
        still open). Never here."""
        return False


def send_in_order(policy: Policy, channel: Channel, item: Item, timeout: float | None,
                  out: Item | None = None) -> None:
    """Send ``item`` through ``policy`` on ``channel``: ``outgoing``, the channel's ``put``
    and ``sent`` as one step under ``policy.send_lock`` (see the module's docstring). Waits
    up to ``timeout`` seconds for credit (None: forever; 0: never, ``WouldBlock``), without
    the lock; ``outgoing`` runs once, whatever the number of tries (``out``: what it made
    of ``item`` at a first try that found no credit, ``Socket.send``'s inline one: the
    wait comes next)."""
    if out is None:
        out = put_now(policy, channel, item, None)
        if out is None:
            return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if timeout is not None and timeout <= 0:
            raise WouldBlock("send would block")
        channel.wait_for_credit(timeout, deadline)  # Timeout, Closed
        out = put_now(policy, channel, item, out)
        if out is None:
            return


def put_now(policy: Policy, channel: Channel, item: Item, out: Item | None) -> Item | None:
    """One try of ``send_in_order``, without waiting: None if ``item`` was sent, else what
    ``outgoing`` made of it (``out``: made by an earlier try), for the next try."""
    with policy.send_lock:
        if out is None:
            out = policy.outgoing(item)
        try:
            channel.put(out, 0)
        except WouldBlock:
            return out
        policy.sent(out)
    return None


class ContextPolicy(Policy):
    """The caller-side state of one context (``sock.context()``), as ``Policy`` is a
    socket's: it sees what the context sends and receives, in the caller's thread.

    A receive is bracketed: ``begin_recv`` (may refuse: REQ with no request, REP with a
    receive already waiting) returns a token that ``incoming_for`` gets with each item, and
    ``end_recv`` runs however the receive ends (a message, a timeout, a cancelled task).
    ``take`` waits for the next item: from the context's own channel (REQ), or from the
    socket's, shared by its contexts (REP, RESPONDENT), stopping when ``closed`` is set.

    ``own_machine``: the protocol keeps this context's state in the I/O thread too (a
    machine opened by ``SocketCore.open_context``), and the context has its own channel.
    ``parent``: the socket's own policy (REQ draws its request ids from it).
    """

    own_machine = False

    def __init__(self, channel: Channel, options: Options, stats: Stats | None = None,
                 parent: Policy | None = None) -> None:
        super().__init__(channel, options, stats)
        self.parent = parent
        self.closed = False

    def begin_recv(self) -> object:
        return None

    def end_recv(self, token: object = None) -> None:
        """The receive begun by ``begin_recv`` (which returned ``token``) is over."""

    def take(self, wait: float | None, token: object = None) -> Item:
        """The next item for the receive ``begin_recv`` gave ``token``, waiting up to
        ``wait`` seconds."""
        return self.channel.get(wait)

    def incoming_for(self, item: Item, token: object) -> Item | None:
        return self.incoming(item)

    def close(self) -> None:
        """The context is closed: wake its callers (they get ``sp.Closed``)."""
        self.closed = True
