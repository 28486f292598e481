"""The listener machine (protocols.yaml, machine ``listener``; core/listener.py) driven sans-IO:
a fake loop, a fake transport and fake pipes: its rows, the accept back-off and its log
lines, and the names of accepted pipes.
"""

from __future__ import annotations

import errno
import logging

import pytest
from protocols.fakes import FakeLoop, FakePipe, FakeSocket, FakeStream

from scaproust import protocols
from scaproust.core.listener import ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, Listener, _peer_name

EMFILE = OSError(errno.EMFILE, "Too many open files")


class FakeListenTransport:
    """What a listener uses of a transport: ``accept`` and ``close_listener`` (and
    ``configure_stream`` for the pipes it makes). ``accept`` plays ``outcomes`` in order (an
    exception is raised, anything else returned), then finds nothing pending (None)."""

    SCHEME = "tcp"
    IPC_FRAMING = False

    def __init__(self) -> None:
        self.closed: list = []
        self.outcomes: list = []
        self.accepts = 0

    def accept(self, handle):
        self.accepts += 1
        if not self.outcomes:
            return None
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close_listener(self, handle) -> None:
        self.closed.append(handle)

    def configure_stream(self, stream, **options) -> None:
        pass


class Harness:
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.transport = FakeListenTransport()
        self.handle = object()
        self.listener = Listener(loop=self.loop, socket=FakeSocket(protocols.Push),
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


# ---------------------------------------------------------------------- accept back-off


def fail_accept(h, err=EMFILE) -> None:
    """One readiness whose accept fails."""
    h.transport.outcomes.append(err)
    h.loop.fire_reader(h.handle)


def backoff_delays(h) -> list[float]:
    """The listener's pending pauses (its pipes' handshake timers left out)."""
    return [round(t.when - h.loop.time(), 6) for t in h.loop.pending_timers()
            if getattr(t.fn, "__self__", None) is h.listener]


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_a_failed_accept_stops_watching_the_listener_for_a_while(h, code):
    fail_accept(h, OSError(code, "no resources"))

    assert h.listener.state == "backing_off"
    assert h.handle not in h.loop.readers  # no busy loop on a socket that stays readable
    assert backoff_delays(h) == [ACCEPT_BACKOFF_MIN]
    assert h.listener.socket.stats["accept_errors"] == 1


def test_after_the_pause_the_listener_watches_again_and_the_next_readiness_retries(h):
    fail_accept(h)

    h.loop.advance(ACCEPT_BACKOFF_MIN)

    assert h.listener.state == "listening"
    assert h.handle in h.loop.readers
    assert h.loop.pending_timers() == []
    accepts = h.transport.accepts
    h.loop.fire_reader(h.handle)
    assert h.transport.accepts == accepts + 1


def test_the_pause_doubles_while_accepts_keep_failing_up_to_the_maximum(h):
    delays = []
    for _ in range(9):
        fail_accept(h)
        (timer,) = h.loop.pending_timers()
        delays.append(round(timer.when - h.loop.time(), 6))
        h.loop.advance(delays[-1])

    assert delays == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MAX]
    assert h.listener.socket.stats["accept_errors"] == 9


def test_an_episode_logs_one_warning_and_one_info_line_with_the_count(h, caplog):
    with caplog.at_level(logging.DEBUG, logger="scaproust.listener"):
        for _ in range(5):
            fail_accept(h)
            h.loop.advance(ACCEPT_BACKOFF_MAX)
        h.loop.fire_reader(h.handle)  # descriptors free again: nothing fails

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 2
    (warning, first), (info, last) = lines
    assert warning == logging.WARNING
    assert first.startswith("accept on tcp://127.0.0.1:5555 failed: [Errno 24] Too many open files;")
    assert (info, last) == (logging.INFO, "accepting on tcp://127.0.0.1:5555 again after 5 failed accepts")


def test_a_new_episode_starts_from_the_shortest_pause_and_warns_again(h, caplog):
    for _ in range(3):
        fail_accept(h)
        h.loop.advance(ACCEPT_BACKOFF_MAX)
    h.transport.outcomes.append(FakeStream())  # an accept works: the episode is over
    h.loop.fire_reader(h.handle)
    assert h.listener.state == "listening" and len(h.listener.pipes) == 1
    caplog.clear()

    with caplog.at_level(logging.WARNING, logger="scaproust.listener"):
        fail_accept(h)

    assert backoff_delays(h) == [ACCEPT_BACKOFF_MIN]
    assert [r.levelno for r in caplog.records if r.name == "scaproust.listener"] == [logging.WARNING]


