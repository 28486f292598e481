"""REQ and REP, cooked and raw, against their reference models (WIRE.md, "Request / reply
header", "REQ", "REP").

Cooked REQ model (``ReqReference``):
- every request the user sends carries a fresh id word (most significant bit set) and
  replaces the one outstanding; it goes at once to one pipe with room, of the best send
  priority, round robin; with none, it waits and goes to the first pipe that gets room;
- it is resent, the same bytes, ``resend_interval`` after each send (fake clock), to a
  pipe chosen the same way, or waits if none has room; when the pipe that carried it is
  removed it is resent at once if another pipe has room; never more than one timer,
  armed at or before the resend deadline;
- a reply counts only if its first word is the outstanding id: it is delivered once as
  ``Message(body, id word)`` and ends the request (no more resends); any other reply is
  dropped silently; a payload shorter than a word closes its pipe;
- the user receives exactly one reply per request, only the current one; recv with no
  request outstanding is ``BadState``; a new request throws away replies not yet taken.

Raw REQ model (``ReqRawReference``): PUSH's delivery rules (each message once, in order,
to one pipe, best priority, round robin, waiting while no pipe has room, send blocking)
with the user's header as given; replies split at the first word with the high bit
(``split_reference``) as deep as any ttl allows (255 words, WIRE.md R8), malformed ones
close the pipe; no timers.

REP (cooked and raw): ``_harness.BacktraceReference``.
"""

from __future__ import annotations

from collections import deque

from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.core.message import Message
from scaproust.errors import BadState, WouldBlock
from scaproust.protocols.rep import Rep, RepPolicy, RepRaw
from scaproust.protocols.req import Req, ReqPolicy, ReqRaw

from ._harness import (
    BACKTRACED,
    BODIES,
    CookedAnswering,
    CookedBacktrace,
    ProtocolHarness,
    RawAnswering,
    RawBacktrace,
    Reference,
    RoundRobin,
    TtlOption,
    body_of,
    hop,
    live,
    model_test,
    pipes,
    request_id,
    split_reference,
    word,
)

RESEND = 1.0

# ============================================================================ REQ, cooked


class ReqReference(Reference):
    bounded = True  # credit: the free slots of the pipes, as PUSH

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.request: tuple[bytes, bytes] | None = None  # (id word, body) the wire carries
        self.carrier = None
        self.resend_at: float | None = None
        self.words: list[bytes] = []  # every id word the user's requests got
        self.user_word: bytes | None = None  # the request the user waits a reply to
        self.rr = RoundRobin()

    def now(self) -> float:
        return self.h.clock()

    def try_send(self, step, at: float) -> None:
        """The request goes to a pipe now, or waits for one."""
        self.carrier = self.resend_at = None
        candidates = self.best()
        if candidates:
            word_, body = self.request
            pipe = self.send(step, candidates, body, word_, at)
            self.rr.chose(pipe, candidates)
            self.carrier, self.resend_at = pipe, at + self.options.resend_interval

    def waiting(self) -> bool:
        return self.request is not None and self.carrier is None

    # the user
    def accepted(self, item) -> None:
        assert isinstance(item, Message) and len(item.header) == 4, f"request {item!r}"
        assert item.header[0] & 0x80, f"request id word {item.header!r} without its high bit"
        assert item.header not in self.words, f"request id {item.header!r} used twice"
        self.words.append(item.header)
        self.user_word = item.header
        self.inbox.clear()  # replies not taken belong to older requests now

    def recv(self, got) -> None:
        if self.user_word is None:
            assert got == ("error", BadState), f"recv with no request outstanding got {got}"
            return
        while True:
            reply = self.inbox.pop()
            if reply is None:
                assert got == ("error", WouldBlock), f"recv got {got}, expected nothing"
                return
            if reply.header == self.user_word:
                assert got == ("item", reply), f"recv got {got}, expected {reply!r}"
                self.user_word = None
                return

    # the machine
    def drained(self, item, step) -> None:
        self.request = (item.header, item.body)
        self.try_send(step, self.now())

    def added(self, pipe, step) -> None:
        super().added(pipe, step)
        if self.waiting():
            self.try_send(step, self.now())

    def readied(self, pipe, step) -> None:
        if self.waiting():
            self.try_send(step, self.now())

    def removed(self, pipe, step) -> None:
        super().removed(pipe, step)
        self.rr.forget(pipe)
        if pipe is self.carrier:
            self.try_send(step, self.now())  # at once, if another pipe has room

    def advanced(self, until, step) -> None:
        while self.resend_at is not None and self.resend_at <= until:
            self.try_send(step, self.resend_at)

    def received(self, pipe, payloads, step) -> None:
        if pipe in self.closing:
            return
        for payload in payloads:
            if len(payload) < 4:
                self.reject(step, pipe)
                return
            if self.request is not None and payload[:4] == self.request[0]:
                self.deliver(step, Message(payload[4:], payload[:4]), pipe)
                self.request = self.carrier = self.resend_at = None

    def closed(self, step) -> None:
        self.request = self.carrier = self.resend_at = None

    def capacity(self) -> int:
        return sum(self.free[p] for p in self.with_room())

    def timers(self) -> list[float]:
        return [] if self.resend_at is None else [self.resend_at]

    def check(self) -> None:
        if self.waiting():
            assert not self.best(), "the request waits while a pipe has room"


