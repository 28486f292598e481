"""asyncio: arecv/asend, async with, async for, cancellation that loses nothing, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import scaproust as sp
from scaproust.facade import aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_asend_and_arecv_carry_messages_on_a_running_loop(session):
    async def main():
        pull = session.socket(sp.Pull)
        push = session.socket(sp.Push)
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        receiver = asyncio.create_task(pull.arecv())  # waiting before anything is sent
        for i in range(100):
            await push.asend(b"%d" % i)
        first = await receiver
        rest = [await pull.arecv() for _ in range(99)]
        await push.asend_msg(sp.Message(b"msg"))
        assert (await pull.arecv_msg()).body == b"msg"
        return [first] + rest

    assert run(main()) == [b"%d" % i for i in range(100)]


def test_an_asend_burst_that_outruns_its_pipe_gathers_and_loses_nothing(session, monkeypatch):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0, send_buffer=16)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    gatherer, quiet = push._core.channel.gatherer, []
    post_quietly = gatherer.post_quietly
    monkeypatch.setattr(gatherer, "post_quietly", lambda: (quiet.append(1), post_quietly())[1])
    count = 3000

    async def burst():
        for i in range(count):  # out of its 16 slots again and again, waiting as a watcher
            await push.asend(b"%d" % i)

    run(burst())
    assert [pull.recv() for _ in range(count)] == [b"%d" % i for i in range(count)]
    assert quiet, "no drain of the burst gathered"


def test_a_cancelled_arecv_loses_no_message(session):
    async def main():
        pull = session.socket(sp.Pull)
        push = session.socket(sp.Push, send_timeout=5)
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        waiting = asyncio.create_task(pull.arecv())
        await asyncio.sleep(0)  # let it start waiting
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        push.send(b"kept")
        return await pull.arecv()

    assert run(main()) == b"kept"


def test_asyncio_timeouts_and_the_socket_recv_timeout_work(session):
    async def main():
        pull = session.socket(sp.Pull)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pull.arecv()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pull.arecv(), 0.05)
        pull.recv_timeout = 0.05
        with pytest.raises(sp.Timeout, match=r"^recv timed out after 0.05 s$"):
            await pull.arecv()
        push = session.socket(sp.Push, send_timeout=0.05)  # no peer
        with pytest.raises(sp.Timeout, match=r"^send timed out after 0.05 s$"):
            await push.asend(b"x")

        # An outer timeout shorter than the socket's wins, and is asyncio's own.
        pull.recv_timeout = 30.0
        with pytest.raises(TimeoutError) as outer:
            async with asyncio.timeout(0.05):
                await pull.arecv()
        assert type(outer.value) is TimeoutError

        # A message before the deadline is returned, and the call's deadline is
        # forgotten with it: the event loop's timer, when it fires, expires nothing.
        loop = asyncio.get_running_loop()
        push.connect(pull.bind("inproc://aio-timeouts").url)
        loop.call_soon(push.send, b"in time")  # once arecv() waits, its deadline kept
        assert await pull.arecv() == b"in time"
        assert aio._deadlines_of(loop)._waiting == {}

    run(main())


def test_calls_awaiting_with_different_timeouts_each_expire_at_their_own(session):
    # One timer of the event loop keeps every call's deadline: set for the earliest, then
    # again for the next one left.
    async def main():
        ends = []

        async def receive(timeout):
            pull = session.socket(sp.Pull, recv_timeout=timeout)
            started = time.monotonic()
            with pytest.raises(sp.Timeout):
                await pull.arecv()
            ends.append((timeout, time.monotonic() - started))

        await asyncio.gather(receive(0.06), receive(0.02), receive(0.04))
        return ends

    ends = run(main())
    assert [timeout for timeout, _ in ends] == [0.02, 0.04, 0.06]
    assert all(waited >= timeout for timeout, waited in ends)


def test_calls_that_start_one_after_another_share_one_timer(session, monkeypatch):
    sets = []
    real = aio._Deadlines._set
    monkeypatch.setattr(aio._Deadlines, "_set",
                        lambda self, deadline: (sets.append(deadline), real(self, deadline)))

    async def main():
        pull = session.socket(sp.Pull, recv_timeout=30.0)
        push = session.socket(sp.Push, send_timeout=5)
        push.connect(pull.bind("inproc://aio-one-timer").url)
        loop = asyncio.get_running_loop()
        for n in range(5):
            loop.call_soon(push.send, b"%d" % n)  # once arecv() waits
            assert await pull.arecv() == b"%d" % n
        return aio._deadlines_of(loop)._waiting

    assert run(main()) == {}
    assert len(sets) == 1  # the first call's timer served the four after it


def test_async_with_closes_and_async_for_ends_when_the_socket_closes(session):
    async def main():
        async with session.socket(sp.Pull) as pull:
            push = session.socket(sp.Push, send_timeout=5)
            push.connect(pull.bind("tcp://127.0.0.1:0").url)
            for body in (b"a", b"b", b"c"):
                await push.asend(body)
            got = []
            async for body in pull:
                got.append(body)
                if len(got) == 3:
                    threading.Thread(target=pull.close).start()
            assert got == [b"a", b"b", b"c"]
        assert pull.closed

    run(main())


def test_sync_and_async_calls_mix_on_one_socket(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)

    async def main():
        push.send(b"sync sent")
        first = await pull.arecv()
        await push.asend(b"async sent")
        return first, pull.recv(timeout=5)

    assert run(main()) == (b"sync sent", b"async sent")


def test_an_arecv_cancelled_just_as_its_message_arrives_leaves_it_for_the_next(session):
    async def main():
        pull = session.socket(sp.Pull)
        push = session.socket(sp.Push, send_timeout=5)
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        waiting = asyncio.create_task(pull.arecv())
        await asyncio.sleep(0)
        push.send(b"arrived during cancel")
        # The waiting task lent the pipe to this event loop, which reads it: yield until
        # the message is in the queue (the task's wake-up is then scheduled, not yet run).
        deadline = time.monotonic() + 5
        while not pull._channel.readiness()[0]:
            assert time.monotonic() < deadline, "the message never reached the queue"
            await asyncio.sleep(0)
        waiting.cancel()  # the task is woken for the message but cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await pull.arecv()

    assert run(main()) == b"arrived during cancel"


def test_a_zero_timeout_waits_not_at_all_as_in_the_blocking_calls(session):
    # The blocking calls raise WouldBlock for it; the awaiting ones raised Timeout.
    async def main():
        pull = session.socket(sp.Pull, recv_timeout=0)
        push = session.socket(sp.Push, send_timeout=0)  # no peer: no room
        with pytest.raises(sp.WouldBlock, match="^recv would block$"):
            await pull.arecv()
        with pytest.raises(sp.WouldBlock, match="^send would block$"):
            await push.asend(b"x")
        with pytest.raises(sp.WouldBlock):
            pull.recv()
        push.connect(pull.bind("inproc://zero-timeout").url)
        pull.recv_timeout = push.send_timeout = 5.0
        await push.asend(b"there")
        assert await pull.arecv() == b"there"

    run(main())
