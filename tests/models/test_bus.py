"""BUS, cooked and raw, against its reference model (WIRE.md, "BUS").

Model (``BusReference``):
- each message the user sends goes, once, to every attached pipe that has room now, body
  only; a pipe with no room misses it; send never blocks; priorities play no part;
- every frame received is delivered (at its pipe's recv priority) and never sent on: no
  forwarding, no echo (nothing is ever sent but what the user sends);
- raw: a frame is delivered as ``Message(body, hop word of its pipe)``, a local-only
  header; a message sent with a header whose first word names a pipe goes to every pipe
  with room but that one (so sending back what was received never echoes it), and the
  header is never sent.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.core.message import Message
from scaproust.protocols.bus import Bus, BusRaw

from ._harness import (
    BIG_WORD,
    ProtocolHarness,
    Reference,
    body_of,
    hop,
    live,
    model_test,
    pipes,
    request_id,
)


class BusReference(Reference):
    raw = False

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.headers: list[bytes] = []  # raw: the headers the user received

    def drained(self, item, step) -> None:
        skip = None
        if self.raw and type(item) is not bytes and len(item.header) >= 4:
            (skip,) = BIG_WORD.unpack_from(item.header)
        targets = [p for p in self.with_room() if p.id != skip]
        step.expect_broadcast(targets, body_of(item))
        for pipe in targets:
            self.free[pipe] -= 1

    def received(self, pipe, payloads, step) -> None:
        for payload in payloads:
            self.deliver(step, Message(payload, hop(pipe.id)) if self.raw else payload, pipe)

    def recv(self, got) -> None:
        super().recv(got)
        if got[0] == "item" and self.raw:
            self.headers.append(got[1].header)


class BusRawReference(BusReference):
    raw = True


class BusMachine(ProtocolHarness):
    TABLE = PROTOCOL = "bus"
    MACHINE = Bus
    MODEL = BusReference

    @rule(with_header=st.booleans(), queued=st.booleans())
    @live
    def send(self, with_header, queued):
        body = self.body()
        # A header on a cooked bus is ignored; on a raw one it names the pipe to skip.
        item = Message(body, hop(self.attached[0].id) if self.attached else b"\x00") \
            if with_header else body
        self.user_send(item, drain=not queued)

    @rule(pipe=pipes, payloads=st.lists(st.binary(max_size=3), min_size=1, max_size=3))
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


class BusRawMachine(BusMachine):
    TABLE = "bus_raw"
    MACHINE = BusRaw
    MODEL = BusRawReference

    @rule(pick=st.integers(0, 7), queued=st.booleans())
    @live
    def send_back(self, pick, queued):
        """A device sends what it received back onto the bus: never to where it came from."""
        headers = self.model.headers
        header = headers[pick % len(headers)] if headers else request_id(1)
        self.user_send(Message(self.body(), header), drain=not queued)


TestBus = model_test(BusMachine)
TestBusRaw = model_test(BusRawMachine)
