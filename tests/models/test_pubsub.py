"""PUB and SUB (cooked and raw) against their reference models (WIRE.md, "PUB", "SUB").

PUB model (``PubReference``): each message goes, once, to every attached pipe that has room
now, body only (a header is not sent); a pipe with no room misses it; send never blocks;
priorities play no part; a frame arriving at a PUB closes that pipe (a SUB never writes),
and nothing more is published to it.

SUB model (``SubReference``): the user's topics are a set of byte strings; a frame is
delivered (at its pipe's recv priority) when its body starts with one of them, the empty
topic matching everything and no topic matching nothing; the user receives exactly the
delivered messages that still match a topic when received (an unsubscribe purges what no
topic left matches), best recv priority first; unsubscribing from a topic not subscribed
is a ``ValueError``; a SUB never sends. The machine is ``subscribed`` exactly while it has
a topic. Raw SUB: every frame is delivered, unfiltered.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.core.message import Message
from scaproust.errors import WouldBlock
from scaproust.protocols.pub import Pub
from scaproust.protocols.sub import Sub, SubPolicy, SubRaw

from ._harness import ProtocolHarness, Reference, body_of, live, model_test, pipes

# ============================================================================ PUB


class PubReference(Reference):
    def drained(self, item, step) -> None:
        self.broadcast(step, body_of(item))

    def received(self, pipe, payloads, step) -> None:
        if pipe not in self.closing:
            self.reject(step, pipe)

    def check(self) -> None:
        assert self.h.ctx.delivered == [], "a PUB delivered something"


class PubMachine(ProtocolHarness):
    TABLE = PROTOCOL = "pub"
    MACHINE = Pub
    MODEL = PubReference

    @rule(with_header=st.booleans(), queued=st.booleans())
    @live
    def send(self, with_header, queued):
        body = self.body()
        self.user_send(Message(body, b"\x00\x00\x00\x07") if with_header else body,
                       drain=not queued)

    @rule(count=st.integers(2, 5))
    @live
    def burst(self, count):
        """A burst the I/O thread takes as one batch (``cmd_send_many``, one
        ``cmd_publish_many`` per pipe with room)."""
        for _ in range(count):
            self.user_send(self.body(), drain=False)
        self.drain(batched=True)

    @rule(pipe=pipes, payloads=st.lists(st.binary(max_size=3), min_size=1, max_size=2))
    @live
    def deliver(self, pipe, payloads):
        """A SUB peer writes to the PUB (forbidden: WIRE.md)."""
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)


# ============================================================================ SUB

TOPICS = st.sampled_from([b"", b"a", b"ab", b"b", "a", "\u00e9"])
FRAMES = st.lists(st.sampled_from([b"", b"a", b"ab", b"abc", b"b", b"ba", b"c",
                                   "\u00e9t\u00e9".encode()]), min_size=1, max_size=3)


def topic_bytes(topic) -> bytes:
    return topic.encode() if isinstance(topic, str) else topic


class SubReference(Reference):
    sends = False
    raw = False

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.topics: set[bytes] = set()

    def matches(self, body: bytes) -> bool:
        return self.raw or any(body.startswith(topic) for topic in self.topics)

    def received(self, pipe, payloads, step) -> None:
        for payload in payloads:
            if self.matches(payload):
                self.deliver(step, payload, pipe)

    def drained(self, item, step) -> None:
        raise AssertionError("a SUB cannot send")

    def recv(self, got) -> None:
        while True:
            item = self.inbox.pop()
            if item is None:
                assert got == ("error", WouldBlock), f"recv got {got}, expected nothing"
                return
            if self.matches(item):
                assert got == ("item", item), f"recv got {got}, expected {item!r}"
                return

    def check(self) -> None:
        assert all(not pipe.sent for pipe in self.order), "a SUB sent something"
        if not self.raw and not self.h.is_closed:
            assert (self.h.proto.state == "subscribed") == bool(self.topics), (
                f"state {self.h.proto.state} with topics {sorted(self.topics)}")


class SubRawReference(SubReference):
    raw = True


class SubMachine(ProtocolHarness):
    TABLE = PROTOCOL = "sub"
    MACHINE = Sub
    POLICY = SubPolicy
    MODEL = SubReference

    @rule(topic=TOPICS)
    @live
    def subscribe(self, topic):
        self.policy.subscribe(topic, self.proto.cmd_subscribe)
        self.model.topics.add(topic_bytes(topic))
        self.finish_step(f"subscribe({topic!r})", lambda step: None)

    @rule(topic=TOPICS)
    @live
    def unsubscribe(self, topic):
        try:
            self.policy.unsubscribe(topic, self.proto.cmd_unsubscribe)
        except ValueError:
            refused = True
        else:
            refused = False
        known = topic_bytes(topic) in self.model.topics
        assert refused == (not known), f"unsubscribe({topic!r}) refused={refused}, subscribed={known}"
        self.model.topics.discard(topic_bytes(topic))
        self.finish_step(f"unsubscribe({topic!r})", lambda step: None)

    @rule(pipe=pipes, payloads=FRAMES)
    @live
    def deliver(self, pipe, payloads):
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)

    @rule()
    @live
    def recv(self):
        self.user_recv()


class SubRawMachine(ProtocolHarness):
    TABLE = "sub_raw"
    PROTOCOL = "sub"
    MACHINE = SubRaw
    MODEL = SubRawReference

    deliver = SubMachine.deliver
    recv = SubMachine.recv


TestPub = model_test(PubMachine)
TestSub = model_test(SubMachine)
TestSubRaw = model_test(SubRawMachine)
