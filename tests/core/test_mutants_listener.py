"""The listener machine (protocols.yaml, machine ``listener``; core/listener.py) driven sans-IO:
a fake loop, a fake transport and fake pipes (written to kill the mutants of
``make mutate`` that the integration tests let through).
"""

from __future__ import annotations

import logging

import pytest
from protocols.fakes import FakeLoop, FakePipe, FakeSocket

from scaproust.core import protocol_info
from scaproust.core.listener import Listener


class FakeListenTransport:
    """What a listener uses of a transport: ``accept`` (nothing pending) and ``close_listener``."""

    SCHEME = "tcp"
    IPC_FRAMING = False

    def __init__(self) -> None:
        self.closed: list = []

    def accept(self, handle):
        return None

    def close_listener(self, handle) -> None:
        self.closed.append(handle)


class Harness:
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.transport = FakeListenTransport()
        self.handle = object()
        self.listener = Listener(loop=self.loop, socket=FakeSocket(protocol_info.Push),
                                 transport=self.transport, handle=self.handle,
                                 url="tcp://127.0.0.1:5555", endpoint_id=1)
        self.listener.cmd_start()


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_started_listener_watches_its_handle_for_connections(h):
    assert h.listener.state == "listening"
    assert h.handle in h.loop.readers


def test_closing_a_listener_releases_its_port_and_closes_its_pipes(h):
    pipe = FakePipe()
    h.listener.pipes.add(pipe)

    h.listener.cmd_close()

    assert h.listener.state == "closed"
    assert h.transport.closed == [h.handle]
    assert h.handle not in h.loop.readers
    assert pipe.closed


def test_closing_a_closed_listener_again_changes_nothing(h):
    h.listener.cmd_close()

    h.listener.cmd_close()

    assert h.listener.state == "closed"
    assert h.transport.closed == [h.handle]


def test_a_closed_listener_ignores_its_pipes_reporting_late(h):
    pipe = FakePipe()
    h.listener.pipes.add(pipe)
    h.listener.cmd_close()

    h.listener.evt_pipe_opened(pipe)
    h.listener.evt_pipe_closed(pipe)

    assert h.listener.state == "closed"
    assert h.transport.closed == [h.handle]


def test_a_crashed_listener_is_closed_and_releases_its_port(h, caplog):
    with caplog.at_level(logging.CRITICAL, logger="scaproust.listener"):
        h.listener.evt_crashed(RuntimeError("a bug in an action"))

    assert h.listener.state == "closed"
    assert h.transport.closed == [h.handle]
    assert h.handle not in h.loop.readers
