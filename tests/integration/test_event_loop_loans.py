"""An asyncio event loop keeps the socket's pipes lent between awaited receives
(core/caller_reader.py, ``KeptLoan``): the next ``arecv()`` finds them in place, and whatever
the event loop no longer reads goes back to the I/O thread: a loan no receive used for a
whole check period, a pipe that pauses or dies, an error or hang-up the I/O thread's
selector reports, the socket's close. Nothing sleeps to wait for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time

import pytest

import scaproust as sp
from scaproust.core import caller_reader
from scaproust.core.caller_reader import CallerReader
from tests.integration.conftest import wait_until

T = 5.0
PUSH_HEADER = b"\x00SP\x00" + struct.pack(">H", 0x50) + b"\x00\x00"


@pytest.fixture
def kept_long(monkeypatch):
    """No check takes a loan back during the test: only the other reasons can."""
    monkeypatch.setattr(caller_reader, "PARK_CHECK", 60.0)


@pytest.fixture
def lends(monkeypatch):
    """How many times the socket's pipes were lent afresh."""
    calls: list[int] = []
    real = CallerReader._lend

    def counted(self, *args):
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(CallerReader, "_lend", counted)
    return calls


def pull_and_push(session, **options):
    pull = session.socket(sp.Pull, recv_timeout=T, **options)
    push = session.socket(sp.Push, send_timeout=T)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"warm-up")
    assert pull.recv() == b"warm-up"
    return pull, push


async def awaiting_lent(sock) -> asyncio.Task:
    """A task awaiting ``sock.arecv()`` with its event loop holding all the socket's pipes.
    A loan is not made when the session stays busy longer than an event loop may wait for
    it (the task then waits for the I/O thread's delivery): that task is cancelled (it has
    taken nothing) and another one tries."""
    reader = sock._core.reader
    deadline = time.monotonic() + T
    while True:
        task = asyncio.create_task(sock.arecv())
        attempt_ends = time.monotonic() + 0.2
        while time.monotonic() < attempt_ends:
            await asyncio.sleep(0)
            park = reader.park
            if park is not None and park.waiting and park.holds(sock._core.pipes):
                return task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert time.monotonic() < deadline, "the pipes were never lent to the event loop"


async def lent_then_sent(sock, sender, body: bytes) -> bytes:
    """``await sock.arecv()`` once its event loop reads the pipes, ``body`` sent then."""
    task = await awaiting_lent(sock)
    sender.send(body)
    return await asyncio.wait_for(task, T)


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + T
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def test_the_next_arecv_finds_the_loan_in_place(session, kept_long, lends):
    pull, push = pull_and_push(session)
    reader = pull._core.reader
    lends.clear()  # the warm-up's own receive lent them to its thread

    async def main():
        first = await lent_then_sent(pull, push, b"one")
        park = reader.park
        assert len(lends) == 1 and park is not None and not park.revoked
        second = await lent_then_sent(pull, push, b"two")
        assert reader.park is park  # the same loan: nothing lent again
        return first, second

    assert asyncio.run(main()) == (b"one", b"two")
    assert len(lends) == 1


def test_a_pipe_that_joins_is_lent_too_at_the_next_arecv(session, kept_long):
    pull, push = pull_and_push(session)
    reader = pull._core.reader
    other = session.socket(sp.Push, send_timeout=T)

    async def main():
        assert await lent_then_sent(pull, push, b"one") == b"one"
        first = reader.park
        other.connect(pull.endpoints[0].url)
        await until(lambda: len(pull._core.pipes) == 2, "the second pipe")
        assert await lent_then_sent(pull, other, b"two") == b"two"
        return first

    first = asyncio.run(main())
    assert first.revoked and first.watched == []  # taken back in the event loop's thread
    assert len(reader.park.lent) == 2  # lent afresh, both pipes


def test_a_loan_nobody_uses_goes_back_to_the_io_thread_which_reads_again(session, lends):
    pull, push = pull_and_push(session)
    reader = pull._core.reader
    assert asyncio.run(lent_then_sent(pull, push, b"one")) == b"one"
    park = reader.park

    # The event loop is closed: the I/O thread's look finds the loan unused and takes it
    # back; the duplicates are closed at once (no event loop left to watch them).
    wait_until(lambda: reader.park is None and not reader.busy, what="the loan taken back")
    assert park.revoked and park.watched == [] and reader._stale == []
    push.send(b"two")
    assert sp.poll({pull: sp.POLLIN}, timeout=T) == {pull: sp.POLLIN}
    assert pull.try_recv() == b"two"


