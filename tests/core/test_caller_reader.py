"""The poll of a caller's thread that reads its socket's pipes (core/caller_reader.py):
kept from one wait to the next, never answering with an object it no longer polls, and
its spin before the sleep (``recv_spin``): when it polls, when it sleeps, and the
verdicts that make the next waits sleep at once."""

from __future__ import annotations

import socket

import pytest

from scaproust.core import caller_reader
from scaproust.core.caller_reader import _Poller
from scaproust.reactor.wakeup import Wakeup


def test_the_same_streams_polled_again_reuse_the_poll_and_find_what_is_readable():
    a, peer = socket.socketpair()
    wakeup = Wakeup()
    try:
        poller = _Poller()
        assert poller.readable([a], wakeup, 0.0) == set()
        kept = poller._poll

        peer.send(b"x")
        assert poller.readable([a], wakeup, 0.0) == {a}
        assert poller._poll is kept
        wakeup.wakeup()
        assert poller.readable([a], wakeup, 0.0) == {a, wakeup}
    finally:
        for obj in (a, peer, wakeup):
            obj.close()


def test_a_new_stream_on_a_reused_descriptor_number_is_the_one_answered():
    old, old_peer = socket.socketpair()
    wakeup = Wakeup()
    poller = _Poller()
    try:
        assert poller.readable([old], wakeup, 0.0) == set()
        old.close()
        old_peer.close()
        # The kernel hands out the lowest free numbers: the new pair usually gets the old
        # pair's, so a poll kept by descriptor number would still answer ``old``.
        new, new_peer = socket.socketpair()
        new_peer.send(b"x")

        assert poller.readable([new], wakeup, 0.0) == {new}
    finally:
        for obj in (new, new_peer, wakeup):
            obj.close()


def test_fewer_streams_than_last_time_are_polled_alone():
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    wakeup = Wakeup()
    try:
        poller = _Poller()
        b_peer.send(b"x")
        assert poller.readable([a, b], wakeup, 0.0) == {b}

        assert poller.readable([a], wakeup, 0.0) == set()  # b is no longer lent
    finally:
        for obj in (a, a_peer, b, b_peer, wakeup):
            obj.close()


# --- the spin before the sleep (``recv_spin``): a fake poll and clock --------------------

class _Script:
    """A stand-in for the poller's ``select.poll``: answers the polls from a script and
    advances a fake clock by ``step`` at each yield between two of them."""

    def __init__(self, ready_after: int | None, step: float = 10e-6) -> None:
        self.ready_after = ready_after  # the n-th poll(0) finds the stream readable
        self.step = step
        self.now = 100.0
        self.timeouts: list[object] = []  # every poll's timeout: 0 = a spin's, else asleep
        self.fd = 0

    def poll(self, timeout=None):
        self.timeouts.append(timeout)
        spins = self.timeouts.count(0)
        if timeout != 0 or (self.ready_after is not None and spins > self.ready_after):
            return [(self.fd, 1)]  # a sleep always ends with the stream readable
        return []


@pytest.fixture
def scripted(monkeypatch):
    """A poller polling one socket through a ``_Script`` installed by ``use(script)``."""
    a, peer = socket.socketpair()
    wakeup = Wakeup()
    poller = _Poller()
    assert poller.readable([a], wakeup, 0.0) == set()  # registers a: kept from now on
    monkeypatch.setattr(caller_reader, "SPIN_CPUS", True)

    def use(script: _Script) -> None:
        script.fd = a.fileno()
        poller._poll = script
        poller._last = script.now  # the last wait just ended: see SPIN_GAP

        def advance():
            script.now += script.step

        monkeypatch.setattr(caller_reader, "_now", lambda: script.now)
        monkeypatch.setattr(caller_reader, "_yield", advance)

    yield poller, a, wakeup, use
    for obj in (a, peer, wakeup):
        obj.close()


SPIN = 200e-6


def test_a_message_caught_within_the_cheap_time_is_returned_without_a_sleep(scripted):
    poller, a, wakeup, use = scripted
    poller._backoff, poller._credit = 4, caller_reader.SPIN_CREDIT - 5e-6
    script = _Script(ready_after=1)  # the 2nd poll(0): one yield, 10 µs
    use(script)

    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [0, 0]  # no sleep
    # It paid (SPIN_CHEAP - 10 µs): the credit is full again, and so every wait spins.
    assert (poller._skip, poller._backoff, poller._credit) == (0, 1, caller_reader.SPIN_CREDIT)


def test_a_message_already_there_is_no_verdict(scripted):
    poller, a, wakeup, use = scripted
    poller._backoff, poller._credit = 8, 1e-6
    script = _Script(ready_after=0)
    use(script)

    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [0]
    assert (poller._skip, poller._backoff, poller._credit) == (0, 8, 1e-6)


