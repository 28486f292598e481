"""SUB contexts between real sockets: nng's sub_test.c context cases ported (multi
context topics, drop new / drop old, recv buf option, context cannot send, recv nonblock,
close context recv) and what the issue adds: a slow context never slows the pipe, the
socket or the other contexts; unsubscribing purges the context's own queue; poll, asyncio.
"""

from __future__ import annotations

import asyncio

import pytest

import scaproust as sp

from .conftest import in_thread, wait_until


def pub_sub(session, url, **sub_options):
    pub = session.socket(sp.Pub)
    ep = pub.bind(url)
    sub = session.socket(sp.Sub, recv_timeout=2.0, **sub_options)
    sub.connect(ep.url)
    wait_until(lambda: pub.stats.get("pipes_opened") == 1, what="the pipe")
    return pub, sub


def test_multi_context_topics(session, url):
    # nng: test_sub_multi_context.
    pub, sub = pub_sub(session, url)
    c1, c2 = sub.context(), sub.context()
    c1.subscribe(b"one")
    c1.subscribe("all")
    c2.subscribe(b"two")
    c2.subscribe(b"all")
    for body in (b"one for the money", b"all dogs go to heaven", b"nobody likes a snitch",
                 b"two for the show"):
        pub.send(body)
    assert c1.recv() == b"one for the money"
    assert c1.recv() == b"all dogs go to heaven"
    assert c2.recv() == b"all dogs go to heaven"
    assert c2.recv() == b"two for the show"
    for ctx in (c1, c2):
        with pytest.raises(sp.Timeout):
            ctx.recv(timeout=0.1)
    c2.unsubscribe(b"two")
    c2.unsubscribe(b"all")
    with pytest.raises(ValueError):
        c2.unsubscribe(b"all")
    wait_until(lambda: sub.stats.get("dropped_unmatched") == 1, what="the snitch dropped")


@pytest.mark.parametrize(("prefer_new", "kept"), [(False, [b"one", b"two"]),
                                                  (True, [b"two", b"three"])])
def test_drop_new_and_drop_old(session, url, prefer_new, kept):
    # nng: test_sub_drop_new, test_sub_drop_old (with a context's own recv_buffer).
    pub, sub = pub_sub(session, url)
    ctx = sub.context()
    ctx.recv_buffer = 2
    assert ctx.prefer_new is True  # nng's default
    ctx.prefer_new = prefer_new
    ctx.subscribe(b"")
    for body in (b"one", b"two", b"three"):
        pub.send(body)
    wait_until(lambda: sub.stats.get("dropped_context_full") == 1, what="one message lost")
    assert [ctx.recv(), ctx.recv()] == kept
    with pytest.raises(sp.Timeout):
        ctx.recv(timeout=0.1)


def test_recv_buf_option_comes_from_the_socket_and_is_the_contexts_own(session):
    # nng: test_sub_recv_buf_option.
    sub = session.socket(sp.Sub, recv_buffer=3)
    ctx = sub.context()
    assert ctx.recv_buffer == 3
    ctx.recv_buffer = 1
    assert (ctx.recv_buffer, sub.recv_buffer) == (1, 3)
    with pytest.raises(ValueError):
        ctx.recv_buffer = -1
    with pytest.raises(TypeError):
        ctx.prefer_new = 1


def test_a_slow_context_never_slows_the_others_nor_the_socket(session, url):
    pub, sub = pub_sub(session, url, recv_buffer=1000)
    slow, fast = sub.context(), sub.context()
    slow.recv_buffer = 5
    for ctx in (slow, fast):
        ctx.subscribe(b"")
    sub.subscribe(b"")
    n = 200
    for i in range(n):
        pub.send(b"%d" % i)
    assert [fast.recv() for _ in range(n)] == [b"%d" % i for i in range(n)]
    assert [sub.recv() for _ in range(n)] == [b"%d" % i for i in range(n)]
    assert [slow.recv() for _ in range(5)] == [b"%d" % i for i in range(n - 5, n)]
    assert sub.stats["dropped_context_full"] == n - 5
    assert pub.stats.get("dropped_slow_subscriber", 0) == 0


def test_unsubscribing_purges_the_contexts_own_queue(session, url):
    pub, sub = pub_sub(session, url)
    ctx = sub.context()
    ctx.subscribe(b"a")
    ctx.subscribe(b"b")
    pub.send(b"a1")
    pub.send(b"b1")
    wait_until(lambda: sub.stats.get("msgs_received") == 2, what="both queued")
    ctx.unsubscribe(b"a")
    assert ctx.recv() == b"b1"
    assert sub.stats["purged_unmatched"] == 1


def test_try_recv_many_on_a_context_takes_what_its_own_topics_match(session, url):
    pub, sub = pub_sub(session, url)
    ctx = sub.context()
    ctx.subscribe(b"x")
    for body in (b"x1", b"y1", b"x2", b"x3"):
        pub.send(body)
    got: list[bytes] = []
    wait_until(lambda: got.extend(ctx.try_recv_many(limit=2)) or len(got) >= 3,
               what="three messages in the context")
    assert got == [b"x1", b"x2", b"x3"]
    assert ctx.try_recv_many() == []
    assert sub.stats["dropped_unmatched"] == 1


def test_context_cannot_send_and_recv_nonblock(session):
    # nng: test_sub_context_cannot_send, test_sub_ctx_recv_nonblock.
    ctx = session.socket(sp.Sub).context()
    with pytest.raises(sp.NotSupported):
        ctx.send(b"x")
    with pytest.raises(sp.WouldBlock):
        ctx.recv(block=False)


def test_close_context_recv(session, url):
    # nng: test_sub_close_context_recv.
    pub, sub = pub_sub(session, url)
    ctx = sub.context()
    ctx.subscribe(b"")
    thread, errors = in_thread(ctx.recv, timeout=20.0)
    wait_until(lambda: ctx._channel.recv_waiters == 1, what="the recv to wait")
    ctx.close()
    thread.join(5.0)
    assert [type(e) for e in errors] == [sp.Closed]
    with pytest.raises(sp.Closed):
        ctx.subscribe(b"x")
    pub.send(b"after")  # reaches nobody: the closed context is gone
    wait_until(lambda: sub.stats.get("dropped_unmatched") == 1, what="dropped")


def test_poll_and_asyncio_on_a_sub_context(session, url):
    pub, sub = pub_sub(session, url)

    async def main():
        ctx = sub.context()
        ctx.subscribe(b"t")
        waiting = asyncio.ensure_future(ctx.arecv())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pub.send(b"t1")
        assert sp.poll({ctx: sp.POLLIN}, timeout=2.0) == {ctx: sp.POLLIN}
        return await ctx.arecv()

    assert asyncio.run(main()) == b"t1"


def test_a_context_dropped_without_close_stops_taking_messages(session, url):
    import gc

    pub, sub = pub_sub(session, url)
    ctx = sub.context()
    ctx.subscribe(b"")
    assert len(sub._core.contexts) == 1
    del ctx
    gc.collect()
    wait_until(lambda: not sub._core.contexts, what="the context's machine closed")
    pub.send(b"nobody")
    wait_until(lambda: sub.stats.get("dropped_unmatched") == 1, what="nobody took it")