def test_a_task_that_awaits_longer_than_the_checks_keeps_the_loan(session, monkeypatch):
    # A sparse request stream: the task waits through many checks, and its message is
    # still read by its event loop when it comes, not handed over by the I/O thread;
    # meanwhile the checks space out (an idle server wakes the I/O thread ever less).
    monkeypatch.setattr(caller_reader, "PARK_CHECK", 0.002)
    pull, push = pull_and_push(session)
    reader = pull._core.reader
    checks = []  # the interval each check set for the next
    real_check = CallerReader._check_park
    monkeypatch.setattr(CallerReader, "_check_park",
                        lambda self: (real_check(self), checks.append(self._check_every)))

    async def main():
        task = await awaiting_lent(pull)
        park = reader.park
        await until(lambda: len(checks) >= 5, "five checks")
        assert reader.park is park and not park.revoked  # kept through them all
        # Used once (when lent), then awaited with: looked at less and less often.
        assert checks[:5] == [0.002, 0.004, 0.008, 0.016, 0.032]
        push.send(b"late")
        assert await asyncio.wait_for(task, T) == b"late"
        assert park.waiting == 0
        return park

    asyncio.run(main())


def test_a_loan_taken_back_from_another_thread_leaves_its_event_loop_when_it_runs_again(
        session):
    pull, push = pull_and_push(session)
    reader = pull._core.reader
    aloop = asyncio.new_event_loop()
    try:
        assert aloop.run_until_complete(lent_then_sent(pull, push, b"one")) == b"one"
        park = reader.park
        watched = list(park.watched)
        # Stopped, not closed: the I/O thread takes the loan back and leaves the
        # duplicates to the event loop, whose selector still holds them.
        # Its last step first: the I/O thread clears ``park``, gives the pipes back, then
        # lists the loan as stale.
        wait_until(lambda: reader.park is None and reader._stale == [park],
                   what="the loan taken back")
        assert all(w.fileno() != -1 for w in watched)
        push.send(b"two")
        assert pull.recv() == b"two"  # read by the I/O thread meanwhile
        aloop.run_until_complete(asyncio.sleep(0))  # the posted removal runs
        assert reader._stale == [] and park.watched == []
        assert all(w.fileno() == -1 for w in watched)
    finally:
        aloop.close()


def test_a_kept_pipe_that_pauses_goes_back_and_the_pause_holds(session, kept_long):
    pull, push = pull_and_push(session, recv_buffer=4)
    reader = pull._core.reader
    pipe = next(iter(pull._core.pipes))

    async def main():
        assert await lent_then_sent(pull, push, b"one") == b"one"
        for n in range(30):  # nobody receives: the event loop reads until the queue is full
            push.send(b"m%d" % n)
        await until(lambda: reader.park is None, "the pause to take the loan back")

    asyncio.run(main())
    assert not pipe._watching and not pipe._lent  # paused, and the loop's to resume
    assert [pull.recv() for _ in range(30)] == [b"m%d" % n for n in range(30)]


def test_a_kept_pipe_whose_peer_resets_is_given_back_by_the_io_threads_alarm(
        session, kept_long, caplog):
    # The event loop is closed, the check is an hour away: only the I/O thread's selector,
    # reporting the reset on the lent descriptor, can tell.
    pull = session.socket(sp.Pull, recv_timeout=T)
    host, port = pull.bind("tcp://127.0.0.1:0").url[len("tcp://"):].rsplit(":", 1)
    peer = socket.create_connection((host, int(port)), timeout=T)
    try:
        peer.sendall(PUSH_HEADER)
        assert peer.recv(8, socket.MSG_WAITALL)[:4] == b"\x00SP\x00"
        wait_until(lambda: len(pull._core.pipes) == 1, what="the pipe")

        class Raw:
            def send(self, body):
                peer.sendall(struct.pack(">Q", len(body)) + body)

        assert asyncio.run(lent_then_sent(pull, Raw(), b"one")) == b"one"
        assert pull._core.reader.park is not None
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        peer.close()  # with a zero linger: a reset
    wait_until(lambda: pull.stats.get("pipes_closed") == 1, what="the pipe closed")
    assert pull._core.reader.park is None and not pull._core.reader.busy


