"""PUSH and PULL against their reference models (WIRE.md, "PUSH", "PULL").

PUSH model: every message the user sent goes out exactly once, in the order sent, to one
attached pipe that has room, of the best send priority among those with room, fairly
(round robin: ``RoundRobin``); while no pipe has room messages wait, in order, and send
blocks (credit = the free slots of the pipes, none while messages wait); nothing goes to a
removed pipe; what a PULL sends to a PUSH is discarded.

PULL model: every frame is delivered exactly once, as it came, at its pipe's recv
priority (the user gets the best priority first); a PULL never sends, never blocks.
"""

from __future__ import annotations

from collections import deque

from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.protocols.pull import Pull
from scaproust.protocols.push import Push

from ._harness import ProtocolHarness, Reference, RoundRobin, live, model_test, pipes

FRAMES = st.lists(st.binary(max_size=4), min_size=1, max_size=3)


class PushReference(Reference):
    bounded = True

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.waiting: deque[bytes] = deque()
        self.rr = RoundRobin()
        self.sent: set[bytes] = set()

    def flush(self, step) -> None:
        while self.waiting and self.best():
            body = self.waiting.popleft()
            candidates = self.best()
            pipe = self.send(step, candidates, body)
            self.rr.chose(pipe, candidates)
            assert body not in self.sent, f"{body!r} sent twice"
            self.sent.add(body)

    def added(self, pipe, step) -> None:
        super().added(pipe, step)
        self.flush(step)

    def removed(self, pipe, step) -> None:
        super().removed(pipe, step)
        self.rr.forget(pipe)

    def readied(self, pipe, step) -> None:
        self.flush(step)

    def received(self, pipe, payloads, step) -> None:
        pass  # discarded: nothing delivered, the pipe stays

    def drained(self, item, step) -> None:
        self.waiting.append(item)
        self.flush(step)

    def closed(self, step) -> None:
        self.waiting.clear()

    def capacity(self) -> int:
        return 0 if self.waiting else sum(self.free[p] for p in self.with_room())

    def check(self) -> None:
        assert not (self.waiting and self.best()), "messages wait while a pipe has room"
        assert self.h.ctx.delivered == [], "a PUSH delivered something"


class PushMachine(ProtocolHarness):
    TABLE = PROTOCOL = "push"
    MACHINE = Push
    MODEL = PushReference

    @rule()
    @live
    def send(self):
        self.user_send(self.body())

    @rule()
    @live
    def send_queued(self):
        """The user's send is accepted, the I/O thread takes it later (drain_queued)."""
        self.user_send(self.body(), drain=False)

    @rule(count=st.integers(2, 5))
    @live
    def burst(self, count):
        """A burst of sends the I/O thread takes as one batch (``cmd_send_many``): as many
        as the credit allows are accepted, then handed over in one event."""
        for _ in range(count):
            self.user_send(self.body(), drain=False)
        self.drain(batched=True)

    @rule(pipe=pipes, frames=FRAMES)
    @live
    def stray_frames(self, pipe, frames):
        """A PULL peer writes to the PUSH."""
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, frames)
            self.finish_step(f"evt_pipe_recv({pipe.name})", self.model.received, pipe, frames)


class PullReference(Reference):
    sends = False

    def received(self, pipe, payloads, step) -> None:
        for payload in payloads:
            self.deliver(step, payload, pipe)

    def drained(self, item, step) -> None:
        raise AssertionError("a PULL cannot send")

    def check(self) -> None:
        assert all(not pipe.sent for pipe in self.order), "a PULL sent something"


class PullMachine(ProtocolHarness):
    TABLE = PROTOCOL = "pull"
    MACHINE = Pull
    MODEL = PullReference

    @rule(pipe=pipes, frames=FRAMES)
    @live
    def deliver(self, pipe, frames):
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, frames)
            self.finish_step(f"evt_pipe_recv({pipe.name})", self.model.received, pipe, frames)

    @rule()
    @live
    def recv(self):
        self.user_recv()


TestPush = model_test(PushMachine)
TestPull = model_test(PullMachine)
