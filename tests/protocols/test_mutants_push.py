"""Load balancing, as PUSH and raw REQ share it (protocols/_balance.py): send credit while
messages wait, and round robin across pipes that come and go (written to kill the mutants
of ``make mutate`` that survived test_push.py).
"""

from __future__ import annotations

from .fakes import FakePipe

# The fixtures and helpers of test_push.py (pytest finds imported fixtures).
from .test_push import ctx, push, targets  # noqa: F401


def test_while_messages_wait_in_the_backlog_push_grants_no_credit_in_messages_or_bytes(push, ctx):
    pipe = FakePipe(free=1)
    push.evt_pipe_added(pipe)
    push.evt_pipe_removed(pipe)  # the credit was granted: the next send finds no pipe
    push.cmd_send(b"waits")
    ctx.clear()
    ctx.byte_capacities.clear()

    full = FakePipe(free=0)
    push.evt_pipe_added(full)

    assert list(push.backlog) == [b"waits"]
    assert ctx.capacities == [0]
    assert ctx.byte_capacities == [0]


def test_after_the_pipe_at_the_cursor_goes_round_robin_starts_again_from_the_first_pipe(push):
    journal: list = []
    a, b = FakePipe(free=9, journal=journal), FakePipe(free=9, journal=journal)
    push.evt_pipe_added(a)
    push.evt_pipe_added(b)
    push.cmd_send(b"1")  # a; next is b, the last of the list

    push.evt_pipe_removed(b)
    c = FakePipe(free=9, journal=journal)
    push.evt_pipe_added(c)
    push.cmd_send(b"2")
    push.cmd_send(b"3")

    assert targets(journal) == [a, a, c]