REPLY_KINDS = st.sampled_from(["current", "current", "user", "older", "foreign", "short",
                               "no_id", "empty"])


class ReqMachine(ProtocolHarness):
    TABLE = PROTOCOL = "req"
    MACHINE = Req
    POLICY = ReqPolicy
    MODEL = ReqReference
    OPTIONS = {"resend_interval": RESEND}

    @rule()
    @live
    def send(self):
        self.user_send(self.body(b"q"))

    @rule()
    @live
    def send_queued(self):
        self.user_send(self.body(b"q"), drain=False)

    def deadlines(self) -> list[float]:
        # The resend deadline is kept lazily: one loop timer at most, armed at or before
        # it, and one that outlived its request may still be pending (it lapses).
        timers = self.loop.pending_timers()
        assert len(timers) <= 1, f"{len(timers)} resend timers"
        due = self.proto.resend.due
        if due is None:
            return []
        assert timers and timers[0].when <= due, "the resend timer fires after the deadline"
        return [due]

    @rule()
    @live
    def recv(self):
        self.user_recv()

    @rule(seconds=st.sampled_from([1.0, 0.5, 2.5]))
    @live
    def set_resend_interval(self, seconds):
        """The option changes; the next (re)send uses it (the pending timer keeps its time)."""
        self.options.set("resend_interval", seconds)

    def reply_payload(self, kind: str, body: bytes) -> bytes:
        model = self.model
        words = model.words
        if kind == "current" and model.request is not None:
            return model.request[0] + body
        if kind == "user" and model.user_word is not None:
            return model.user_word + body
        if kind == "older" and len(words) > 1:
            return words[-2] + body
        if kind == "short":
            return body[:3]
        if kind == "no_id":
            return hop(7) + body
        if kind == "empty":
            return b""
        return request_id(0x5EED) + body  # a reply to a request nobody made

    @rule(pipe=pipes, replies=st.lists(st.tuples(REPLY_KINDS, BODIES), min_size=1, max_size=3))
    @live
    def deliver(self, pipe, replies):
        """Replies (current, stale, foreign, malformed) arrive on a pipe."""
        if pipe in self.attached:
            payloads = [self.reply_payload(kind, body) for kind, body in replies]
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)


# ============================================================================ REQ, raw


