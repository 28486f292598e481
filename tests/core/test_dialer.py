"""The dialer machine (protocols.yaml, machine ``dialer``; core/dialer.py) driven sans-IO: a
fake loop and clock, a transport whose connects always start, and the dialer's events fired
by hand. The pipes are real ones, left connecting: only their owner's view matters here.

Its rows, its reconnect schedule (jittered, growing up to the maximum, reset on success),
host names looked up off the I/O thread, and dials out of file descriptors.
"""

from __future__ import annotations

import errno
import logging
import re
from concurrent.futures import Future

import pytest
from protocols.fakes import FakeClock, FakeLoop, FakeSocket, FakeStream

from scaproust import protocols
from scaproust.core.dialer import RESOLVE_TIMEOUT, Dialer
from scaproust.core.options import Options
from scaproust.transports.url import parse_url

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
        socket = FakeSocket(protocols.Push, Options("push", reconnect_interval=INTERVAL))
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


# ---------------------------------------------------------------------- rows


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

    socket = FakeSocket(protocols.Push, Options("push", reconnect_interval=INTERVAL))
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


# ---------------------------------------------------------------------- reconnect schedule


def dialer(**options) -> Dialer:
    """A dialer that is never started, on a clock at 0: its schedule alone."""
    socket = FakeSocket(protocols.Push, Options("push", **options))
    return Dialer(loop=FakeLoop(FakeClock(0.0)), socket=socket, transport=None, address=None,
                  url="tcp://127.0.0.1:1", endpoint_id=1)


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_each_wait_is_a_random_half_to_whole_of_the_delay(draw):
    d = dialer(reconnect_interval=0.2)
    d._random = lambda: draw
    assert d._next_delay() == pytest.approx(0.2 * (0.5 + 0.5 * draw))


def test_without_a_maximum_the_delay_never_grows():
    d = dialer(reconnect_interval=0.1)
    d._random = lambda: 1.0
    assert [d._next_delay() for _ in range(4)] == [0.1, 0.1, 0.1, 0.1]


