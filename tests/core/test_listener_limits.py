"""A listener's ``max_pipes`` (core/listener.py), sans-IO: a fake loop and transport. A
connection beyond the limit is closed as soon as it is accepted, before any byte, counted
in ``pipes_refused`` and logged once per listener; below the limit pipes open as usual."""

from __future__ import annotations

import logging

from protocols.fakes import FakeLoop, FakePipe, FakeSocket, FakeStream

from scaproust import protocols
from scaproust.core.listener import Listener
from scaproust.core.options import EndpointOptions


class Transport:
    """Accepts the streams in ``pending``, then nothing."""

    SCHEME = "tcp"
    IPC_FRAMING = False

    def __init__(self) -> None:
        self.pending: list = []

    def accept(self, handle):
        return self.pending.pop(0) if self.pending else None

    def close_listener(self, handle) -> None:
        pass

    def configure_stream(self, stream, **options) -> None:
        pass


def listener_with(max_pipes: int) -> tuple[Listener, Transport, FakeSocket]:
    transport, socket = Transport(), FakeSocket(protocols.Pull)
    listener = Listener(loop=FakeLoop(), socket=socket, transport=transport, handle=object(),
                        url="tcp://127.0.0.1:5555", endpoint_id=1,
                        endpoint=EndpointOptions(max_pipes=max_pipes))
    listener.cmd_start()
    return listener, transport, socket


def test_connections_beyond_max_pipes_are_closed_at_once_counted_and_logged_once(caplog):
    listener, transport, socket = listener_with(2)
    listener.pipes.update({FakePipe(), FakePipe()})
    extra = [FakeStream() for _ in range(3)]
    transport.pending += extra

    with caplog.at_level(logging.WARNING, logger="scaproust.listener"):
        listener.evt_acceptable()

    assert [s.closed for s in extra] == [True, True, True]
    assert all(s.written == b"" for s in extra)
    assert len(listener.pipes) == 2
    assert socket.stats.snapshot() == {"pipes_refused": 3}
    assert caplog.text.count("beyond max_pipes=2") == 1


def test_below_max_pipes_and_without_a_limit_connections_become_pipes():
    for limit in (3, 0):
        listener, transport, socket = listener_with(limit)
        listener.pipes.update({FakePipe(), FakePipe()})
        stream = FakeStream()
        transport.pending.append(stream)

        listener.evt_acceptable()

        assert not stream.closed
        assert len(listener.pipes) == 3
        assert "pipes_refused" not in socket.stats.snapshot()