def test_a_peer_that_closes_while_the_event_loop_is_gone_is_noticed_and_the_next_paired(
        session):
    a = session.socket(sp.Pair, recv_timeout=T)
    url = a.bind("tcp://127.0.0.1:0").url
    b = session.socket(sp.Pair, send_timeout=T)
    b.connect(url)
    assert asyncio.run(lent_then_sent(a, b, b"from b")) == b"from b"
    b.close()  # a FIN: the I/O thread hears it once the unused loan is back
    wait_until(lambda: a.stats.get("pipes_closed") == 1, what="the close to be noticed")
    assert a._core.reader.park is None
    c = session.socket(sp.Pair, send_timeout=T)
    c.connect(url)
    c.send(b"from c")
    assert a.recv() == b"from c" and a.stats.get("pipes_rejected", 0) == 0


def test_closing_the_socket_takes_the_loan_back_in_the_event_loops_thread(
        session, kept_long, caplog):
    pull, push = pull_and_push(session)
    reader = pull._core.reader

    async def main():
        assert await lent_then_sent(pull, push, b"one") == b"one"
        park = reader.park
        pull.close()
        return park

    park = asyncio.run(main())
    assert park.revoked and park.watched == [] and reader._stale == []
    assert reader.park is None and reader._check is None  # its check went with it
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []


def test_a_second_event_loop_gets_its_message_while_the_first_keeps_the_loan(
        session, kept_long):
    pull, push = pull_and_push(session)
    first = asyncio.new_event_loop()
    got: list[bytes] = []
    thread = threading.Thread(target=first.run_forever)
    try:
        got.append(first.run_until_complete(lent_then_sent(pull, push, b"one")))
        thread.start()  # the first event loop runs on, keeping the loan, in its thread
        wait_until(first.is_running, what="the first event loop running")

        async def second():
            task = asyncio.create_task(pull.arecv())
            await asyncio.sleep(0)
            push.send(b"two")  # read by the first event loop, delivered to this one
            return await asyncio.wait_for(task, T)

        got.append(asyncio.run(second()))
        # Delivered across event loops while the first kept the loan (never stolen).
        assert pull._core.reader.park is not None
        assert pull._core.reader.park.aloop is first
    finally:
        if thread.is_alive():
            first.call_soon_threadsafe(first.stop)
            thread.join(T)
        first.close()
    assert got == [b"one", b"two"]


@contextlib.contextmanager
def stranded_loan(pull, *, close: bool = False):
    """An event loop that ran a task into ``pull.arecv()`` with the pipes lent, then
    stopped with the task still awaiting (``run_until_complete`` of a coroutine that
    returned); closed too with ``close``. Yields the loan."""
    aloop = asyncio.new_event_loop()
    tasks: list[asyncio.Task] = []

    async def start():
        tasks.append(await awaiting_lent(pull))

    try:
        aloop.run_until_complete(start())
        park = pull._core.reader.park
        assert park is not None and park.aloop is aloop and park.waiting == 1
        if close:
            tasks[0]._log_destroy_pending = False  # it can never end: its loop is closed
            aloop.close()
        yield park
    finally:
        if not aloop.is_closed():
            tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                aloop.run_until_complete(tasks[0])
            aloop.close()


def test_a_thread_receives_at_once_past_an_event_loop_that_stopped_awaiting(
        session, kept_long):
    # Its loan stayed while a task awaited with it, though nothing ran the event loop:
    # the thread's recv() waited for the I/O thread, which does not read lent pipes, and
    # timed out with the message in the kernel.
    pull, push = pull_and_push(session)
    with stranded_loan(pull) as park:
        push.send(b"one")
        assert pull.recv() == b"one"  # it takes the loan back, reads, and keeps its own
        assert park.revoked and pull._core.reader.park is None


def test_a_new_event_loop_receives_past_a_closed_one_that_kept_the_loan(session, kept_long):
    pull, push = pull_and_push(session)
    with stranded_loan(pull, close=True) as park:
        push.send(b"one")
        assert asyncio.run(asyncio.wait_for(pull.arecv(), T)) == b"one"
        assert park.revoked


def test_a_delivery_in_the_thread_of_a_closed_event_loop_still_wakes_its_receiver(
        session, kept_long):
    # The closed event loop's task still awaits: its watcher stays on the channel, and its
    # wake-up, called in its thread by whoever delivers there, raised "Event loop is
    # closed" into the delivery (the pipe's read failed with it).
    pull, push = pull_and_push(session)
    with stranded_loan(pull, close=True):
        for body in (b"one", b"two"):
            push.send(body)
            assert pull.recv() == body
    assert pull.stats.get("pipes_closed", 0) == 0


