"""The socket machine (protocols.yaml, machine ``socket``; core/socket.py) driven sans-IO:
a real ``SocketCore`` with a PUSH protocol, a fake loop, fake pipes and fake endpoints.

These pin down the closing sequence row by row, which the integration tests cannot see:
endpoints stop at once, the socket is closed only when its last pipe is gone, late pipes
are closed too, repeated closes and late reports change nothing, and a crash closes
everything.
"""

from __future__ import annotations

import logging
import threading

import pytest
from protocols.fakes import FakeLoop, FakePipe

from scaproust import protocols
from scaproust.core.options import Options
from scaproust.core.socket import SocketCore


class FakeEndpoint:
    """A listener or dialer as the socket sees it: something to close."""

    def __init__(self) -> None:
        self.closes = 0

    def cmd_close(self) -> None:
        self.closes += 1


class Harness:
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.notified: list = []
        self.states_when_notified: list = []
        self.socket = SocketCore(loop=self.loop, info=protocols.Push, options=Options("push"),
                                 on_closed=self._on_closed)
        self.endpoints = [FakeEndpoint(), FakeEndpoint()]
        for n, endpoint in enumerate(self.endpoints, start=1):
            self.socket.endpoints[n] = endpoint

    def _on_closed(self, socket) -> None:
        self.notified.append(socket)
        self.states_when_notified.append(socket.proto.state)

    def open_pipes(self, count: int) -> list[FakePipe]:
        pipes = [FakePipe(free=4) for _ in range(count)]
        for pipe in pipes:
            self.socket.evt_pipe_opened(pipe)
        return pipes

    @property
    def endpoint_closes(self) -> list[int]:
        return [e.closes for e in self.endpoints]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_closing_a_socket_without_pipes_closes_its_endpoints_and_the_socket_at_once(h):
    h.socket.cmd_close()

    assert h.socket.state == "closed"
    assert h.endpoint_closes == [1, 1]
    assert h.notified == [h.socket]
    assert h.socket.proto.state == "closed"


def test_closing_a_socket_with_pipes_stops_its_endpoints_at_once_and_asks_each_pipe_to_close(h):
    pipes = h.open_pipes(2)

    h.socket.cmd_close()

    assert h.socket.state == "closing"
    assert h.endpoint_closes == [1, 1]
    assert h.socket.endpoints == {}
    assert [p.closed for p in pipes] == [True, True]
    assert h.notified == []


def test_the_socket_is_closed_only_once_its_last_pipe_is_gone(h):
    first, second = h.open_pipes(2)
    h.socket.cmd_close()

    h.socket.evt_pipe_closed(first)

    assert h.socket.state == "closing"
    assert h.socket.pipes == {second}
    assert h.socket.stats["pipes_closed"] == 1
    assert h.notified == []

    h.socket.evt_pipe_closed(second)

    assert h.socket.state == "closed"
    assert h.socket.pipes == set()
    assert h.socket.stats["pipes_closed"] == 2
    assert h.notified == [h.socket]


def test_when_a_socket_reports_closed_its_protocol_is_already_closed(h):
    (pipe,) = h.open_pipes(1)
    h.socket.cmd_close()
    h.socket.evt_pipe_closed(pipe)

    assert h.states_when_notified == ["closed"]


def test_a_pipe_that_opens_while_the_socket_closes_is_closed_and_waited_for(h):
    (old,) = h.open_pipes(1)
    h.socket.cmd_close()
    late = FakePipe(free=4)

    h.socket.evt_pipe_opened(late)

    assert h.socket.state == "closing"
    assert late in h.socket.pipes
    h.loop.run_ready()
    assert late.closed

    h.socket.evt_pipe_closed(old)
    assert h.socket.state == "closing"
    assert h.notified == []

    h.socket.evt_pipe_closed(late)
    assert h.socket.state == "closed"
    assert h.notified == [h.socket]


def test_closing_a_socket_that_is_closing_changes_nothing(h):
    (pipe,) = h.open_pipes(1)
    h.socket.cmd_close()

    h.socket.cmd_close()

    assert h.socket.state == "closing"
    assert h.endpoint_closes == [1, 1]
    assert h.notified == []
    h.socket.evt_pipe_closed(pipe)
    assert h.socket.state == "closed"
    assert h.notified == [h.socket]


def test_a_closed_socket_ignores_another_close_and_late_pipe_reports(h):
    (pipe,) = h.open_pipes(1)
    h.socket.cmd_close()
    h.socket.evt_pipe_closed(pipe)

    h.socket.cmd_close()
    h.socket.evt_pipe_closed(pipe)

    assert h.socket.state == "closed"
    assert h.notified == [h.socket]
    assert h.socket.stats["pipes_closed"] == 1


