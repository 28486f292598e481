"""SURVEYOR contexts between real sockets: nng's survey_test.c context cases ported
(context multi with 5 contexts, recv nonblock, recv close socket) and what the issue asks:
each context its own survey id and deadline, late answers dropped, ``recv`` after the
deadline ``sp.Timeout`` then ``sp.BadState`` as the socket does.
"""

from __future__ import annotations

import pytest

import scaproust as sp

from .conftest import in_thread, wait_until


def surveyor_and_respondent(session, url, **surveyor_options):
    surveyor = session.socket(sp.Surveyor, **surveyor_options)
    ep = surveyor.bind(url)
    respondent = session.socket(sp.Respondent, recv_timeout=2.0)
    respondent.connect(ep.url)
    wait_until(lambda: surveyor.stats.get("pipes_opened") == 1, what="the pipe")
    return surveyor, respondent


def test_context_multi_five_surveys_each_get_their_answer(session, url):
    # nng: test_surv_context_multi.
    surveyor, respondent = surveyor_and_respondent(session, url, survey_deadline=0.5)
    contexts = [surveyor.context() for _ in range(5)]
    for i, ctx in enumerate(contexts):
        ctx.send(b"%d" % i)
    for _ in contexts:
        respondent.send(respondent.recv())  # echo each survey
    for i in reversed(range(5)):
        assert contexts[i].recv(timeout=2.0) == b"%d" % i
    for ctx in contexts:  # nothing more: the deadline ends each context's survey
        with pytest.raises((sp.Timeout, sp.BadState)):
            ctx.recv(timeout=2.0)
    for ctx in contexts:
        ctx.close()


def test_recv_after_the_deadline_is_timeout_then_bad_state(session, url):
    surveyor, respondent = surveyor_and_respondent(session, url, survey_deadline=10.0)
    ctx = surveyor.context()
    ctx.survey_deadline = 0.1  # its own, the socket's stays
    assert surveyor.survey_deadline == 10.0
    ctx.send(b"anyone?")
    assert respondent.recv() == b"anyone?"
    with pytest.raises(sp.Timeout):
        ctx.recv(timeout=5.0)  # waits until the context's deadline only
    # The I/O thread's deadline timer fires about when the caller's wait ends: once it has,
    # an answer is late there too.
    wait_until(lambda: ctx._core_context.machine.state == "idle", what="the deadline")
    respondent.send(b"too late")
    wait_until(lambda: surveyor.stats.get("dropped_late") == 1, what="the late answer")
    with pytest.raises(sp.BadState):
        ctx.recv()


def test_recv_before_any_survey_and_recv_nonblock(session, url):
    # nng: test_surv_ctx_recv_nonblock.
    surveyor, respondent = surveyor_and_respondent(session, url)
    ctx = surveyor.context()
    with pytest.raises(sp.BadState):
        ctx.recv(block=False)
    ctx.send(b"q")
    with pytest.raises(sp.WouldBlock):
        ctx.recv(block=False)
    assert respondent.recv() == b"q"


def test_recv_close_socket(session, url):
    # nng: test_surv_ctx_recv_close_socket.
    surveyor, _ = surveyor_and_respondent(session, url, survey_deadline=30.0)
    ctx = surveyor.context()
    ctx.send(b"q")
    thread, errors = in_thread(ctx.recv, timeout=20.0)
    wait_until(lambda: ctx._channel.recv_waiters == 1, what="the recv to wait")
    surveyor.close()
    thread.join(5.0)
    assert [type(e) for e in errors] == [sp.Closed]


def test_contexts_and_the_socket_survey_side_by_side(session, url):
    surveyor, respondent = surveyor_and_respondent(session, url, survey_deadline=2.0,
                                                   recv_timeout=2.0)
    ctx = surveyor.context()
    surveyor.send(b"socket")
    ctx.send(b"context")
    for _ in range(2):
        respondent.send(b"re " + respondent.recv())
    assert surveyor.recv() == b"re socket"
    assert ctx.recv(timeout=2.0) == b"re context"
    assert surveyor.stats.get("dropped_stale", 0) == 0


def test_asyncio_and_poll_on_a_surveyor_context(session, url):
    import asyncio

    surveyor, respondent = surveyor_and_respondent(session, url, survey_deadline=2.0)

    async def main():
        ctx = surveyor.context()
        await ctx.asend(b"q")
        await asyncio.to_thread(lambda: respondent.send(respondent.recv() + b"!"))
        assert sp.poll({ctx: sp.POLLIN}, timeout=2.0) == {ctx: sp.POLLIN}
        return await ctx.arecv()

    assert asyncio.run(main()) == b"q!"


@pytest.mark.parametrize("on", ["socket", "context"])
def test_a_response_that_beats_its_survey_send_is_not_dropped_as_stale(session, url, on):
    # A receive waiting through a new survey carries over to it; the new survey's response,
    # come before its send() returned (outgoing() done, sent() not yet), is the receive's,
    # not stale: it was dropped, and the survey lost it.
    surveyor, respondent = surveyor_and_respondent(session, url, survey_deadline=5.0)
    sock = surveyor if on == "socket" else surveyor.context()
    sock.send(b"old")
    policy = sock._policy
    new = policy.outgoing(b"new")  # as send() begins; the old survey still current
    response = sp.Message(b"NEW", new.header)
    sock._channel.push_many([response])
    assert sock.recv_msg(timeout=2.0) == response
    policy.sent(new)
    assert surveyor.stats.get("purged_stale", 0) == 0
