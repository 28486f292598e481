"""Fixtures of the reactor tests: loops with and without a thread, a socket pair."""

from __future__ import annotations

import socket

import pytest

from scaproust.reactor.loop import Loop
from tests.reactor.test_loop import FakeClock


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_loop(clock):
    lp = Loop(clock=clock)
    yield lp
    lp.stop()


@pytest.fixture
def started():
    lp = Loop()
    lp.start()
    yield lp
    lp.stop()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
