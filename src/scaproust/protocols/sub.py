"""SUB: receive what PUBs broadcast, filtered by topic (tables: machines ``sub``, ``sub_raw``).

Theory of operation
-------------------
A topic is a byte string; a message matches it when its body starts with it, so the
empty topic matches every message, and with no topic nothing is received (WIRE.md, "SUB"
[seen]). The cooked table's states say whether there is any topic: ``unsubscribed``
discards everything, ``subscribed`` delivers what matches one of ``topics``. The user
changes topics with ``socket.subscribe()`` / ``unsubscribe()``, control requests run on
the I/O thread (``cmd_subscribe`` / ``cmd_unsubscribe``, like bind), so messages are
filtered here, before they reach the receive queue: a topic nobody wants costs no memory.
Messages dropped for matching no topic are counted in ``dropped_unmatched``.

A SUB never writes a byte to its peers, not even its subscriptions (nanomsg's PUB aborts
on incoming data, WIRE.md): no row of either table sends.

Choices, where the peers leave one:

- Unsubscribing from a topic not subscribed raises ``ValueError`` naming the topic (nng
  answers NNG_ENOENT; ``list.remove`` raises ValueError too). Subscribing twice to the
  same topic is harmless and one unsubscribe removes it.
- Unsubscribing purges: once ``unsubscribe()`` returns, ``recv()`` never returns a message
  that matches none of the remaining topics, even one already in the receive queue. nng
  (sub0_ctx_unsubscribe) and nanomsg (which filters at recv time) both behave so. The
  queue belongs to the user's side, so ``SubPolicy`` does it, in the caller's thread: the
  unsubscribe drops what is queued and matches no topic left (so subscribing to the topic
  again brings none of it back, as in nng), and after the first unsubscribe each received
  message is checked against its copy of the topics too.
- Raw SUB (``sub_raw``) delivers every message unfiltered and has no subscriptions:
  ``subscribe()`` on it raises ``NotSupported``. That is nng's raw sub0 (xsub0), which
  refuses NNG_OPT_SUB_SUBSCRIBE with NNG_ENOTSUP; a device forwards everything.
- A slow reader loses messages upstream: when the receive queue is full the SUB stops
  reading (core/channel.py), TCP pushes back, and the PUB drops what that pipe cannot
  take. nng's SUB keeps reading and drops its oldest queued message instead.

Extra fields (cooked): ``topics`` (a set of bytes, non-empty exactly in ``subscribed``),
``_prefixes`` (the same as a tuple, for ``bytes.startswith``), ``_everything`` (the empty
topic is one of them: no need to look at bodies); ``contexts`` (the open ``SubContext``s).

Contexts (``sock.context()``, machine ``sub_ctx``): each has topics of its own (the same
fields and actions, ``_Topics``) and a receive queue of its own (a channel: see
core/user_context.py), bounded by its ``recv_buffer``. Every message read is offered to
every context first (``_to_contexts``), then filtered for the socket's own queue; a
message no one (socket or context) wants counts once as ``dropped_unmatched``. A full
context queue loses a message for that context only (``dropped_context_full``), never
pausing the pipe: a slow context cannot slow the others, nor the socket. Its
``prefer_new`` (nng's sub:prefnew, default True) says which message it loses: its oldest
queued one (True) or the new one (False).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust._generated.sub import SubFSM
from scaproust._generated.sub_ctx import SubCtxFSM
from scaproust._generated.sub_raw import SubRawFSM
from scaproust.core.guard import facade_call
from scaproust.core.policy import ContextPolicy, Policy
from scaproust.core.stats import DROPPED_CONTEXT_FULL, DROPPED_UNMATCHED, PURGED_UNMATCHED
from scaproust.errors import Closed
from scaproust.protocols._base import ProtocolBase

if TYPE_CHECKING:
    from collections.abc import Callable

    from scaproust.core.channel import Channel
    from scaproust.core.context import Context
    from scaproust.core.message import Item
    from scaproust.core.options import Options
    from scaproust.core.pipe import Pipe
    from scaproust.core.stats import Stats


def topic_bytes(topic: str | bytes | bytearray | memoryview) -> bytes:
    """A topic as bytes: str is encoded as UTF-8, bytes-like objects are copied."""
    if type(topic) is bytes:
        return topic
    if isinstance(topic, str):
        return topic.encode("utf-8")
    try:
        return bytes(memoryview(topic))
    except TypeError:
        raise TypeError(f"a topic is bytes or str, not {type(topic).__name__}") from None


class SubRaw(SubRawFSM, ProtocolBase):
    """Raw SUB protocol machine: every message, unfiltered."""


class _Topics:
    """Topics and their matching: what the socket's and its contexts' machines share."""

    def __init__(self) -> None:
        self.topics: set[bytes] = set()
        self._prefixes: tuple[bytes, ...] = ()
        self._everything = False

    # guards

    def is_subscribed(self, topic: bytes) -> bool:
        return topic in self.topics

    def is_last_topic(self, topic: bytes) -> bool:
        return len(self.topics) == 1 and topic in self.topics

    # actions

    def add_topic(self, topic: bytes) -> None:
        self.topics.add(topic)
        self._topics_changed()

    def remove_topic(self, topic: bytes) -> None:
        self.topics.remove(topic)
        self._topics_changed()

    def refuse_unknown_topic(self, topic: bytes) -> None:
        raise ValueError(f"not subscribed to topic {topic!r}")

    def _topics_changed(self) -> None:
        self._prefixes = tuple(sorted(self.topics))
        self._everything = b"" in self.topics


class Sub(SubFSM, _Topics, ProtocolBase):
    """Cooked SUB protocol machine."""

    def __init__(self, ctx: Context) -> None:
        ProtocolBase.__init__(self, ctx)
        _Topics.__init__(self)
        self.contexts: list[SubContext] = []

    def deliver_matching(self, pipe: Pipe, msgs: list[bytes]) -> None:
        untaken = self._to_contexts(pipe, msgs) if self.contexts else msgs
        if not self._everything:
            prefixes = self._prefixes
            matching = [msg for msg in msgs if msg.startswith(prefixes)]
            if untaken is msgs:
                unmatched = len(msgs) - len(matching)
            else:  # what a context took is not unmatched
                unmatched = sum(1 for msg in untaken if not msg.startswith(prefixes))
            if unmatched:
                self.ctx.stats.count(DROPPED_UNMATCHED, unmatched)
            if not matching:
                return
            msgs = matching
        self.ctx.deliver(msgs, pipe.recv_priority)

    def discard_unmatched(self, pipe: Pipe, msgs: list[bytes]) -> None:
        untaken = self._to_contexts(pipe, msgs) if self.contexts else msgs
        if untaken:
            self.ctx.stats.count(DROPPED_UNMATCHED, len(untaken))

    # ------------------------------------------------------------------ contexts

    @facade_call
    def open_context(self, ctx: Context) -> SubContext:
        """A new context with no topic, whose messages go through ``ctx``."""
        if self.state == "closed":
            raise Closed("socket is closed")
        context = SubContext(ctx, self)
        self.contexts.append(context)
        return context

    def _to_contexts(self, pipe: Pipe, msgs: list[bytes]) -> list[bytes]:
        """Offer each message to every context; return those none of them took."""
        untaken = []
        contexts = self.contexts
        for msg in msgs:
            taken = False
            for context in contexts:
                if context._wants(msg):
                    context.evt_message(pipe, msg)
                    taken = True
            if not taken:
                untaken.append(msg)
        return untaken

    def close_contexts(self) -> None:
        for context in list(self.contexts):
            context.cmd_close()


class SubContext(SubCtxFSM, _Topics):
    """One context of a cooked SUB, in the I/O thread (machine ``sub_ctx``).

    Fields: those of ``_Topics``; ``ctx`` (its own ``core.context.Context``: its queue and
    options, so its ``recv_buffer``), ``parent`` (the socket's ``Sub``), ``prefer_new``
    (set by the facade: which message a full queue loses).
    """

    def __init__(self, ctx: Context, parent: Sub) -> None:
        _Topics.__init__(self)
        self.ctx = ctx
        self.parent = parent
        self.prefer_new = True

    def __repr__(self) -> str:
        return f"<SubContext {self.state}>"

    def _wants(self, msg: bytes) -> bool:
        """Whether this context wants ``msg`` (no state change): asked by the socket."""
        return self.state == "subscribed" and (self._everything or msg.startswith(self._prefixes))

    def matches(self, pipe: Pipe, msg: bytes) -> bool:
        return self._everything or msg.startswith(self._prefixes)

    def enqueue(self, pipe: Pipe, msg: bytes) -> None:
        ctx = self.ctx
        if ctx.queued() >= ctx.options.recv_buffer:
            ctx.stats.count(DROPPED_CONTEXT_FULL)
            if not self.prefer_new or not ctx.drop_oldest():
                return  # the new message is the one lost
        self.ctx.deliver([msg], pipe.recv_priority)

    def release(self) -> None:
        if self in self.parent.contexts:
            self.parent.contexts.remove(self)

    def refuse_closed(self, topic: bytes) -> None:
        raise Closed("context is closed")


class SubPolicy(Policy):
    """The cooked SUB's topics as the user's thread sees them: purges the receive queue.

    The I/O thread filters with its own set (``Sub.topics``), the reference; this copy only
    drops, at recv time, messages queued before an unsubscribe that match no topic left.
    ``subscribe``/``unsubscribe`` run one at a time under ``lock``, so both sets always hold
    the same topics between two calls: a topic is added here before the I/O thread can
    deliver a message for it, and removed here only once the I/O thread has accepted the
    unsubscribe (which raises ValueError for an unknown topic).
    """

    def __init__(self, channel: Channel, options: Options,
                 stats: Stats | None = None) -> None:
        super().__init__(channel, options, stats)
        self._topics: tuple[bytes, ...] = ()
        # Until the first unsubscribe every queued message matches a topic we still have:
        # ``plain_recv`` (core/policy.py) stays True until then.

    def subscribe(self, topic: bytes | str, run: Callable[[bytes], object]) -> None:
        """Add ``topic``; ``run(topic)`` asks the I/O thread to do the same."""
        topic = topic_bytes(topic)
        with self.lock:
            if topic not in self._topics:
                self._topics += (topic,)
            run(topic)

    def unsubscribe(self, topic: bytes | str, run: Callable[[bytes], object]) -> None:
        """Remove ``topic``; ``run(topic)`` asks the I/O thread first, and raises for an
        unknown topic."""
        topic = topic_bytes(topic)
        with self.lock:
            run(topic)
            self._topics = tuple(t for t in self._topics if t != topic)
            self.plain_recv = False  # queued messages may now match no topic left
            # And they go now: left for recv() to drop, one queued before the unsubscribe
            # came back if the topic was subscribed again first (nng drops it at once).
            topics = self._topics
            stale = self.channel.purge_inbox(keep=lambda item: item.startswith(topics))  # type: ignore[union-attr]
        if stale:
            self.stats.count_from_caller(PURGED_UNMATCHED, stale)

    def incoming(self, item: Item) -> Item | None:
        # A cooked SUB's items are bodies (bytes).
        if not self.plain_recv and not item.startswith(self._topics):  # type: ignore[union-attr]
            self.stats.count_from_caller(PURGED_UNMATCHED)  # queued before its topic went
            return None
        return item


class SubContextPolicy(ContextPolicy, SubPolicy):
    """A SUB context's caller-side half: its topics, as the socket's policy keeps them
    (purging its queue of what an unsubscribe leaves unmatched), its queue its own."""

    own_machine = True