def test_closing_one_endpoint_leaves_the_socket_its_pipes_and_its_other_endpoints_open(h):
    (pipe,) = h.open_pipes(1)
    h.socket.close_endpoint(1)

    assert h.socket.state == "open"
    assert h.endpoint_closes == [1, 0]
    assert list(h.socket.endpoints) == [2]
    assert not pipe.closed
    assert h.notified == []


@pytest.mark.parametrize("pipes", [0, 1])
def test_a_crash_closes_the_socket_and_its_endpoints_and_wakes_the_user(h, pipes, caplog):
    h.open_pipes(pipes)
    if pipes:
        h.socket.cmd_close()  # a crash while closing ends the wait for the pipes too

    with caplog.at_level(logging.CRITICAL, logger="scaproust.socket"):
        h.socket.evt_crashed(RuntimeError("a bug in an action"))

    assert h.socket.state == "closed"
    assert h.endpoint_closes == [1, 1]
    assert h.notified == [h.socket]


def test_a_pipe_that_goes_away_while_the_socket_is_open_is_forgotten_and_the_socket_stays_open(h):
    first, second = h.open_pipes(2)

    h.socket.evt_pipe_closed(first)

    assert h.socket.state == "open"
    assert h.socket.pipes == {second}
    assert h.socket.stats["pipes_closed"] == 1
    assert h.endpoint_closes == [0, 0]
    assert not second.closed


# ---------------------------------------------------------------- draining the outbox


def test_what_is_delivered_is_counted_and_an_empty_body_adds_no_byte_counter(h):
    # Context.deliver counts inline (not through Stats.count_traffic): messages and bytes,
    # and, as everywhere, no counter that would read zero.
    core = h.socket
    core.ctx.deliver([b""])
    assert core.stats.snapshot() == {"msgs_received": 1}
    core.ctx.deliver([b"ab", b"cde"])
    assert core.stats.snapshot() == {"msgs_received": 3, "bytes_received": 5}
    core.ctx.deliver([])
    assert core.stats.snapshot() == {"msgs_received": 3, "bytes_received": 5}
    assert [core.channel.take() for _ in range(4)] == [b"", b"ab", b"cde", None]


@pytest.mark.parametrize("where", ["main thread", "another thread"])
def test_a_drained_batch_reaches_the_protocol_in_order_and_is_counted_once(h, where):
    # Off the main thread (the I/O thread) a batch goes to the protocol in one event; in
    # the main thread, where a Ctrl-C may land, one message at a time (core/guard.py).
    (pipe,) = h.open_pipes(1)
    core = h.socket
    items = [b"a", b"bb", b"ccc"]
    core.channel.outbox.extend(items)
    credit = (core.ctx.outstanding, core.ctx.outstanding_bytes)

    if where == "main thread":
        core._drain_outbox()
    else:
        worker = threading.Thread(target=core._drain_outbox)
        worker.start()
        worker.join(5)

    assert pipe.bodies == items
    assert pipe.many_calls == (1 if where == "another thread" else 0)
    assert core.stats.snapshot() == {"pipes_opened": 1, "msgs_sent": 3, "bytes_sent": 6}
    assert (core.ctx.outstanding, core.ctx.outstanding_bytes) == (credit[0] - 3, credit[1] - 6)
    assert not core.channel.outbox


def test_a_single_message_is_drained_as_one_send_even_off_the_main_thread(h):
    (pipe,) = h.open_pipes(1)
    h.socket.channel.outbox.append(b"one")

    worker = threading.Thread(target=h.socket._drain_outbox)
    worker.start()
    worker.join(5)

    assert pipe.bodies == [b"one"] and pipe.many_calls == 0


@pytest.mark.parametrize(("info", "raw", "batches"), [
    (protocols.Push, False, True), (protocols.Req, True, True), (protocols.Pub, False, True),
    (protocols.Req, False, False), (protocols.Pair, False, False)])
def test_only_a_machine_whose_table_has_cmd_send_many_is_given_batches(info, raw, batches):
    # A cooked REQ completes raw REQ's class, so it has raw REQ's cmd_send_many method,
    # which its own table refuses: the table decides (EVENTS), not the method.
    core = SocketCore(loop=FakeLoop(), info=info, options=Options(info.name), raw=raw)

    assert (core._send_many is not None) is batches
    assert ("cmd_send_many" in core.proto.EVENTS) is batches