def test_late_catches_use_up_the_credit_then_the_next_waits_sleep_at_once(scripted):
    poller, a, wakeup, use = scripted
    late = 7  # polls: 63 µs at 9 µs a yield, 43 µs later than SPIN_CHEAP
    cost = late * 9e-6 - caller_reader.SPIN_CHEAP
    assert poller._credit == caller_reader.SPIN_CREDIT  # a new poller's: 4 of them, here
    for n in range(1, 5):
        script = _Script(ready_after=late, step=9e-6)
        use(script)
        assert poller.readable([a], wakeup, None, SPIN) == {a}
        assert script.timeouts == [0] * (late + 1)
        assert poller._skip == 0 and poller._backoff == 1
        assert poller._credit == pytest.approx(caller_reader.SPIN_CREDIT - n * cost)
    script = _Script(ready_after=late, step=9e-6)
    use(script)
    assert poller.readable([a], wakeup, None, SPIN) == {a}  # the fifth: credit run out
    assert (poller._skip, poller._backoff, poller._credit) == (1, 2, caller_reader.SPIN_PROBE)

    script = _Script(ready_after=0)
    use(script)
    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [None]  # skipped: straight to sleep
    assert poller._skip == 0
    for _ in range(2):  # the probe's credit: one late catch, not two
        script = _Script(ready_after=late, step=9e-6)
        use(script)
        assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert (poller._skip, poller._backoff) == (2, 4)


def test_misses_in_a_row_double_the_waits_that_sleep_at_once_up_to_the_most(scripted):
    poller, a, wakeup, use = scripted
    runs = []
    for _ in range(9):
        script = _Script(ready_after=None)  # nothing comes within the spin
        use(script)
        assert poller.readable([a], wakeup, None, SPIN) == {a}  # the sleep's catch
        spins = script.timeouts.count(0)
        assert script.timeouts == [0] * spins + [None]
        assert spins == 1 + round(SPIN / script.step)  # polled until the spin's end
        runs.append(poller._skip)
        for _ in range(poller._skip):  # the waits that follow sleep at once
            script = _Script(ready_after=0)
            use(script)
            assert poller.readable([a], wakeup, None, SPIN) == {a}
            assert script.timeouts == [None]
    assert runs == [1, 2, 4, 8, 16, 32, 64, 64, 64]
    assert caller_reader.SPIN_SKIP_MAX == 64


def test_a_spin_ends_at_the_deadline_with_nothing(scripted):
    poller, a, wakeup, use = scripted
    script = _Script(ready_after=None)
    use(script)
    deadline = script.now + 55e-6

    assert poller.readable([a], wakeup, deadline, SPIN) == set()
    assert script.timeouts == [0] * 7  # 0, 10, ... 60 µs: past the deadline, no sleep
    assert poller._skip == 0  # a timeout is no verdict


def test_a_busy_io_thread_ends_the_spin_and_no_spin_runs_without_a_spin_or_second_cpu(
        scripted, monkeypatch):
    poller, a, wakeup, use = scripted

    class Loop:
        sleeping = True

    loop = poller._loop = Loop()
    script = _Script(ready_after=None)
    use(script)
    original = caller_reader._yield

    def busy_after_two():
        original()
        if script.timeouts.count(0) == 2:
            loop.sleeping = False  # the I/O thread woke: it needs the interpreter

    monkeypatch.setattr(caller_reader, "_yield", busy_after_two)
    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [0, 0, 0, None]  # the third poll saw it busy: asleep
    assert poller._skip == 1

    poller._skip = 0
    script = _Script(ready_after=0)
    use(script)
    assert poller.readable([a], wakeup, None, 0.0) == {a}  # recv_spin=0
    assert script.timeouts == [None]
    monkeypatch.setattr(caller_reader, "SPIN_CPUS", False)
    script = _Script(ready_after=0)
    use(script)
    assert poller.readable([a], wakeup, None, SPIN) == {a}  # one processor
    assert script.timeouts == [None]


def test_a_wait_long_after_the_last_one_ended_sleeps_at_once_with_no_verdict(scripted):
    poller, a, wakeup, use = scripted
    poller._backoff, poller._credit = 4, 1e-6
    script = _Script(ready_after=0)
    use(script)
    script.now += caller_reader.SPIN_GAP * 1.01  # the thread was busy elsewhere since

    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [None]
    assert (poller._skip, poller._backoff, poller._credit) == (0, 4, 1e-6)
    assert poller._last == script.now  # this wait's end: the next one, soon, spins

    script = _Script(ready_after=2)
    use(script)
    assert poller.readable([a], wakeup, None, SPIN) == {a}
    assert script.timeouts == [0, 0, 0]


def test_a_message_that_comes_during_a_spin_on_a_real_poll_is_caught_by_it(monkeypatch):
    # The fake poll above cannot tell whether the spin reads select.poll's answers right:
    # here the peer writes between two real polls of the spin (at its third yield), and
    # the spin returns the stream without a sleep (a sleep would come after a miss, which
    # sets a run of skipped waits; this catch, with the credit full, sets none).
    a, peer = socket.socketpair()
    wakeup = Wakeup()
    monkeypatch.setattr(caller_reader, "SPIN_CPUS", True)
    yields = []

    def peer_writes_at_the_third_yield():
        yields.append(1)
        if len(yields) == 3:
            peer.send(b"x")

    monkeypatch.setattr(caller_reader, "_yield", peer_writes_at_the_third_yield)
    try:
        poller = _Poller()
        poller._last = float("inf")  # as if a wait had just ended: this one spins
        poller._credit = 1.0  # however slow this machine: a catch that pays

        assert poller.readable([a], wakeup, None, SPIN) == {a}
        assert len(yields) == 3  # it stopped at the poll right after the write
        assert (poller._skip, poller._backoff, poller._credit) == (
            0, 1, caller_reader.SPIN_CREDIT)
    finally:
        for obj in (a, peer, wakeup):
            obj.close()
