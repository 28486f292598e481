"""SURVEYOR and RESPONDENT between our own sockets over TCP and IPC, cooked and raw.

Test list:
- a survey reaches every respondent and every response comes back (either side listening)
- a surveyor with no respondent sends at once and its recv times out at the deadline
- recv before any survey is a state error
- a recv pending at the deadline times out, and the next recv is a state error
- the same with arecv, on asyncio and on Trio
- an answer still queued when the deadline passes is not handed over: a state error
- a late response is dropped, and the next survey gets only its own responses
- a new survey cancels the old one: responses to the old one are dropped
- two threads surveying at once: the survey sent last is the one running
- a recv waiting when another thread surveys again waits until the new survey's deadline
- survey ids on the wire go up by one per survey
- a respondent cannot send without a survey, and a new recv abandons the unanswered one
- a response to a surveyor that went away is discarded and send still succeeds
- raw sockets carry the headers the user writes (raw to raw, raw to cooked, cooked to raw)
- a survey crosses a raw device and the response finds its way back
"""

from __future__ import annotations

import time

import pytest

import scaproust as sp
from scaproust.protocols._headers import id_word
from tests.integration.conftest import (
    OVERLAP_TRANSPORTS,
    SEND_WAYS,
    in_thread,
    send_overlapping,
    sending,
    wait_until,
)

DEADLINE = 0.3  # the survey deadline when nobody answers: short
ANSWER_DEADLINE = 0.6  # when respondents must answer in time: far above loopback latency
WAIT = 5.0  # the recv timeout of everything that must arrive


def second_url(url: str, tmp_path) -> str:
    """Another bindable URL of the same transport as ``url``."""
    return "tcp://127.0.0.1:0" if url.startswith("tcp") else f"ipc://{tmp_path}/second.ipc"


def pipes_of(sock, count: int) -> None:
    wait_until(lambda: sock.stats.get("pipes_opened", 0) >= count, what=f"{count} pipe(s) on {sock}")


def surveyor(session, deadline=ANSWER_DEADLINE, **options):
    return session.socket(sp.Surveyor, survey_deadline=deadline, **options)


def respondent(session, raw: bool = False):
    return session.socket(sp.Respondent, raw=raw, recv_timeout=WAIT)


@pytest.mark.parametrize("listener", ["surveyor-listens", "respondents-listen"])
def test_a_survey_reaches_every_respondent_and_every_response_comes_back(session, url, tmp_path, listener):
    sur = surveyor(session)
    resps = [respondent(session) for _ in range(3)]
    if listener == "surveyor-listens":
        bound = sur.bind(url).url
        for resp in resps:
            resp.connect(bound)
    else:
        urls = [url, second_url(url, tmp_path), "tcp://127.0.0.1:0"]
        for resp, address in zip(resps, urls, strict=True):
            sur.connect(resp.bind(address).url)
    pipes_of(sur, 3)

    sur.send(b"who is there?")
    for n, resp in enumerate(resps):
        assert resp.recv() == b"who is there?"
        resp.send(f"respondent {n}".encode())

    assert sorted(sur.recv() for _ in resps) == [b"respondent 0", b"respondent 1", b"respondent 2"]
    with pytest.raises(sp.Timeout):
        sur.recv()  # nothing more within the deadline


def test_a_surveyor_with_no_respondent_sends_at_once_and_times_out_at_the_deadline(session):
    sur = surveyor(session, DEADLINE)

    sur.send(b"anyone?", block=False)  # never blocks: no respondent needed
    started = time.monotonic()
    with pytest.raises(sp.Timeout):
        sur.recv()

    assert time.monotonic() - started >= DEADLINE - 0.05


def test_recv_before_any_survey_is_a_state_error(session):
    sur = surveyor(session)

    with pytest.raises(sp.BadState):
        sur.recv()
    with pytest.raises(sp.BadState):
        sur.recv(block=False)


def test_a_recv_pending_at_the_deadline_times_out_and_the_next_is_a_state_error(session, url):
    sur = surveyor(session, DEADLINE)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send(b"silence?")
    with pytest.raises(sp.Timeout):
        sur.recv(timeout=10 * DEADLINE)  # the survey's deadline comes first

    with pytest.raises(sp.BadState):
        sur.recv()
    with pytest.raises(sp.BadState):
        sur.recv(block=False)
    assert resp.recv() == b"silence?"  # it got the survey, and did not answer


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_an_arecv_pending_at_the_deadline_times_out_and_the_next_is_a_state_error(
        session, url, runner):
    # An asyncio wait ends at the deadline on the event loop's timer, and the attempt made
    # then found the survey over: it raised BadState, where a blocking recv() raises Timeout.
    sur = surveyor(session, DEADLINE)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    async def survey_then_wait():
        await sur.asend(b"silence?")
        with pytest.raises(sp.Timeout, match=r"^recv timed out"):
            await sur.arecv()
        with pytest.raises(sp.BadState):
            await sur.arecv()

    if runner == "asyncio":
        import asyncio

        asyncio.run(asyncio.wait_for(survey_then_wait(), 10 * DEADLINE))
    else:
        import trio

        async def bounded():
            with trio.fail_after(10 * DEADLINE):
                await survey_then_wait()

        trio.run(bounded)
    assert resp.recv() == b"silence?"


