"""SURVEYOR / RESPONDENT against real peers: pynng, nngcat and nanocat, over TCP and IPC,
either side listening.

Their respondents answer every survey with one fixed body (nngcat/nanocat ``--data``, a
pynng thread) and record the surveys they got; their surveyors survey again and again
(nngcat every 2 s, see NNGCAT_INTERVAL; nanocat and pynng every 0.25 s) and record every response, because a survey sent before the connection is up
reaches nobody. Survey deadlines here are short (0.2-0.5 s) to keep the file fast.

Test list:
- surveys answered by several real respondents (one of each kind at once), cooked
- their surveyor gets our respondent's answer
- our survey times out against a real respondent that does not answer (Timeout, then
  BadState until the next survey)
- our raw surveyor's id word comes back unchanged from their respondent
- our raw respondent sees their survey id under our pipe word and answers with it
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import scaproust as sp
from scaproust.protocols._headers import id_word

from ._peers import (
    DEADLINE,
    PEER_KINDS,
    SIDES,
    TRANSPORTS,
    WE_LISTEN,
    CatPeer,
    Peer,
    listen_url,
    our_listen_url,
    wait_until,
)

SURVEY_DEADLINE = 0.5  # ours, when real respondents must answer in time
SILENT_DEADLINE = 0.2  # ours, when nobody answers
THEIR_INTERVAL = 0.25  # how often nanocat and pynng survey again
# How often nngcat surveys again. Not 1 s, the shortest it takes: libnng 1.5.2 (Debian's)
# deadlocks when a survey's 1 s deadline fires just as the next survey is sent (the send
# holds the socket's lock while it cancels the deadline's timer, whose callback waits for
# that lock), and nngcat's surveyor then never sends again. Seen under load: 9 of 60
# pynng and 4 of 60 scaproust respondents got no survey in 6 s with 1 s; 0 of 60 pynng
# ones with 2 s.
# Later nng dropped that timer (nanomsg/nng#1728).
NNGCAT_INTERVAL = 2
#: How long a respondent of ours waits to be heard by their surveyor: two of nngcat's
#: surveys (the first may go out before the connection is up) and then some.
HEARD_DEADLINE = DEADLINE + 2 * NNGCAT_INTERVAL


def answer_of(kind: str) -> bytes:
    return f"{kind} answers".encode()


# --------------------------------------------------------------------------------------
# survey peers (the shared harness knows one-message protocols; these answer and repeat)


class PynngThreadPeer(Peer):
    """A pynng Respondent0 that answers (if given an answer) or a Surveyor0 that surveys
    every THEIR_INTERVAL, on a thread; ``received`` lists what it got (surveys for a
    respondent, responses for a surveyor)."""

    def __init__(self, pynng, role: str, url: str, listens: bool, send: bytes | None):
        self.name, self.url, self._pynng = f"pynng-{role}", url, pynng
        if role == "surveyor":
            self._socket = pynng.Surveyor0(survey_time=round(THEIR_INTERVAL * 1000))
            loop = self._survey
        else:
            self._socket = pynng.Respondent0(recv_timeout=50)
            loop = self._respond
        self._received: list[bytes] = []
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        try:
            if listens:
                self._socket.listen(url)
            else:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(loop, send), daemon=True)
        self._thread.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def _run(self, loop, send) -> None:
        try:
            loop(send)
        except BaseException as error:  # reported by close(), unless we were closing
            if not self._stop.is_set():
                self._errors.append(error)

    def _respond(self, answer) -> None:
        while not self._stop.is_set():
            try:
                msg = self._socket.recv_msg()
            except self._pynng.Timeout:
                continue
            self._received.append(msg.bytes)
            if answer is not None:
                self._socket.send(answer)

    def _survey(self, question) -> None:
        while not self._stop.is_set():
            if not self._socket.pipes:
                time.sleep(0.01)
                continue
            self._socket.send(question)
            while True:
                try:
                    self._received.append(self._socket.recv_msg().bytes)
                except (self._pynng.Timeout, self._pynng.BadState):
                    break

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        return list(self._received)

    def close(self) -> None:
        # Let the thread leave pynng first (its receives time out): closing a pynng socket
        # while another thread is inside recv_msg() can abort the whole process.
        self._stop.set()
        self._thread.join(DEADLINE)
        self._socket.close()
        assert not self._thread.is_alive(), f"{self} thread outlived close()"
        assert not self._errors, f"{self} failed: {self._errors!r}"


class SurveyPeers:
    """Starts respondents and surveyors of any kind for one test; closes them all."""

    _CAT = {
        # kind: (surveyor flag, respondent flag, listen flag, dial flag, repeat survey argv)
        "nngcat": ("--surveyor0", "--respondent0", "--listen", "--dial",
                   ["--interval", str(NNGCAT_INTERVAL)]),
        "nanocat": ("--surveyor", "--respondent", "--bind", "--connect",
                    ["--interval", str(THEIR_INTERVAL)]),
    }

    def __init__(self, request, workdir: Path):
        self._request, self._workdir = request, workdir
        self._started: list[Peer] = []
        self._serial = 0

    def respondent(self, kind: str, *, listen: str | None = None, dial: str | None = None,
                   answer: bytes | None = None) -> Peer:
        """A respondent that answers every survey with ``answer`` (None: never answers)."""
        return self._start(kind, "respondent", listen, dial, answer)

    def surveyor(self, kind: str, question: bytes, *, listen: str | None = None,
                 dial: str | None = None) -> Peer:
        """A surveyor that sends ``question`` again and again, recording every response."""
        return self._start(kind, "surveyor", listen, dial, question)

    def _start(self, kind, role, listen, dial, data) -> Peer:
        assert (listen is None) != (dial is None), "exactly one of listen= and dial="
        url = listen if listen is not None else dial
        tool = self._request.getfixturevalue(kind)  # fails in CI when the peer is missing
        if kind == "pynng":
            peer: Peer = PynngThreadPeer(tool, role, url, listen is not None, data)
        else:
            surveyor_flag, respondent_flag, listen_flag, dial_flag, repeat = self._CAT[kind]
            argv = [tool, surveyor_flag if role == "surveyor" else respondent_flag,
                    listen_flag if listen is not None else dial_flag, url, "--msgpack"]
            if data is not None:
                argv += ["--data", data.decode()]
            if role == "surveyor":
                argv += repeat
            self._serial += 1
            peer = CatPeer(argv, self._workdir, f"{kind}-{role}-{self._serial}", url,
                           listen is not None)
        self._started.append(peer)
        peer.wait_listening()
        return peer

    def close(self) -> None:
        errors = []
        for peer in reversed(self._started):
            try:
                peer.close()
            except AssertionError as error:
                errors.append(str(error))
        assert not errors, errors


@pytest.fixture
def peers(request, tmp_path):
    started = SurveyPeers(request, tmp_path)
    yield started
    started.close()


def survey_matrix(test):
    """Every transport x who listens x peer kind, with ids like ``tcp-we-listen-nngcat``."""
    test = pytest.mark.parametrize("transport", TRANSPORTS)(test)
    test = pytest.mark.parametrize("side", SIDES)(test)
    test = pytest.mark.parametrize("kind", PEER_KINDS)(test)
    return pytest.mark.interop(test)


def pipes_of(sock, count: int) -> None:
    wait_until(lambda: sock.stats.get("pipes_opened", 0) >= count, f"{count} pipe(s) on {sock}")


def link_respondent(session, peers, tmp_path, transport, side, kind, answer, **options):
    """Our surveyor and their respondent, joined; returns both."""
    ours = session.socket(sp.Surveyor, **options)
    if side == WE_LISTEN:
        url = ours.bind(our_listen_url(transport, tmp_path)).url
        theirs = peers.respondent(kind, dial=url, answer=answer)
    else:
        url = listen_url(transport, tmp_path, f"{kind}-respondent")
        theirs = peers.respondent(kind, listen=url, answer=answer)
        ours.connect(url)
    pipes_of(ours, 1)
    return ours, theirs


def link_surveyor(session, peers, tmp_path, transport, side, kind, question, raw=False):
    """Their surveyor and our respondent, joined; returns both."""
    ours = session.socket(sp.Respondent, raw=raw, recv_timeout=DEADLINE)
    if side == WE_LISTEN:
        url = ours.bind(our_listen_url(transport, tmp_path)).url
        theirs = peers.surveyor(kind, question, dial=url)
    else:
        url = listen_url(transport, tmp_path, f"{kind}-surveyor")
        theirs = peers.surveyor(kind, question, listen=url)
        ours.connect(url)
    return ours, theirs


def answer_until_heard(ours, theirs, question: bytes, respond) -> list:
    """Answer each of their surveys (with ``respond(msg)``) until they have recorded a
    response; a survey sent again before our answer arrived may have dropped it. Returns
    every survey message we received."""
    got = []
    deadline = time.monotonic() + HEARD_DEADLINE
    while not theirs.received():
        assert time.monotonic() < deadline, (
            f"{theirs} never recorded our answer; we got {got} through "
            f"{len(ours._core.pipes)} pipe(s); the peer: {theirs.state()}")
        try:
            msg = ours.recv_msg(timeout=0.05)
        except sp.Timeout:
            continue
        assert msg.body == question
        got.append(msg)
        respond(msg)
    return got


# --------------------------------------------------------------------------------------
# our surveyor


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
def test_surveys_answered_by_several_real_respondents(session, peers, tmp_path, transport, side):
    """One survey to a pynng, an nngcat and a nanocat respondent; every answer within the
    deadline, exactly once; then the deadline ends the survey."""
    sur = session.socket(sp.Surveyor, survey_deadline=SURVEY_DEADLINE)
    ours = sur.bind(our_listen_url(transport, tmp_path)).url if side == WE_LISTEN else None
    respondents = []
    for kind in PEER_KINDS:
        if side == WE_LISTEN:
            respondents.append(peers.respondent(kind, dial=ours, answer=answer_of(kind)))
        else:
            url = listen_url(transport, tmp_path, f"{kind}-respondent")
            respondents.append(peers.respondent(kind, listen=url, answer=answer_of(kind)))
            sur.connect(url)
    pipes_of(sur, len(PEER_KINDS))

    sur.send(b"who is there?")
    answers = sorted(sur.recv() for _ in PEER_KINDS)

    assert answers == sorted(answer_of(kind) for kind in PEER_KINDS)
    with pytest.raises(sp.Timeout):
        sur.recv()  # nothing more until the deadline
    with pytest.raises(sp.BadState):
        sur.recv()
    for respondent in respondents:
        assert respondent.messages(1) == [b"who is there?"]


@survey_matrix
def test_our_survey_times_out_against_a_real_respondent_that_does_not_answer(
    session, peers, tmp_path, transport, side, kind
):
    sur, theirs = link_respondent(session, peers, tmp_path, transport, side, kind, None,
                                  survey_deadline=SILENT_DEADLINE)

    sur.send(b"anyone?")
    started = time.monotonic()
    with pytest.raises(sp.Timeout):
        sur.recv(timeout=DEADLINE)  # pending when the survey's deadline passes
    assert time.monotonic() - started >= SILENT_DEADLINE - 0.05
    with pytest.raises(sp.BadState):
        sur.recv()

    assert theirs.messages(1) == [b"anyone?"]  # it did get the survey


@survey_matrix
def test_our_raw_surveyors_id_word_comes_back_unchanged(session, peers, tmp_path, transport, side, kind):
    sur, _ = link_respondent(session, peers, tmp_path, transport, side, kind, answer_of(kind),
                             raw=True, recv_timeout=DEADLINE)
    word = id_word(0x5EED)

    sur.send_msg(sp.Message(b"raw survey", word))

    assert sur.recv_msg() == sp.Message(answer_of(kind), word)


# --------------------------------------------------------------------------------------
# our respondent


@survey_matrix
def test_their_surveyor_gets_our_respondents_answer(session, peers, tmp_path, transport, side, kind):
    question = f"question from {kind}".encode()
    resp, sur = link_surveyor(session, peers, tmp_path, transport, side, kind, question)

    answer_until_heard(resp, sur, question, lambda msg: resp.send(b"our answer"))

    assert set(sur.received()) == {b"our answer"}


@survey_matrix
def test_our_raw_respondent_answers_with_their_survey_id(session, peers, tmp_path, transport, side, kind):
    question = f"question from {kind}".encode()
    resp, sur = link_surveyor(session, peers, tmp_path, transport, side, kind, question, raw=True)

    got = answer_until_heard(resp, sur, question,
                             lambda msg: resp.send_msg(sp.Message(b"raw answer", msg.header)))

    for msg in got:
        # our pipe word (high bit clear) on top of their survey id (high bit set)
        assert len(msg.header) == 8 and not msg.header[0] & 0x80 and msg.header[4] & 0x80
    assert set(sur.received()) == {b"raw answer"}
