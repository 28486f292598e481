"""The dialer machine (protocols.yaml, machine ``dialer``; core/dialer.py) driven sans-IO: a
fake loop and clock, a transport whose connects always start, and the dialer's events fired
by hand (written to kill the mutants of ``make mutate`` that the integration tests let
through). The pipes are real ones, left connecting: only their owner's view matters here.
"""

from __future__ import annotations

import logging
import re

import pytest
from protocols.fakes import FakeLoop, FakeSocket, FakeStream

from scaproust.core import protocol_info
from scaproust.core.dialer import Dialer
from scaproust.core.options import Options

INTERVAL = 0.1  # reconnect_interval


class FakeDialTransport:
    """``connect`` starts a connection on a fresh fake stream each time."""

    IPC_FRAMING = False

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []

    def connect(self, address, ipv4_only=False):
        stream = FakeStream()
        self.streams.append(stream)
        return stream, 0


class Harness:
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.transport = FakeDialTransport()
        socket = FakeSocket(protocol_info.Push, Options("push", reconnect_interval=INTERVAL))
        self.dialer = Dialer(loop=self.loop, socket=socket, transport=self.transport,
                             address=None, url="tcp://127.0.0.1:5555", endpoint_id=1)
        self.dialer._random = lambda: 1.0  # waits are exactly the interval
        self.dialer.cmd_start()

    @property
    def dials(self) -> int:
        return len(self.transport.streams)

    def connect(self):
        pipe = self.dialer.pipe
        self.dialer.evt_pipe_opened(pipe)
        return pipe


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_started_dialer_dials_once(h):
    assert h.dialer.state == "connecting"
    assert h.dials == 1
    assert h.dialer.pipe is not None


def test_a_connection_that_lasted_the_reconnect_interval_is_redialed_at_once(h):
    pipe = h.connect()
    h.loop.advance(INTERVAL)

    h.dialer.evt_pipe_closed(pipe)

    assert h.dialer.state == "connecting"
    assert h.dials == 2
    assert h.loop.pending_timers() == []
    assert h.dialer.socket.stats["connect_failures"] == 0


def test_a_connection_that_drops_sooner_waits_the_interval_before_redialing(h):
    pipe = h.connect()
    h.loop.advance(INTERVAL / 2)

    h.dialer.evt_pipe_closed(pipe)

    assert h.dialer.state == "waiting"
    assert h.dials == 1
    h.loop.advance(INTERVAL)
    assert h.dialer.state == "connecting"
    assert h.dials == 2


def test_closing_a_dialer_that_redialed_at_once_closes_the_new_connection(h):
    # Was a bug: log_disconnect, which runs after open_pipe, cleared dialer.pipe.
    pipe = h.connect()
    h.loop.advance(INTERVAL)
    h.dialer.evt_pipe_closed(pipe)

    h.dialer.cmd_close()

    assert h.transport.streams[1].closed


def test_closing_a_connected_dialer_closes_its_pipe(h):
    pipe = h.connect()

    h.dialer.cmd_close()

    assert h.dialer.state == "closed"
    assert pipe.state == "dead"
    assert h.transport.streams[0].closed


def test_closing_a_waiting_dialer_cancels_the_retry(h):
    h.dialer.evt_pipe_closed(h.dialer.pipe)  # the connect failed
    assert h.dialer.state == "waiting"

    h.dialer.cmd_close()

    assert h.dialer.state == "closed"
    assert h.loop.pending_timers() == []
    h.loop.advance(10 * INTERVAL)
    assert h.dials == 1


def test_a_closed_dialer_ignores_another_close_and_late_pipe_reports(h):
    pipe = h.connect()
    h.dialer.cmd_close()

    h.dialer.cmd_close()
    h.dialer.evt_pipe_opened(pipe)
    h.dialer.evt_pipe_closed(pipe)

    assert h.dialer.state == "closed"
    h.loop.advance(10 * INTERVAL)
    assert h.dials == 1


@pytest.mark.parametrize("waiting", [False, True])
def test_a_crashed_dialer_is_closed_and_never_redials(h, waiting, caplog):
    if waiting:
        h.dialer.evt_pipe_closed(h.dialer.pipe)

    with caplog.at_level(logging.CRITICAL, logger="scaproust.dialer"):
        h.dialer.evt_crashed(RuntimeError("a bug in an action"))

    assert h.dialer.state == "closed"
    h.loop.advance(10 * INTERVAL)
    assert h.dials == 1
    assert h.loop.pending_timers() == []


def test_a_dialer_shows_its_one_pipe_while_it_has_one_and_none_while_it_waits(h):
    pipe = h.connect()
    assert h.dialer.pipes == {pipe}

    h.dialer.evt_pipe_closed(pipe)  # dropped at once: wait before redialing

    assert h.dialer.state == "waiting"
    assert h.dialer.pipes == set()


def test_a_connect_that_raises_without_an_errno_is_a_failed_attempt_retried_later(caplog):
    loop = FakeLoop()

    class Unresolvable(FakeDialTransport):
        def connect(self, address, ipv4_only=False):
            self.streams.append(None)
            raise OSError("name resolution failed")  # no errno

    socket = FakeSocket(protocol_info.Push, Options("push", reconnect_interval=INTERVAL))
    dialer = Dialer(loop=loop, socket=socket, transport=Unresolvable(), address=None,
                    url="tcp://nowhere.invalid:5555", endpoint_id=1)
    dialer._random = lambda: 1.0
    with caplog.at_level(logging.DEBUG, logger="scaproust"):
        dialer.cmd_start()
        loop.run_ready()  # the pipe reports its failed connect, then its death, from the loop
        loop.run_ready()

    # The log gives the real reason, not an errno made up for an error that has none.
    (failure,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert re.fullmatch(r"pipe \d+: connect to tcp://nowhere\.invalid:5555 failed: "
                        r"name resolution failed", failure)

    assert dialer.state == "waiting"
    assert socket.stats["connect_failures"] == 1
    loop.advance(INTERVAL)
    assert len(dialer.transport.streams) == 2


def test_a_dialer_crash_is_logged_as_an_error_with_its_traceback(h, caplog):
    with caplog.at_level(logging.ERROR, logger="scaproust.dialer"):
        h.dialer.evt_crashed(RuntimeError("a bug in an action"))

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None


@pytest.mark.parametrize("lasted", [INTERVAL, INTERVAL / 2], ids=["redial at once", "wait first"])
def test_a_lost_connection_is_logged_at_debug_level_with_its_url(h, caplog, lasted):
    pipe = h.connect()
    h.loop.advance(lasted)

    with caplog.at_level(logging.DEBUG, logger="scaproust.dialer"):
        h.dialer.evt_pipe_closed(pipe)

    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records
            if "lost" in r.getMessage()] == [
        ("scaproust.dialer", logging.DEBUG, "connection to tcp://127.0.0.1:5555 lost")]