def test_an_answer_still_queued_when_the_deadline_passes_is_not_handed_over(session, url):
    sur = surveyor(session)
    now = [time.monotonic()]
    sur._policy.clock = lambda: now[0]  # the policy's clock: the deadline as the user sees it
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send(b"q")
    assert resp.recv() == b"q"
    resp.send(b"in time, but not read in time")
    wait_until(lambda: sur.stats.get("msgs_received", 0) == 1, what="the answer queued")
    now[0] += ANSWER_DEADLINE

    with pytest.raises(sp.BadState):
        sur.recv(block=False)
    with pytest.raises(sp.BadState):
        sur.try_recv()


def test_the_callers_timeout_still_applies_within_a_survey(session):
    sur = session.socket(sp.Surveyor, survey_deadline=WAIT, recv_timeout=0.05)
    sur.send(b"q")

    started = time.monotonic()
    with pytest.raises(sp.Timeout):
        sur.recv()
    assert time.monotonic() - started < WAIT
    with pytest.raises(sp.Timeout):  # still within the survey: a timeout, not a state error
        sur.recv(timeout=0.01)


def test_a_late_response_is_dropped_and_the_next_survey_gets_only_its_own(session, url):
    sur = surveyor(session)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send(b"first")
    with pytest.raises(sp.Timeout):
        sur.recv()
    assert resp.recv() == b"first"
    wait_until(lambda: sur._core.proto.state == "idle", what="the backend's deadline")
    resp.send(b"late answer")
    wait_until(lambda: sur.stats.get("dropped_late", 0) == 1, what="the late answer dropped")

    sur.send(b"second")
    assert resp.recv() == b"second"
    resp.send(b"answer to the second")
    assert sur.recv() == b"answer to the second"
    with pytest.raises(sp.Timeout):
        sur.recv()


def test_a_new_survey_cancels_the_old_one(session, url):
    sur = surveyor(session, recv_timeout=WAIT)
    resp = respondent(session, raw=True)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send(b"old")
    old = resp.recv_msg()
    sur.send(b"new")
    new = resp.recv_msg()
    resp.send_msg(sp.Message(b"answer to old", old.header))
    resp.send_msg(sp.Message(b"answer to new", new.header))

    assert sur.recv() == b"answer to new"
    wait_until(lambda: sur.stats.get("dropped_stale", 0) == 1, what="the old answer dropped")
    with pytest.raises(sp.Timeout):
        sur.recv()


@pytest.mark.transports(OVERLAP_TRANSPORTS)
@pytest.mark.parametrize("way", [*SEND_WAYS, "context"])
def test_two_threads_surveying_at_once_leave_the_survey_the_socket_last_sent_running(
        session, url, way, monkeypatch):
    # As REQ's (test_reqrep.py): the policy must end with the survey the machine sent
    # last. Before, the first survey's late sent() made it the current one again, and its
    # purge dropped the answer to the second, already queued: recv() timed out.
    sur = surveyor(session, recv_timeout=WAIT)
    resp = respondent(session, raw=True)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)
    user = sur.context() if way == "context" else sur
    channel = user._channel

    def answer_both():
        for expected in (b"first", b"second"):  # the machine sends both, in their order
            survey = resp.recv_msg()
            assert survey.body == expected
            resp.send_msg(sp.Message(b"answer to " + expected, survey.header))
        wait_until(lambda: channel.inbox.count, what="the second's answer queued")

    send = sending(user, "send" if way == "context" else way)
    assert send_overlapping(user._policy, send, b"first", b"second", monkeypatch,
                            meanwhile=answer_both) is None
    assert user.recv() == b"answer to second"
    # A context's machine counts an answer to a survey it replaced as late.
    dropped = "dropped_late" if way == "context" else "dropped_stale"
    wait_until(lambda: sur.stats.get(dropped, 0) == 1, what="the first's answer dropped")


@pytest.mark.parametrize("via", ["socket", "context", "asyncio"])
def test_a_recv_waiting_when_another_thread_surveys_again_waits_for_the_new_survey(
        session, url, via):
    # A receive waiting when another thread sends a new survey carries over to it
    # (PROTOCOLS.md, "Contexts"), with the new survey's deadline. It kept the old one's:
    # Timeout there, the new survey still open and its answer not yet in.
    sur = surveyor(session, DEADLINE, recv_timeout=WAIT)
    resp = respondent(session, raw=True)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)
    user = sur.context() if via == "context" else sur
    user.send(b"first")
    first_sent = time.monotonic()
    got = []
    if via == "asyncio":
        import asyncio

        async def receive():
            got.append(await asyncio.wait_for(user.arecv(), WAIT))

        thread, errors = in_thread(lambda: asyncio.run(receive()))
    else:
        thread, errors = in_thread(lambda: got.append(user.recv()))
    channel = user._channel
    wait_until(lambda: channel.recv_waiters or channel.watchers or sur._core.reader.busy,
               what="the receive to wait")
    user.survey_deadline = WAIT
    user.send(b"second")
    for expected in (b"first", b"second"):
        survey = resp.recv_msg()
        assert survey.body == expected
    wait_until(lambda: time.monotonic() > first_sent + DEADLINE + 0.05,
               what="the first survey's deadline")
    resp.send_msg(sp.Message(b"answer to second", survey.header))
    thread.join(WAIT)
    assert not thread.is_alive()
    assert (got, errors) == ([b"answer to second"], [])


