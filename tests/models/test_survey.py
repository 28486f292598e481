"""SURVEYOR and RESPONDENT (cooked and raw) against their reference models (WIRE.md,
"SURVEYOR", "RESPONDENT", "Request / reply header").

Cooked SURVEYOR model (``SurveyorReference``):
- each survey carries a fresh id word (most significant bit set) and goes, once, to every
  attached pipe that has room now (a pipe without room misses it); send never blocks;
- the survey's deadline (``survey_deadline``) starts when the machine takes it; a new
  survey replaces the old one and its deadline; one timer at most, none without a survey;
- a response is split like a request (``split_reference``), as deep as any ttl allows
  (255 words): a malformed one closes its pipe; it is delivered as ``Message(body, id word)`` only if it
  answers the current survey before its deadline; others (older surveys, foreign ids,
  late ones) are dropped silently;
- the user receives only responses to the current survey, before the deadline; a recv
  before any survey or after the deadline is ``BadState``; a new survey throws away the
  responses not yet received.

Raw SURVEYOR model: every message to every pipe with room, header as given; every
well-formed response delivered with its header; no ids, no deadline, no timer.

RESPONDENT (cooked and raw): ``_harness.BacktraceReference``, as REP (WIRE.md,
"RESPONDENT": a REP whose stack is the survey's).
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule

from scaproust.core.message import Message
from scaproust.errors import BadState, WouldBlock
from scaproust.protocols.respondent import Respondent, RespondentPolicy, RespondentRaw
from scaproust.protocols.surveyor import Surveyor, SurveyorPolicy, SurveyorRaw

from ._harness import (
    BACKTRACED,
    BODIES,
    CookedAnswering,
    CookedBacktrace,
    ProtocolHarness,
    RawAnswering,
    RawBacktrace,
    Reference,
    TtlOption,
    body_of,
    hop,
    live,
    model_test,
    pipes,
    request_id,
    split_reference,
)

DEADLINE = 1.0

# ============================================================================ SURVEYOR, cooked


class SurveyorReference(Reference):
    def __init__(self, harness) -> None:
        super().__init__(harness)
        self.survey: bytes | None = None  # the machine's current survey id word
        self.ends: float | None = None  # and when its deadline falls
        self.words: list[bytes] = []
        self.user_word: bytes | None = None  # the survey the user collects responses to
        self.user_ends: float | None = None

    def now(self) -> float:
        return self.h.clock()

    def accepted(self, item) -> None:
        assert isinstance(item, Message) and len(item.header) == 4, f"survey {item!r}"
        assert item.header[0] & 0x80, f"survey id word {item.header!r} without its high bit"
        assert item.header not in self.words, f"survey id {item.header!r} used twice"
        self.words.append(item.header)
        self.user_word, self.user_ends = item.header, self.now() + self.options.survey_deadline
        self.inbox.clear()

    def drained(self, item, step) -> None:
        self.broadcast(step, item.body, item.header)
        self.survey, self.ends = item.header, self.now() + self.options.survey_deadline

    def advanced(self, until, step) -> None:
        if self.ends is not None and self.ends <= until:
            self.survey = self.ends = None

    def received(self, pipe, payloads, step) -> None:
        if pipe in self.closing:
            return
        for payload in payloads:
            verdict = split_reference(payload, 255)  # any depth a ttl allows (WIRE.md R8)
            if verdict[0] == "malformed":
                self.reject(step, pipe)
                return
            if verdict[0] == "ok" and self.survey is not None and verdict[1] == self.survey:
                self.deliver(step, Message(verdict[2], verdict[1]), pipe)

    def closed(self, step) -> None:
        self.survey = self.ends = None

    def recv(self, got) -> None:
        if self.user_ends is None or self.now() >= self.user_ends:
            assert got == ("error", BadState), f"recv with no survey running got {got}"
            return
        while True:
            item = self.inbox.pop()
            if item is None:
                assert got == ("error", WouldBlock), f"recv got {got}, expected nothing"
                return
            if item.header == self.user_word:
                assert got == ("item", item), f"recv got {got}, expected {item!r}"
                return

    def timers(self) -> list[float]:
        return [] if self.ends is None else [self.ends]


RESPONSE_KINDS = st.sampled_from(["current", "current", "user", "older", "foreign", "hops",
                                  "short", "bytes"])


class SurveyorMachine(TtlOption, ProtocolHarness):
    TABLE = PROTOCOL = "surveyor"
    MACHINE = Surveyor
    POLICY = SurveyorPolicy
    MODEL = SurveyorReference
    OPTIONS = {"survey_deadline": DEADLINE}

    @rule()
    @live
    def send(self):
        self.user_send(self.body(b"s"))

    @rule()
    @live
    def send_queued(self):
        self.user_send(self.body(b"s"), drain=False)

    @rule()
    @live
    def recv(self):
        self.user_recv()

    @rule(seconds=st.sampled_from([1.0, 0.5, 2.5]))
    @live
    def set_survey_deadline(self, seconds):
        """The option changes; the next survey uses it (a running one keeps its deadline)."""
        self.options.set("survey_deadline", seconds)

    def response(self, kind: str, body: bytes) -> bytes:
        model = self.model
        if kind == "current" and model.survey is not None:
            return model.survey + body
        if kind == "user" and model.user_word is not None:
            return model.user_word + body
        if kind == "older" and len(model.words) > 1:
            return model.words[-2] + body
        if kind == "hops" and model.survey is not None:
            return hop(3) + model.survey + body
        if kind == "short":
            return body[:3]
        if kind == "bytes":
            return body + body
        return request_id(0x5EED) + body

    @rule(pipe=pipes, responses=st.lists(st.tuples(RESPONSE_KINDS, BODIES), min_size=1,
                                         max_size=3))
    @live
    def deliver(self, pipe, responses):
        """Responses (current, stale, foreign, deep, malformed) arrive on a pipe."""
        if pipe in self.attached:
            payloads = [self.response(kind, body) for kind, body in responses]
            self.proto.evt_pipe_recv(pipe, payloads)
            self.finish_step(f"evt_pipe_recv({pipe.name}, {payloads!r})", self.model.received,
                             pipe, payloads)


# ============================================================================ SURVEYOR, raw


class SurveyorRawReference(Reference):
    def __init__(self, harness) -> None:
        super().__init__(harness)

    def drained(self, item, step) -> None:
        self.broadcast(step, body_of(item), b"" if type(item) is bytes else item.header)

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


class SurveyorRawMachine(TtlOption, ProtocolHarness):
    TABLE = "surveyor_raw"
    PROTOCOL = "surveyor"
    MACHINE = SurveyorRaw
    MODEL = SurveyorRawReference

    @rule(header=st.sampled_from([None, b"", request_id(5), hop(2) + request_id(6)]),
          queued=st.booleans())
    @live
    def send(self, header, queued):
        body = self.body(b"s")
        self.user_send(body if header is None else Message(body, header), drain=not queued)

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


# ============================================================================ RESPONDENT


class RespondentMachine(CookedAnswering):
    TABLE = PROTOCOL = "respondent"
    MACHINE = Respondent
    POLICY = RespondentPolicy
    MODEL = CookedBacktrace


class RespondentRawMachine(RawAnswering):
    TABLE = "respondent_raw"
    PROTOCOL = "respondent"
    MACHINE = RespondentRaw
    MODEL = RawBacktrace


TestSurveyor = model_test(SurveyorMachine)
TestSurveyorRaw = model_test(SurveyorRawMachine)
TestRespondent = model_test(RespondentMachine)
TestRespondentRaw = model_test(RespondentRawMachine)


@pytest.mark.parametrize("machine", [SurveyorMachine, SurveyorRawMachine])
def test_surveyor_forgets_a_pipe_it_closed(machine):
    """Regression (found by TestSurveyor and TestSurveyorRaw, fixed in 2875e43): a
    SURVEYOR kept using a pipe it had closed for a malformed response until the loop
    removed it: it broadcast the next survey to it, delivered what it sent next and closed
    it again. Expected: the closing pipe gets nothing more, and nothing from it counts."""
    state = machine()
    pipe = state.add_pipe(free=2, recv_priority=8, send_priority=8)
    state.model_agrees()
    send = state.send if machine is SurveyorMachine else lambda: state.send(None, False)
    send()
    state.model_agrees()
    if machine is SurveyorMachine:
        state.deliver(pipe=pipe, responses=[("short", b"")])
        state.model_agrees()
        state.deliver(pipe=pipe, responses=[("current", b"late")])
    else:
        state.deliver(pipe=pipe, payloads=[b""])
        state.model_agrees()
        state.deliver(pipe=pipe, payloads=[request_id(1) + b"late"])
    state.model_agrees()
    send()  # the closing pipe must not get this survey
    state.model_agrees()
    assert len(pipe.sent) == 1
    state.teardown()


def test_surveyor_closes_a_pipe_on_a_malformed_response_between_surveys():
    """Regression (found by TestSurveyor, fixed in 2875e43): with no survey running, a
    malformed response was counted as late and the pipe stayed open, although WIRE.md says
    ours closes the pipe on a malformed response (as it did while a survey ran; nng closes
    it in both cases). Expected: the pipe is closed."""
    state = SurveyorMachine()
    pipe = state.add_pipe(free=0, recv_priority=8, send_priority=8)
    state.model_agrees()
    state.deliver(pipe=pipe, responses=[("short", b"")])
    state.model_agrees()
    assert state.ctx.rejected == [pipe]
    state.teardown()