def test_a_loan_taken_back_from_a_loop_closed_since_closes_its_duplicates_with_the_socket(
        session, monkeypatch):
    # Taken back from the I/O thread while its event loop was stopped, the loan's
    # duplicates wait for that loop to remove them (a post), which its close dropped:
    # they stayed open for the socket's life, and its peer never saw the connection end.
    monkeypatch.setattr(caller_reader, "PARK_CHECK", 0.002)
    pull = session.socket(sp.Pull, recv_timeout=T)
    host, port = pull.bind("tcp://127.0.0.1:0").url[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=T) as peer:
        peer.sendall(PUSH_HEADER)
        assert peer.recv(8, socket.MSG_WAITALL)[:4] == b"\x00SP\x00"
        wait_until(lambda: len(pull._core.pipes) == 1, what="the pipe")
        reader = pull._core.reader
        aloop = asyncio.new_event_loop()
        tasks: list[asyncio.Task] = []

        async def start():
            tasks.append(await awaiting_lent(pull))

        aloop.run_until_complete(start())  # stopped, the task awaiting with the loan
        park = reader.park
        # Its removal posted to the stopped event loop: the loan is listed stale last.
        wait_until(lambda: park.revoked and reader._stale == [park],
                   what="the I/O thread's look taking it back")
        watched = [w.fileno() for w in park.watched]
        tasks[0]._log_destroy_pending = False  # it can never end: its loop is closed
        aloop.close()  # without running again: the post is dropped
        pull.close()
        assert reader._stale == [] and park.watched == []
        assert peer.recv(1) == b""  # the connection ended: no duplicate keeps it open
        assert all(_closed_fd(fd) for fd in watched)


def _closed_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False  # reused meanwhile is possible in general, not in this short test


def test_the_io_thread_takes_back_a_loan_whose_event_loop_stopped_awaiting(
        session, monkeypatch):
    # No other reader asks for the pipes: the I/O thread's next look does, and reads.
    monkeypatch.setattr(caller_reader, "PARK_CHECK", 0.002)
    pull, push = pull_and_push(session)
    with stranded_loan(pull) as park:
        wait_until(lambda: park.revoked, what="the loan taken back")
        push.send(b"one")
        wait_until(lambda: len(pull._channel.inbox) == 1, what="the I/O thread's read")
        assert pull.recv() == b"one"


def test_every_message_from_peers_that_come_and_go_reaches_an_event_loop(monkeypatch):
    # Every way a kept loan ends, many times over: checks every 2 ms (the consumer stops
    # now and then, so some find it unused), pipes that die (each peer closes after its
    # messages), pipes that pause (bursts larger than a queue of 8), loans made afresh
    # for each new pipe. The peers send in bursts, each once the last was received, so
    # that the consumer also waits, lent. Each peer's messages arrive all, once, in order.
    monkeypatch.setattr(caller_reader, "PARK_CHECK", 0.002)
    peers, each = 12, 60
    bursts = [1, 3, 12, 5, 20, 2, 9, 8]  # adds up to 60
    received = threading.Condition()
    count = [0]
    with sp.Session() as ours, sp.Session() as theirs:
        pull = ours.socket(sp.Pull, recv_timeout=T, recv_buffer=8)
        url = pull.bind("tcp://127.0.0.1:0").url

        def send_all():
            sent = 0
            for p in range(peers):
                with theirs.socket(sp.Push, send_timeout=T, linger=T) as push:
                    push.connect(url)
                    n = 0
                    for size in bursts:
                        for _ in range(size):
                            push.send(b"%d:%d" % (p, n))
                            n += 1
                        sent += size
                        with received:
                            assert received.wait_for(lambda s=sent: count[0] == s, T)

        async def receive_all():
            got = []
            while len(got) < peers * each:
                got.append(await pull.arecv())
                with received:
                    count[0] = len(got)
                    received.notify()
                if len(got) % 31 == 0:
                    await asyncio.sleep(0.01)  # long enough for a check to find it unused
            return got

        sender = threading.Thread(target=send_all)
        sender.start()
        try:
            got = asyncio.run(receive_all())
        finally:
            sender.join(T)
        assert not sender.is_alive()
    by_peer: dict[int, list[int]] = {}
    for body in got:
        p, n = body.split(b":")
        by_peer.setdefault(int(p), []).append(int(n))
    assert by_peer == {p: list(range(each)) for p in range(peers)}