def test_survey_ids_on_the_wire_go_up_by_one(session, url):
    sur = surveyor(session)
    resp = respondent(session, raw=True)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    words = []
    for n in range(3):
        sur.send(b"%d" % n)
        msg = resp.recv_msg()
        assert msg.body == b"%d" % n
        words.append(int.from_bytes(msg.header[4:], "big"))  # below our own pipe word

    assert all(word & 0x80000000 for word in words)
    assert [(w - words[0]) & 0x7FFFFFFF for w in words] == [0, 1, 2]


def test_a_respondent_cannot_send_without_a_survey_and_a_new_recv_abandons_the_old_one(session, url):
    sur = surveyor(session)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    with pytest.raises(sp.BadState, match=r"^a RESPONDENT socket sends a response only to a "
                                          r"survey it has recv\(\)ed$"):
        resp.send(b"unasked")
    sur.send(b"q")
    assert resp.recv() == b"q"
    with pytest.raises(sp.Timeout):
        resp.recv(timeout=0.01)  # a new recv: the survey is abandoned
    with pytest.raises(sp.BadState):
        resp.send(b"too late")


def test_a_response_to_a_surveyor_that_went_away_is_discarded_and_send_succeeds(session, url):
    sur = surveyor(session)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)
    sur.send(b"q")
    assert resp.recv() == b"q"

    sur.close()
    wait_until(lambda: resp.stats.get("pipes_closed", 0) >= 1, what="the respondent's pipe to close")
    resp.send(b"nobody listens")

    wait_until(lambda: resp.stats.get("dropped_no_route", 0) == 1, what="the response discarded")


def test_raw_sockets_carry_the_headers_the_user_writes(session, url):
    sur = session.socket(sp.Surveyor, raw=True, recv_timeout=WAIT)
    resp = respondent(session, raw=True)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send_msg(sp.Message(b"raw survey", id_word(5)))
    got = resp.recv_msg()
    assert got.body == b"raw survey"
    assert len(got.header) == 8 and got.header[4:] == id_word(5) and not got.header[0] & 0x80
    resp.send_msg(sp.Message(b"raw answer", got.header))

    assert sur.recv_msg() == sp.Message(b"raw answer", id_word(5))
    # No deadline in raw mode: the surveyor can still receive long after.
    with pytest.raises(sp.Timeout):
        sur.recv(timeout=DEADLINE)
    resp.send_msg(sp.Message(b"much later", got.header))
    assert sur.recv_msg() == sp.Message(b"much later", id_word(5))


def test_a_raw_surveyor_talks_to_a_cooked_respondent(session, url):
    sur = session.socket(sp.Surveyor, raw=True, recv_timeout=WAIT)
    resp = respondent(session)
    resp.connect(sur.bind(url).url)
    pipes_of(sur, 1)

    sur.send_msg(sp.Message(b"q", id_word(0x7FFFFFFF)))
    assert resp.recv() == b"q"
    resp.send(b"a")

    assert sur.recv_msg() == sp.Message(b"a", id_word(0x7FFFFFFF))


def test_a_survey_crosses_a_raw_device_and_the_response_finds_its_way_back(session, url, tmp_path):
    # sur (cooked) -> [dev_in: raw respondent | dev_out: raw surveyor] -> resp (cooked)
    sur = surveyor(session, recv_timeout=WAIT)
    dev_in = respondent(session, raw=True)
    dev_out = session.socket(sp.Surveyor, raw=True, recv_timeout=WAIT)
    resp = respondent(session)
    dev_in.connect(sur.bind(url).url)
    resp.connect(dev_out.bind(second_url(url, tmp_path)).url)
    pipes_of(sur, 1)
    pipes_of(dev_out, 1)

    sur.send(b"far away?")
    survey = dev_in.recv_msg()
    dev_out.send_msg(survey)  # forwarded with the hop word on top of the id
    assert resp.recv_msg().header[4:] == survey.header  # one more hop: the stack grows
    resp.send(b"here")
    response = dev_out.recv_msg()
    assert response.header == survey.header  # our own pipe word is popped on the way back
    dev_in.send_msg(response)

    assert sur.recv_msg() == sp.Message(b"here", survey.header[4:])