class ReqRawReference(Reference):
    bounded = True

    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.waiting: deque = deque()
        self.rr = RoundRobin()

    def flush(self, step) -> None:
        while self.waiting and self.best():
            item = self.waiting.popleft()
            candidates = self.best()
            header = b"" if type(item) is bytes else item.header
            pipe = self.send(step, candidates, body_of(item), header)
            self.rr.chose(pipe, candidates)

    def added(self, pipe, step) -> None:
        super().added(pipe, step)
        self.flush(step)

    def removed(self, pipe, step) -> None:
        super().removed(pipe, step)
        self.rr.forget(pipe)

    def readied(self, pipe, step) -> None:
        self.flush(step)

    def drained(self, item, step) -> None:
        self.waiting.append(item)
        self.flush(step)

    def received(self, pipe, payloads, step) -> None:
        if pipe in self.closing:
            return
        for payload in payloads:
            verdict = split_reference(payload, 255)  # any depth a ttl allows (WIRE.md R8)
            if verdict[0] == "malformed":
                self.reject(step, pipe)
                return
            if verdict[0] == "ok":
                self.deliver(step, Message(verdict[2], verdict[1]), pipe)

    def closed(self, step) -> None:
        self.waiting.clear()

    def capacity(self) -> int:
        return 0 if self.waiting else sum(self.free[p] for p in self.with_room())

    def check(self) -> None:
        assert not (self.waiting and self.best()), "messages wait while a pipe has room"


HEADERS = st.sampled_from([request_id(1), hop(3) + request_id(2), b"", word(9)])
class ReqRawMachine(TtlOption, ProtocolHarness):
    TABLE = "req_raw"
    PROTOCOL = "req"
    MACHINE = ReqRaw
    MODEL = ReqRawReference

    @rule(header=HEADERS, as_bytes=st.booleans())
    @live
    def send(self, header, as_bytes):
        body = self.body(b"q")
        self.user_send(body if as_bytes else Message(body, header))

    @rule(header=HEADERS)
    @live
    def send_queued(self, header):
        self.user_send(Message(self.body(b"q"), header), drain=False)

    @rule()
    @live
    def recv(self):
        self.user_recv()

    @rule(pipe=pipes, payloads=st.lists(BACKTRACED, min_size=1, max_size=3))
    @live
    def deliver(self, pipe, payloads):
        if pipe in self.attached:
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)


# ============================================================================ REP, cooked and raw


class RepMachine(CookedAnswering):
    TABLE = PROTOCOL = "rep"
    MACHINE = Rep
    POLICY = RepPolicy
    MODEL = CookedBacktrace


class RepRawMachine(RawAnswering):
    TABLE = "rep_raw"
    PROTOCOL = "rep"
    MACHINE = RepRaw
    MODEL = RawBacktrace


TestReq = model_test(ReqMachine)


def test_req_keeps_waiting_when_a_pipe_it_closed_reports_room():
    """Regression (found by TestReq, fixed in 2875e43): a waiting cooked REQ got
    evt_pipe_ready from a pipe it had closed for a malformed reply; the guard looked at
    that pipe's room, the pipe choice no longer knew it, and cmd_send on None crashed the
    socket (AttributeError). Expected: the request keeps waiting."""
    state = ReqMachine()
    pipe = state.add_pipe(free=1, recv_priority=8, send_priority=8)
    state.model_agrees()
    state.send_queued()  # the request is accepted; the I/O thread takes it later
    state.model_agrees()
    state.deliver(pipe=pipe, replies=[("short", b"")])  # malformed: pipe closed (deferred)
    state.model_agrees()
    state.drain_queued()  # no usable pipe: the request waits
    state.model_agrees()
    state.make_ready(pipe=pipe, slots=1)  # the closing pipe flushed in the same loop pass
    state.model_agrees()
    assert state.proto.state == "waiting"
    state.teardown()
TestReqRaw = model_test(ReqRawMachine)
TestRep = model_test(RepMachine)
TestRepRaw = model_test(RepRawMachine)