def test_the_delay_doubles_up_to_the_maximum_and_resets_after_a_connection():
    d = dialer(reconnect_interval=0.1, reconnect_interval_max=0.5)
    d._random = lambda: 1.0
    assert [round(d._next_delay(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    d.reset_backoff(object())  # the action of evt_pipe_opened
    assert d._next_delay() == 0.1


def test_a_maximum_below_the_interval_bounds_every_wait_after_the_first():
    # nng's dialer: the first wait is the interval's, every later one the maximum's. The
    # maximum was ignored when below the interval, though it is documented as the bound.
    d = dialer(reconnect_interval=0.2, reconnect_interval_max=0.05)
    d._random = lambda: 1.0
    assert [round(d._next_delay(), 3) for _ in range(4)] == [0.2, 0.05, 0.05, 0.05]
    d.reset_backoff(object())
    assert d._next_delay() == 0.2


def test_a_hundred_dialers_do_not_retry_in_lockstep():
    delays = {round(dialer(reconnect_interval=0.1)._next_delay(), 6) for _ in range(100)}
    assert len(delays) > 50
    assert all(0.05 <= delay <= 0.1 for delay in delays)


def test_a_connection_that_lasted_the_interval_is_redialed_at_once_a_quick_drop_waits():
    d = dialer(reconnect_interval=0.1)
    d.reset_backoff(object())  # connected at t=0
    d.loop.clock.now = 0.05
    assert not d.lasted(object())  # dropped after 50 ms: a refusing peer, wait
    d.loop.clock.now = 0.1
    assert d.lasted(object())  # an established connection that dropped: redial at once


# ---------------------------------------------------------------------- host names

NAME_URL = "tcp://db.example:5555"
FOUND = (2, ("192.0.2.7", 5555))  # AF_INET and the address a lookup found


class FakeNameTransport(FakeDialTransport):
    """A transport whose addresses are host names: ``resolve`` is what the dialer hands its
    worker, ``connect`` records the address it was given."""

    def __init__(self, has_name: bool = True) -> None:
        super().__init__()
        self.has_name = has_name
        self.resolved: list = []

    def needs_resolution(self, address) -> bool:
        return self.has_name

    def resolve(self, address, *, passive=False, ipv4_only=False):
        return FOUND

    def connect(self, address, ipv4_only=False, resolved=None):
        self.resolved.append(resolved)
        return super().connect(address, ipv4_only)


class NameHarness:
    """A dialer of a host name whose lookups wait in ``lookups`` for the test to finish;
    ``running``: a worker took each lookup at once (else they wait in the queue)."""

    def __init__(self, has_name: bool = True, loop: FakeLoop | None = None,
                 running: bool = True) -> None:
        self.running = running
        self.loop = loop or FakeLoop()
        self.transport = FakeNameTransport(has_name)
        self.lookups: list[tuple[Future, object]] = []
        socket = FakeSocket(protocols.Push, Options("push", reconnect_interval=INTERVAL))
        self.dialer = Dialer(loop=self.loop, socket=socket, transport=self.transport,
                             address=parse_url(NAME_URL), url=NAME_URL, endpoint_id=1)
        self.dialer._random = lambda: 1.0
        self.dialer._submit = self._submit
        self.dialer.cmd_start()

    def _submit(self, fn):
        future = Future()
        if self.running:
            future.set_running_or_notify_cancel()
        self.lookups.append((future, fn))
        return future

    def answer(self, outcome=None) -> None:
        """Finish the latest lookup (run it, or fail it with ``outcome``), as the worker
        would, and let the loop take the result."""
        future, fn = self.lookups[-1]
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(fn())
        self.loop.run_ready()

    @property
    def dials(self) -> int:
        return len(self.transport.streams)


@pytest.fixture
def n() -> NameHarness:
    return NameHarness()


def test_a_host_name_is_looked_up_in_a_worker_before_the_dial(n):
    assert n.dialer.state == "resolving"
    assert n.dials == 0 and len(n.lookups) == 1
    assert n.dialer.pipes == set()

    n.answer()

    assert n.dialer.state == "connecting"
    assert n.transport.resolved == [FOUND]  # the dial uses what the lookup found
    assert n.loop.threadsafe_calls == 1  # the result came back through the loop


def test_an_address_literal_is_dialed_at_once_without_a_lookup():
    n = NameHarness(has_name=False)

    assert n.dialer.state == "connecting"
    assert n.lookups == [] and n.transport.resolved == [None]


def test_a_lookup_that_answers_cancels_its_timeout(n):
    n.answer()

    n.loop.advance(RESOLVE_TIMEOUT)

    assert n.dialer.state == "connecting"
    assert n.dialer.socket.stats["connect_failures"] == 0


def test_a_lookup_that_fails_waits_the_reconnect_interval_then_looks_up_again(n):
    n.answer(OSError("Name or service not known"))

    assert n.dialer.state == "waiting"
    assert n.dialer.socket.stats["connect_failures"] == 1
    assert n.dials == 0
    n.loop.advance(INTERVAL)
    assert n.dialer.state == "resolving" and len(n.lookups) == 2


def test_a_lookup_without_an_answer_in_time_fails_like_a_refused_connection(n, caplog):
    with caplog.at_level(logging.WARNING, logger="scaproust.dialer"):
        n.loop.advance(RESOLVE_TIMEOUT)

    assert n.dialer.state == "waiting"
    assert n.dialer.socket.stats["connect_failures"] == 1
    assert [r.getMessage() for r in caplog.records][0].startswith(
        f"resolving 'db.example' for {NAME_URL} failed: no answer within 10 s;")
    n.answer()  # a late answer is ignored
    assert n.dialer.state == "waiting" and n.dials == 0


@pytest.mark.parametrize("how", ["timeout", "close"])
def test_a_lookup_given_up_while_still_queued_is_cancelled_and_never_runs(how):
    n = NameHarness(running=False)  # every worker busy with slower lookups

    if how == "timeout":
        n.loop.advance(RESOLVE_TIMEOUT)
    else:
        n.dialer.cmd_close()

    future, _ = n.lookups[0]
    assert future.cancelled()
    assert not future.set_running_or_notify_cancel()  # what a worker then finds


def test_closing_a_resolving_dialer_stops_waiting_for_its_lookup(n):
    n.dialer.cmd_close()

    assert n.dialer.state == "closed"
    assert n.loop.pending_timers() == []
    n.answer()
    assert n.dials == 0


@pytest.mark.parametrize("how", ["crash", "abandon"])
def test_a_dialer_that_fails_while_resolving_never_dials(n, how, caplog):
    with caplog.at_level(logging.CRITICAL, logger="scaproust"):
        if how == "crash":
            n.dialer.evt_crashed(RuntimeError("a bug in an action"))
        else:
            n.dialer._abandon()

    assert n.dialer.state == "closed"
    assert n.loop.pending_timers() == []
    n.answer()
    assert n.dials == 0


def test_a_name_is_looked_up_again_before_every_redial(n):
    n.answer()
    pipe = n.dialer.pipe
    n.dialer.evt_pipe_opened(pipe)
    n.loop.advance(INTERVAL)

    n.dialer.evt_pipe_closed(pipe)  # lasted: redial at once, after a new lookup

    assert n.dialer.state == "resolving" and len(n.lookups) == 2
    assert n.dialer.pipes == set()
    n.answer()
    pipe = n.dialer.pipe
    n.dialer.evt_pipe_opened(pipe)

    n.dialer.evt_pipe_closed(pipe)  # dropped at once: wait, then look up again

    assert n.dialer.state == "waiting" and len(n.lookups) == 2
    n.loop.advance(INTERVAL)
    assert n.dialer.state == "resolving" and len(n.lookups) == 3


def test_a_lookup_finished_after_the_session_closed_is_dropped_quietly():
    class ClosedLoop(FakeLoop):
        def call_soon_threadsafe(self, fn, *args):
            raise RuntimeError("scaproust I/O loop is closed")

    n = NameHarness(loop=ClosedLoop())

    n.answer()  # the done-callback runs in this thread and must not raise

    assert n.dialer.state == "resolving"


def test_a_name_that_keeps_failing_is_logged_once_until_it_resolves(n, caplog):
    with caplog.at_level(logging.INFO, logger="scaproust.dialer"):
        for _ in range(3):
            n.answer(OSError("Name or service not known"))
            n.loop.advance(INTERVAL)
        n.answer()

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"resolving 'db.example' for {NAME_URL} failed: Name or service not "
                          "known; retrying on the reconnect schedule, logged once until it works"),
        (logging.INFO, f"resolving 'db.example' for {NAME_URL} works again after 3 failed attempts"),
    ]


def test_a_lost_connection_to_a_host_name_is_logged_before_the_new_lookup(n, caplog):
    n.answer()
    pipe = n.dialer.pipe
    n.dialer.evt_pipe_opened(pipe)
    n.loop.advance(INTERVAL)

    with caplog.at_level(logging.DEBUG, logger="scaproust.dialer"):
        n.dialer.evt_pipe_closed(pipe)

    assert n.dialer.state == "resolving"
    assert [r.getMessage() for r in caplog.records if "lost" in r.getMessage()] == [
        f"connection to {NAME_URL} lost"]


# ---------------------------------------------------------------------- out of descriptors


class StarvedTransport(FakeDialTransport):
    """``connect`` fails for want of descriptors while ``starved`` is set: raising from
    ``socket()`` (``errno`` None) or returning the errno (``errno`` set)."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__()
        self.starved = True
        self.code = code
        self.attempts = 0

    def connect(self, address, ipv4_only=False):
        self.attempts += 1
        if not self.starved:
            return super().connect(address, ipv4_only)
        if self.code is not None:
            return None, self.code
        raise OSError(errno.EMFILE, "Too many open files")


def starved_dialer(transport) -> tuple[Dialer, FakeLoop]:
    loop = FakeLoop()
    socket = FakeSocket(protocols.Push, Options("push", reconnect_interval=INTERVAL))
    dialer = Dialer(loop=loop, socket=socket, transport=transport, address=None,
                    url="tcp://127.0.0.1:5555", endpoint_id=1)
    dialer._random = lambda: 1.0
    dialer.cmd_start()
    return dialer, loop


@pytest.mark.parametrize("code", [None, errno.ENOBUFS], ids=["socket() raises", "connect returns"])
def test_a_dial_out_of_descriptors_waits_its_interval_and_warns_once_per_episode(caplog, code):
    transport = StarvedTransport(code)
    with caplog.at_level(logging.INFO, logger="scaproust.dialer"):
        dialer, loop = starved_dialer(transport)
        for _ in range(5):
            loop.run_ready()  # the pipe reports its failure: the dialer waits
            assert dialer.state == "waiting"
            assert [round(t.when - loop.time(), 6) for t in loop.pending_timers()] == [INTERVAL]
            loop.advance(INTERVAL)
        transport.starved = False
        loop.run_ready()
        loop.advance(INTERVAL)  # descriptors are back: this dial gets its socket

    assert transport.attempts == 7
    assert dialer.socket.stats["connect_failures"] == 6
    reason = "Too many open files" if code is None else "No buffer space available"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"dialing tcp://127.0.0.1:5555 failed: [Errno {code or errno.EMFILE}] "
                          f"{reason}; retrying on the reconnect schedule, logged once until it works"),
        (logging.INFO, "dialing tcp://127.0.0.1:5555 works again after 6 failed attempts"),
    ]


def test_a_refused_dial_is_no_episode(caplog):
    with caplog.at_level(logging.INFO, logger="scaproust.dialer"):
        dialer, loop = starved_dialer(StarvedTransport(errno.ECONNREFUSED))
        loop.run_ready()

    assert dialer.state == "waiting"
    assert caplog.records == []


def test_a_second_episode_out_of_descriptors_warns_again(caplog):
    transport = StarvedTransport()
    dialer, loop = starved_dialer(transport)
    loop.run_ready()
    transport.starved = False
    loop.advance(INTERVAL)  # the episode ends: this dial gets its socket
    dialer.evt_pipe_closed(dialer.pipe)  # and is refused
    transport.starved = True
    caplog.clear()

    with caplog.at_level(logging.WARNING, logger="scaproust.dialer"):
        loop.advance(INTERVAL)

    assert [r.levelno for r in caplog.records] == [logging.WARNING]
