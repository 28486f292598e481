"""PAIR v0 and PAIR v1 (cooked and raw) against their reference model (WIRE.md, "PAIR v0",
"PAIR v1").

Model (``PairReference``):
- one peer: the first pipe while there is none; any pipe added while there is one is
  closed, the peer stays; so at most one pipe is ever usable (never two peers);
- every message the user sent goes to the peer exactly once, in order; while there is no
  peer, or it has no room, messages wait, and send blocks (credit = the peer's free slots,
  none while messages wait); messages that waited go to the next peer;
- only the peer's frames are delivered (at its recv priority); a closed pipe's are not;
- PAIR v1: every message leaves behind a hop count word: 1 when cooked, the user's header
  plus one when raw (a raw header that is not one word under 0xff is refused: nothing is
  sent); a frame without a whole word, or with a word over 0xff, closes the pipe (the
  frames before it in the same read are delivered) and the peer is forgotten at once; a
  word over ``ttl`` (8) drops that frame, the pipe stays; delivered: the body (cooked) or
  ``Message(body, word as received)`` (raw).
"""

from __future__ import annotations

from collections import deque

from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.core.message import Message
from scaproust.protocols.pair import Pair
from scaproust.protocols.pair1 import Pair1, Pair1Raw

from ._harness import (
    BIG_WORD,
    BODIES,
    ProtocolHarness,
    Reference,
    TtlOption,
    body_of,
    live,
    model_test,
    pipes,
    word,
)


class PairReference(Reference):
    bounded = True
    #: None: PAIR v0 (no header); "cooked" / "raw": PAIR v1.
    v1: str | None = None

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.peer = None
        self.waiting: deque = deque()

    def frame(self, item):
        """(body, header) on the wire, or None: refused."""
        if self.v1 is None:
            return body_of(item), b""
        if self.v1 == "cooked":
            return body_of(item), word(1)
        if type(item) is bytes or len(item.header) != 4:
            return None
        (hops,) = BIG_WORD.unpack(item.header)
        return (item.body, word(hops + 1)) if hops < 0xFF else None

    def flush(self, step) -> None:
        while self.waiting and self.peer is not None and self.free[self.peer] > 0:
            body, header = self.frame(self.waiting.popleft())
            self.send(step, {self.peer}, body, header)

    def added(self, pipe, step) -> None:
        super().added(pipe, step)
        if self.peer is None:
            self.peer = pipe
            self.flush(step)
        else:
            self.reject(step, pipe)

    def removed(self, pipe, step) -> None:
        super().removed(pipe, step)
        if pipe is self.peer:
            self.peer = None

    def readied(self, pipe, step) -> None:
        if pipe is self.peer:
            self.flush(step)

    def received(self, pipe, payloads, step) -> None:
        if pipe is not self.peer:
            return  # a pipe being closed: nothing it sends counts
        for payload in payloads:
            if self.v1 is None:
                self.deliver(step, payload, pipe)
                continue
            hops = BIG_WORD.unpack_from(payload)[0] if len(payload) >= 4 else None
            if hops is None or hops > 0xFF:
                self.reject(step, pipe)
                self.peer = None
                return
            if hops > self.ttl:
                continue
            body = payload[4:]
            self.deliver(step, body if self.v1 == "cooked" else Message(body, payload[:4]), pipe)

    def drained(self, item, step) -> None:
        if self.frame(item) is not None:
            self.waiting.append(item)
            self.flush(step)

    def closed(self, step) -> None:
        self.waiting.clear()

    def capacity(self) -> int:
        if self.peer is None or self.waiting:
            return 0
        return self.free[self.peer]

    def check(self) -> None:
        usable = self.usable()
        assert usable == ([] if self.peer is None else [self.peer]), (
            f"usable pipes {[p.name for p in usable]}: PAIR has one peer at most")


class Pair1Reference(PairReference):
    v1 = "cooked"


class Pair1RawReference(PairReference):
    v1 = "raw"


#: Frames: any bytes, or a hop count word (fine, deep, over 0xff) and a body.
HOP_FRAMES = st.one_of(
    st.builds(lambda hops, body: word(hops) + body,
              st.sampled_from([0, 1, 2, 8, 9, 0xFE, 0xFF, 0x100, 0x01000000]), BODIES),
    st.binary(max_size=5),
)


class PairMachine(ProtocolHarness):
    TABLE = PROTOCOL = "pair"
    MACHINE = Pair
    MODEL = PairReference

    @rule()
    @live
    def send(self):
        self.user_send(self.body())

    @rule()
    @live
    def send_queued(self):
        self.user_send(self.body(), drain=False)

    @rule()
    @live
    def recv(self):
        self.user_recv()

    @rule(pipe=pipes, payloads=st.lists(st.binary(max_size=4), min_size=1, max_size=3))
    @live
    def deliver(self, pipe, payloads):
        """Frames arrive on a pipe: the peer, or one being closed (stray)."""
        self.deliver_frames(pipe, payloads)

    def deliver_frames(self, pipe, payloads) -> None:
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)


class Pair1Machine(TtlOption, PairMachine):
    TABLE = PROTOCOL = "pair1"
    MACHINE = Pair1
    MODEL = Pair1Reference

    @rule(pipe=pipes, payloads=st.lists(HOP_FRAMES, min_size=1, max_size=3))
    @live
    def deliver(self, pipe, payloads):
        """Frames with a hop count (fine, deep, over 0xff, none) arrive on a pipe."""
        self.deliver_frames(pipe, payloads)


GOOD_HEADERS = [word(0), word(1), word(7), word(0xFE)]
BAD_HEADERS = [None, word(0xFF), word(0x100), b"", b"\x00\x00\x01", word(1) + word(1)]


class Pair1RawMachine(Pair1Machine):
    TABLE = "pair1_raw"
    MACHINE = Pair1Raw
    MODEL = Pair1RawReference
    def raw_item(self, pick: int):
        """A message with a good hop count header, or one the machine must refuse (bytes,
        or a header that is not one word under 0xff)."""
        headers = GOOD_HEADERS + BAD_HEADERS
        header = headers[pick % len(headers)]
        body = self.body()
        return body if header is None else Message(body, header)

    @rule(pick=st.integers(0, 9))
    @live
    def send(self, pick):
        self.user_send(self.raw_item(pick))

    @rule(pick=st.integers(0, 9))
    @live
    def send_queued(self, pick):
        self.user_send(self.raw_item(pick), drain=False)


TestPair = model_test(PairMachine)
TestPair1 = model_test(Pair1Machine)
TestPair1Raw = model_test(Pair1RawMachine)


def test_pair1_raw_a_refused_send_keeps_the_credit():
    """Regression (found by TestPair1Raw, fixed in 2875e43): a raw PAIR v1 send refused
    for its header used up a unit of send credit and the machine did not restate its
    capacity, so with a peer of one free slot the next send blocked (WouldBlock) although
    the peer had room. Expected: credit 1 after the refusal, nothing sent."""
    state = Pair1RawMachine()
    state.add_pipe(free=1, recv_priority=8, send_priority=8)
    state.model_agrees()
    state.send(pick=len(GOOD_HEADERS))  # bytes: refused
    state.model_agrees()
    assert state.channel.credit == 1
    state.send(pick=0)  # a good header: goes out
    state.model_agrees()
    state.teardown()
