"""Trio: asend/arecv, contexts, async with / async for, cancellation that loses nothing,
timeouts, close, on a Trio run (facade/aio.py says how the waits work there).

Test list:
- REQ/REP over every transport: asend/arecv in two Trio tasks, every reply to its request
- a cancelled arecv (move_on_after) takes nothing: the next arecv gets the message
- a cancel scope and the socket's recv_timeout both end a wait; the latter as sp.Timeout
- an asend that waits for credit goes once a peer takes messages
- close() from another thread wakes a waiting arecv with sp.Closed
- REQ contexts in concurrent Trio tasks each get their own reply
- async with closes the socket; async for ends when the socket closes
- import scaproust does not load trio
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import trio

import scaproust as sp

LIMIT = 10  # seconds any one Trio run may take


def run(fn, *args):
    async def bounded():
        with trio.fail_after(LIMIT):
            return await fn(*args)

    return trio.run(bounded)


def test_req_rep_carry_every_request_and_reply(session, url):
    rep = session.socket(sp.Rep)
    req = session.socket(sp.Req)
    req.connect(rep.bind(url).url)

    async def main():
        async def serve():
            for _ in range(50):
                request = await rep.arecv()
                await rep.asend(b"re: " + request)

        replies = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            for i in range(50):
                await req.asend(b"%d" % i)
                replies.append(await req.arecv())
        return replies

    assert run(main) == [b"re: %d" % i for i in range(50)]


def test_a_cancelled_arecv_takes_nothing(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)

    async def main():
        with trio.move_on_after(0.05) as scope:
            await pull.arecv()
        assert scope.cancelled_caught
        push.send(b"kept")
        return await pull.arecv()

    assert run(main) == b"kept"


def test_a_cancel_scope_and_the_recv_timeout_both_end_a_wait(session):
    pull = session.socket(sp.Pull)

    async def main():
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.05):
                await pull.arecv()
        pull.recv_timeout = 0.05
        with pytest.raises(sp.Timeout):
            await pull.arecv()

    run(main)


def test_an_asend_waiting_for_credit_goes_once_a_peer_takes_messages(session):
    push = session.socket(sp.Push, send_timeout=5)
    url = "tcp://127.0.0.1:0"

    async def main():
        async with trio.open_nursery() as nursery:
            sent = trio.Event()

            async def send():
                await push.asend(b"waited for a peer")  # no pipe yet: no credit
                sent.set()

            nursery.start_soon(send)
            await trio.sleep(0)  # the send is waiting now
            assert not sent.is_set()
            pull = session.socket(sp.Pull, recv_timeout=5)
            push.connect(pull.bind(url).url)
            got = await pull.arecv()
            await sent.wait()
        return got

    assert run(main) == b"waited for a peer"


def test_close_from_another_thread_wakes_a_waiting_arecv(session):
    pull = session.socket(sp.Pull)

    async def main():
        closer = threading.Timer(0.05, pull.close)
        closer.start()
        try:
            with pytest.raises(sp.Closed):
                await pull.arecv()
        finally:
            closer.join()

    run(main)


def test_req_contexts_in_concurrent_tasks_each_get_their_own_reply(session):
    rep = session.socket(sp.Rep, recv_timeout=5)
    req = session.socket(sp.Req, recv_timeout=5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    got: dict[int, bytes] = {}

    async def main():
        async def ask(i):
            ctx = req.context()
            await ctx.asend(b"%d" % i)
            got[i] = await ctx.arecv()
            ctx.close()

        async def serve():
            for _ in range(8):
                request = await rep.arecv()
                await rep.asend(request * 2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            for i in range(8):
                nursery.start_soon(ask, i)

    run(main)
    assert got == {i: b"%d" % i * 2 for i in range(8)}


def test_async_with_closes_and_async_for_ends_at_close(session):
    push = session.socket(sp.Push, send_timeout=5)

    async def main():
        async with session.socket(sp.Pull) as pull:
            push.connect(pull.bind("tcp://127.0.0.1:0").url)
            for i in range(3):
                await push.asend(b"%d" % i)
            got = []
            async for msg in pull:
                got.append(msg)
                if len(got) == 3:
                    threading.Timer(0.02, pull.close).start()
        assert pull.closed
        return got

    assert run(main) == [b"0", b"1", b"2"]


def test_import_scaproust_does_not_load_trio():
    code = "import sys, scaproust; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
