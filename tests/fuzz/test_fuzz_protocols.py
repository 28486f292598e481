"""Hostile payloads against every protocol's header parsing (issue 10, "Fuzzing"): REP and
RESPONDENT backtraces, REQ request ids, SURVEYOR survey ids, PAIR v1 and BUS hop counts,
raw and cooked. Whatever a peer's messages hold, the machine raises nothing (an exception
would fail the pipe's socket), and every message is accounted for: delivered to the user,
or dropped and counted under one of the ``dropped_*`` reasons of docs/OBSERVABILITY.md.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocols.fakes import FakePipe, RecordingContext

from scaproust import protocols
from scaproust.core.options import Options

#: Payloads a hostile peer might send: nothing, short junk, and header-shaped words (high
#: bit set or not, hop counts, the ends of backtraces) followed by a body.
WORD = st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n))
PAYLOAD = st.one_of(
    st.binary(max_size=12),
    st.tuples(st.lists(WORD, max_size=6), st.binary(max_size=8)).map(
        lambda t: b"".join(t[0]) + t[1]),
)


def receiving(raw: bool) -> list:
    return [pytest.param(info, id=f"{info.name}{'-raw' if raw else ''}")
            for info in protocols.ALL]


def dropped(ctx: RecordingContext) -> int:
    return sum(n for name, n in ctx.stats.snapshot().items() if name.startswith("dropped_"))


@pytest.mark.parametrize("raw", [False, True], ids=["cooked", "raw"])
@pytest.mark.parametrize("info", receiving(False))
@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(PAYLOAD, min_size=1, max_size=5), min_size=1, max_size=5))
def test_every_message_is_delivered_or_dropped_and_counted(info, raw, batches):
    ctx = RecordingContext()
    ctx.options = Options(info)
    machine = info.machine_class(raw)(ctx)
    pipe = FakePipe(free=64)
    machine.evt_pipe_added(pipe)
    sent = 0
    for msgs in batches:
        if ctx.rejected:
            break  # closed: the pipe itself drops (and counts) what it still reads
        machine.evt_pipe_recv(pipe, msgs)
        sent += len(msgs)
    assert len(ctx.delivered) + dropped(ctx) == sent, (ctx.delivered, ctx.stats.snapshot())
