"""The in-process transport's accept: the bell a listener's loop watches."""

from __future__ import annotations

import select

import pytest

from scaproust.core.listener import ACCEPT_BATCH
from scaproust.transports import inproc


def rings(listener: inproc.BoundName) -> bool:
    """Whether the loop would see the listener readable now (no wait)."""
    readable, _, _ = select.select([listener], [], [], 0)
    return bool(readable)


@pytest.fixture
def listener(request):
    bound, _ = inproc.listen(f"inproc://{request.node.name}")
    yield bound
    inproc.close_listener(bound)


def test_the_bell_rings_while_connections_wait_beyond_one_batch(listener):
    # More connections than the listener accepts at one readiness: those left after a
    # batch must keep the bell ringing, or they wait until their dialers give up.
    dialers = [inproc.connect(listener.url)[0] for _ in range(ACCEPT_BATCH + 36)]
    assert all(end is not None for end in dialers)
    first = [inproc.accept(listener) for _ in range(ACCEPT_BATCH)]
    assert rings(listener)
    rest = []
    while (end := inproc.accept(listener)) is not None:
        rest.append(end)
    assert len(rest) == 36
    assert [end.peer for end in first + rest] == dialers  # each once, in connect order
    assert not rings(listener)  # all taken: quiet until the next connect


def test_a_connect_after_the_queue_emptied_rings_again(listener):
    assert inproc.accept(listener) is None and not rings(listener)
    dialer, err = inproc.connect(listener.url)
    assert err == 0 and rings(listener)
    assert inproc.accept(listener).peer is dialer
    assert inproc.accept(listener) is None and not rings(listener)
