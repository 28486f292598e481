"""WIRE.md behaviours that need a real peer and that no other interop test proved.

docs/WIRE_CONFORMANCE.md maps every WIRE.md statement to its tests; these fill its gaps.

Test list:
- pynng's REQ resends an unanswered request with the very same bytes (same id word, so
  the same backtrace at our raw REP); our REP, raw or cooked, answers the copy it got last
  and their REQ gets that answer
- a device of ours (raw REP | sp.device | raw REQ) joins their REQ to their REP: the exact
  reply comes back, for every implementation on either side
- through that device the backtrace grows by exactly one word: a raw pynng REP sees nng's
  own pipe word, our device's pipe word, then the requester's id
"""

from __future__ import annotations

import threading

import pytest

import scaproust as sp

from ._peers import DEADLINE, SIDES, TRANSPORTS, WE_LISTEN, listen_url, our_listen_url, wait_until
from .test_reqrep import PynngRep, ReqRepPeers

RESEND_MS = 100  # pynng's resend_time when a test wants to see it resend


@pytest.fixture
def reqrep_peers(request, tmp_path):
    started = ReqRepPeers(request, tmp_path)
    yield started
    started.close()


class ResendingReq:
    """A pynng Req0 that resends every RESEND_MS; one request and its reply on a thread."""

    def __init__(self, pynng, url: str, listens: bool):
        self._socket = pynng.Req0(resend_time=RESEND_MS, send_timeout=round(DEADLINE * 1000),
                                  recv_timeout=round(DEADLINE * 1000))
        self.replies: list[bytes] = []
        self.errors: list[BaseException] = []
        self._thread = None
        try:
            if listens:
                self._socket.listen(url)
            else:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise

    def ask(self, request: bytes) -> None:
        self._thread = threading.Thread(target=self._ask, args=(request,), daemon=True)
        self._thread.start()

    def _ask(self, request: bytes) -> None:
        try:
            self._socket.send(request)
            self.replies.append(self._socket.recv_msg().bytes)
        except BaseException as error:
            self.errors.append(error)

    def close(self) -> None:
        # Its receive times out: never close a pynng socket under a thread in recv_msg(),
        # which can abort the whole process.
        if self._thread is not None:
            self._thread.join(DEADLINE)
        self._socket.close()
        if self._thread is not None:
            assert not self._thread.is_alive(), "pynng REQ thread outlived close()"


@pytest.mark.interop
@pytest.mark.parametrize("raw", [True, False], ids=["raw-rep", "cooked-rep"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
def test_our_rep_sees_pynngs_req_resend_the_very_same_request(session, pynng, tmp_path, side,
                                                              transport, raw):
    rep = session.socket(sp.Rep, raw=raw, recv_timeout=DEADLINE, send_timeout=DEADLINE)
    if side == WE_LISTEN:
        url = rep.bind(our_listen_url(transport, tmp_path)).url
        req = ResendingReq(pynng, url, listens=False)
    else:
        url = listen_url(transport, tmp_path, "theirs")
        req = ResendingReq(pynng, url, listens=True)
        rep.connect(url)
    try:
        req.ask(b"is anybody there?")
        first, second = rep.recv_msg(), rep.recv_msg()  # nobody answered: nng resent it
        assert first == second  # the same body under the same pipe word and id word
        assert first.body == b"is anybody there?"
        assert len(first.header) == 8 and not first.header[0] & 0x80 and first.header[4] & 0x80
        if raw:
            rep.send_msg(sp.Message(b"yes, to the copy", second.header))
        else:
            rep.send(b"yes, to the copy")  # a cooked REP answers the request it got last
        wait_until(lambda: req.replies or req.errors, "pynng's REQ to get the reply")
        assert req.errors == [] and req.replies == [b"yes, to the copy"]
    finally:
        req.close()


DEVICE_KINDS = [("pynng", "pynng"), ("nngcat", "nanocat"), ("nanocat", "nngcat"),
                ("pynng", "nanocat"), ("nanocat", "pynng")]


def broker(session, transport, tmp_path):
    """[raw REP | sp.device | raw REQ], both listening; returns (front url, back url, device)."""
    front = session.socket(sp.Rep, raw=True)
    back = session.socket(sp.Req, raw=True)
    front_url = front.bind(our_listen_url(transport, tmp_path)).url
    back_where = "tcp://127.0.0.1:0" if transport == "tcp" else f"ipc://{tmp_path}/back.ipc"
    back_url = back.bind(back_where).url
    return front_url, back_url, sp.device(front, back, background=True)


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("req_kind", "rep_kind"), DEVICE_KINDS,
                         ids=[f"{a}-req-{b}-rep" for a, b in DEVICE_KINDS])
def test_a_device_of_ours_joins_their_req_to_their_rep_and_the_exact_reply_comes_back(
    session, reqrep_peers, tmp_path, transport, req_kind, rep_kind
):
    front_url, back_url, device = broker(session, transport, tmp_path)
    request, reply = b"a request through a device", b"the exact reply"
    rep = reqrep_peers.rep(rep_kind, dial=back_url, reply=reply)
    req = reqrep_peers.req(req_kind, request, dial=front_url)

    assert req.messages(1) == [reply]
    assert rep.messages(1)[:1] == [request]
    device.stop()
    assert device.join(DEADLINE)
    assert device.forwarded >= 2


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_through_our_device_the_backtrace_grows_by_exactly_one_word(session, pynng, tmp_path,
                                                                    transport):
    front_url, back_url, device = broker(session, transport, tmp_path)
    rep = PynngRep(pynng, back_url, False, b"answer from a raw REP", raw=True)
    req = ResendingReq(pynng, front_url, listens=False)
    try:
        req.ask(b"how deep?")
        wait_until(lambda: rep.received(), "the request at their raw REP")
        wait_until(lambda: req.replies or req.errors, "pynng's REQ to get the reply")
        assert req.errors == [] and req.replies == [b"answer from a raw REP"]
        header = rep.headers[0]
        words = [int.from_bytes(header[i:i + 4], "big") for i in range(0, len(header), 4)]
        # nng's raw REP pipe word, our device's pipe word (our raw REP's), the id of the REQ
        assert [word >> 31 for word in words] == [0, 0, 1], [hex(word) for word in words]
    finally:
        req.close()
        rep.close()
        device.stop()
        assert device.join(DEADLINE)