def test_connections_accepted_before_a_failure_in_the_same_batch_are_kept(h):
    streams = [FakeStream(), FakeStream()]
    h.transport.outcomes.extend([*streams, EMFILE])

    h.loop.fire_reader(h.handle)

    assert h.listener.state == "backing_off"
    assert {pipe.stream for pipe in h.listener.pipes} == set(streams)
    assert all(pipe.state == "handshaking" for pipe in h.listener.pipes)


def test_a_backing_off_listener_keeps_track_of_its_pipes(h):
    pipe = FakePipe()
    h.listener.pipes.add(pipe)
    fail_accept(h)

    h.listener.evt_pipe_opened(pipe)
    assert h.listener.pipes == {pipe}
    h.listener.evt_pipe_closed(pipe)

    assert h.listener.state == "backing_off"
    assert h.listener.pipes == set()


def test_closing_a_backing_off_listener_cancels_the_pause_and_releases_the_port(h):
    pipe = FakePipe()
    h.listener.pipes.add(pipe)
    fail_accept(h)

    h.listener.cmd_close()

    assert h.listener.state == "closed"
    assert h.loop.pending_timers() == []
    assert h.transport.closed == [h.handle]
    assert pipe.closed
    h.loop.advance(ACCEPT_BACKOFF_MAX)
    assert h.handle not in h.loop.readers


@pytest.mark.parametrize("how", ["crash", "abandon"])
def test_a_listener_that_fails_while_backing_off_never_watches_again(h, how, caplog):
    fail_accept(h)

    with caplog.at_level(logging.CRITICAL, logger="scaproust"):
        if how == "crash":
            h.listener.evt_crashed(RuntimeError("a bug in an action"))
        else:
            h.listener._abandon()  # what a crash that cannot even be handled does

    assert h.listener.state == "closed"
    assert h.loop.pending_timers() == []
    assert h.transport.closed == [h.handle]


@pytest.mark.parametrize("event", ["evt_pipe_opened", "evt_pipe_closed"])
def test_a_listening_listener_keeps_watching_while_its_pipes_come_and_go(h, event):
    pipe = FakePipe()
    h.listener.pipes.add(pipe)

    getattr(h.listener, event)(pipe)

    assert h.listener.state == "listening"
    assert h.handle in h.loop.readers
    assert backoff_delays(h) == []


def test_an_abandoned_listening_listener_stops_watching_and_releases_its_port(h):
    h.listener._abandon()  # what a crash that cannot even be handled does

    assert h.listener.state == "closed"
    assert h.handle not in h.loop.readers
    assert h.transport.closed == [h.handle]


def test_a_listener_crash_is_logged_as_an_error_with_its_traceback(h, caplog):
    with caplog.at_level(logging.ERROR, logger="scaproust.listener"):
        h.listener.evt_crashed(RuntimeError("a bug in an action"))

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "listener tcp://127.0.0.1:5555 closed by an internal error"
    assert record.exc_info is not None


class Unnamed(FakeStream):
    def getpeername(self):
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")


@pytest.mark.parametrize(("stream", "scheme", "name"), [
    (FakeStream(peer=("127.0.0.1", 40123)), "tcp", "tcp://127.0.0.1:40123"),
    (FakeStream(peer=("::1", 40123, 0, 0)), "tcp", "tcp://[::1]:40123"),
    (FakeStream(peer=("127.0.0.1", 40123)), "tls+tcp", "tls+tcp://127.0.0.1:40123"),
    (FakeStream(peer="/tmp/x.ipc"), "ipc", "ipc:///tmp/x.ipc"),
    (FakeStream(peer=""), "ipc", "ipc://(unnamed)"),
    (FakeStream(peer=b"\0name\0tail"), "abstract", "abstract://name%00tail"),
    (FakeStream(peer=b""), "abstract", "abstract://(unnamed)"),
    (Unnamed(), "tcp", "?"),
])
def test_an_accepted_pipe_is_named_after_its_peer(h, stream, scheme, name):
    assert _peer_name(stream, scheme) == name
    h.transport.SCHEME = scheme
    h.transport.outcomes.append(stream)
    h.loop.fire_reader(h.handle)
    (pipe,) = h.listener.pipes
    assert pipe.peer_addr == name
