"""REQ / REP against real peers: pynng, nngcat and nanocat, over TCP and IPC, either side
listening.

Their REPs answer every request with one fixed body (nngcat/nanocat ``--data``/``--file``,
a pynng thread), or never (no ``--data``), and record every request they got; their REQs
send one request and record the reply (the tools exit once they have it). A pynng REP can
also be raw (``nng_rep0_open_raw`` through pynng's ``opener``): it records each request's
header too, so the test sees our id word on the wire.

Test list:
- our REQ gets their REP's replies (short, zero-length, 1 MiB with the id): exact bodies
  both ways, the reply under our id word, ids +1 per request
- our raw REQ gets their REP's reply under the header it sent
- their REQ gets our REP's reply (short, zero-length, 1 MiB with the id), exact bodies
- our raw REP sees their request under our pipe word and their id word, and routes the
  reply back with it
- a real REP sees our REQ resend the very same request (same bytes; same id word where
  the peer shows headers: raw pynng), and the reply to the resent one reaches us
- a cooked pynng REP that drops the first copy answers the resend, and we get that reply
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import scaproust as sp
from scaproust.protocols._headers import id_word

from ._peers import (
    DEADLINE,
    ONE_MIB,
    PEER_KINDS,
    SIDES,
    TRANSPORTS,
    WE_LISTEN,
    CatPeer,
    Peer,
    listen_url,
    nothing_more,
    our_listen_url,
    summaries,
)

RESEND = 0.2  # our resend interval when a test wants to see a resend


def request_body(size: str) -> bytes:
    return {"short": b"a request from the REQ", "empty": b"",
            # With the 4-byte id word the frame is exactly 1 MiB, every peer's limit.
            "large": bytes(range(251)) * ((ONE_MIB - 4) // 251) + b"x" * ((ONE_MIB - 4) % 251)}[size]


def reply_body(size: str) -> bytes:
    return {"short": b"the REP's answer", "empty": b"", "large": request_body("large")[::-1]}[size]


SIZES = ["short", "empty", "large"]


# --------------------------------------------------------------------------------------
# req/rep peers (the shared harness knows one-message protocols; these answer)


def _header_of(lib, ffi, msg) -> bytes:
    size = lib.nng_msg_header_len(msg._nng_msg)
    return bytes(ffi.buffer(ffi.cast("char *", lib.nng_msg_header(msg._nng_msg)), size))


class PynngRep(Peer):
    """A pynng Rep0 on a thread: records each request (``received``: bodies; ``headers``:
    their header words, raw only) and answers with ``reply`` (None: never), skipping the
    first ``ignore`` requests."""

    def __init__(self, pynng, url: str, listens: bool, reply: bytes | None, *, raw=False,
                 ignore: int = 0):
        from pynng._nng import ffi, lib

        self.name, self.url, self._pynng = f"pynng-rep{'-raw' if raw else ''}", url, pynng
        self._lib, self._ffi = lib, ffi
        options = {"opener": lib.nng_rep0_open_raw} if raw else {}
        self._socket = pynng.Rep0(recv_timeout=50, **options)
        self._raw, self._reply, self._ignore = raw, reply, ignore
        self._received: list[bytes] = []
        self.headers: list[bytes] = []
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
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # reported by close(), unless we were closing
            if not self._stop.is_set():
                self._errors.append(error)

    def _serve(self) -> None:
        pynng, lib = self._pynng, self._lib
        while not self._stop.is_set():
            try:
                msg = self._socket.recv_msg()
            except pynng.Timeout:
                continue
            header = _header_of(lib, self._ffi, msg) if self._raw else b""
            self.headers.append(header)
            self._received.append(msg.bytes)
            if self._reply is None or len(self._received) <= self._ignore:
                continue
            out = pynng.Message(self._reply)
            if self._raw:
                lib.nng_msg_header_append(out._nng_msg, header, len(header))
            self._socket.send_msg(out)

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


class PynngReq(Peer):
    """A pynng Req0 that sends one request on a thread and records the reply."""

    def __init__(self, pynng, url: str, listens: bool, request: bytes):
        self.name, self.url = "pynng-req", url
        self._socket = pynng.Req0(send_timeout=round(DEADLINE * 1000),
                                  recv_timeout=round(DEADLINE * 1000))
        self._received: list[bytes] = []
        self._errors: list[BaseException] = []
        try:
            if listens:
                self._socket.listen(url)
            else:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise
        self._thread = threading.Thread(target=self._ask, args=(request,), daemon=True)
        self._thread.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def _ask(self, request: bytes) -> None:
        try:
            self._socket.send(request)
            # recv_msg: pynng 0.9.0's recv() raises on a zero-length message (WIRE.md).
            self._received.append(self._socket.recv_msg().bytes)
        except BaseException as error:
            self._errors.append(error)

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        return list(self._received)

    def close(self) -> None:
        self._thread.join(DEADLINE)  # its receive times out: never close under it (see above)
        self._socket.close()
        assert not self._thread.is_alive(), f"{self} thread outlived close()"


class ReqRepPeers:
    """Starts REQs and REPs of any kind for one test; closes them all at the end."""

    _CAT = {  # kind: (req flag, rep flag, listen flag, dial flag)
        "nngcat": ("--req0", "--rep0", "--listen", "--dial"),
        "nanocat": ("--req", "--rep", "--bind", "--connect"),
    }

    def __init__(self, request, workdir: Path):
        self._request, self._workdir = request, workdir
        self._started: list[Peer] = []
        self._serial = 0

    def rep(self, kind: str, *, listen=None, dial=None, reply: bytes | None = None,
            **pynng_options) -> Peer:
        """A REP that answers every request with ``reply`` (None: never answers)."""
        return self._start(kind, "rep", listen, dial, reply, pynng_options)

    def req(self, kind: str, request: bytes, *, listen=None, dial=None) -> Peer:
        """A REQ that sends ``request`` once and records the reply."""
        return self._start(kind, "req", listen, dial, request, {})

    def _start(self, kind, role, listen, dial, data, pynng_options) -> Peer:
        assert (listen is None) != (dial is None), "exactly one of listen= and dial="
        url, listens = (listen, True) if listen is not None else (dial, False)
        tool = self._request.getfixturevalue(kind)  # fails in CI when the peer is missing
        if kind == "pynng":
            if role == "rep":
                peer: Peer = PynngRep(tool, url, listens, data, **pynng_options)
            else:
                peer = PynngReq(tool, url, listens, data)
        else:
            req_flag, rep_flag, listen_flag, dial_flag = self._CAT[kind]
            self._serial += 1
            name = f"{kind}-{role}-{self._serial}"
            argv = [tool, req_flag if role == "req" else rep_flag,
                    listen_flag if listens else dial_flag, url, "--msgpack"]
            if data == b"":
                argv += ["--data", ""]  # nanocat asserts on an empty --file [seen]
            elif data is not None:
                payload = self._workdir / f"{name}.payload"
                payload.write_bytes(data)
                argv += ["--file", str(payload)]
            peer = CatPeer(argv, self._workdir, name, url, listens)
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
    started = ReqRepPeers(request, tmp_path)
    yield started
    started.close()


def reqrep_matrix(test):
    """Every transport x who listens x peer kind, with ids like ``tcp-we-listen-nngcat``."""
    test = pytest.mark.parametrize("transport", TRANSPORTS)(test)
    test = pytest.mark.parametrize("side", SIDES)(test)
    test = pytest.mark.parametrize("kind", PEER_KINDS)(test)
    return pytest.mark.interop(test)


def ours(session, protocol, *, raw=False, **options):
    options.setdefault("send_timeout", DEADLINE)
    options.setdefault("recv_timeout", DEADLINE)
    return session.socket(protocol, raw=raw, **options)


def join_rep(session, peers, tmp_path, kind, side, transport, our, **rep_args):
    """Our ``our`` socket (a REQ) and their REP, ``side`` listening."""
    if side == WE_LISTEN:
        url = our.bind(our_listen_url(transport, tmp_path)).url
        return peers.rep(kind, dial=url, **rep_args)
    url = listen_url(transport, tmp_path, "theirs")
    peer = peers.rep(kind, listen=url, **rep_args)
    our.connect(url)
    return peer


def join_req(session, peers, tmp_path, kind, side, transport, our, request):
    """Our ``our`` socket (a REP) and their REQ sending ``request``, ``side`` listening."""
    if side == WE_LISTEN:
        url = our.bind(our_listen_url(transport, tmp_path)).url
        return peers.req(kind, request, dial=url)
    url = listen_url(transport, tmp_path, "theirs")
    peer = peers.req(kind, request, listen=url)
    our.connect(url)
    return peer


# --------------------------------------------------------------------------------------
# our REQ, their REP


@pytest.mark.parametrize("size", SIZES)
@reqrep_matrix
def test_our_req_gets_replies_from_their_rep(session, peers, tmp_path, kind, side, transport, size):
    req = ours(session, sp.Req)
    rep = join_rep(session, peers, tmp_path, kind, side, transport, req, reply=reply_body(size))
    count = 1 if size == "large" else 3
    words = []
    for _ in range(count):
        req.send(request_body(size))
        reply = req.recv_msg()
        assert summaries([reply.body]) == summaries([reply_body(size)])
        words.append(int.from_bytes(reply.header, "big"))
    assert summaries(rep.messages(count)) == summaries([request_body(size)] * count)
    assert all(word & 0x80000000 for word in words)
    assert [(w - words[0]) & 0x7FFFFFFF for w in words] == list(range(count))
    assert req.stats.get("requests_resent", 0) == 0


@reqrep_matrix
def test_our_raw_req_gets_their_reply_under_the_header_it_sent(session, peers, tmp_path, kind,
                                                              side, transport):
    req = ours(session, sp.Req, raw=True)
    rep = join_rep(session, peers, tmp_path, kind, side, transport, req, reply=b"raw answer")

    req.send_msg(sp.Message(b"raw question", id_word(0x1234567)))

    assert req.recv_msg() == sp.Message(b"raw answer", id_word(0x1234567))
    assert rep.messages(1) == [b"raw question"]


# --------------------------------------------------------------------------------------
# their REQ, our REP


@pytest.mark.parametrize("size", SIZES)
@reqrep_matrix
def test_their_req_gets_the_reply_of_our_rep(session, peers, tmp_path, kind, side, transport, size):
    rep = ours(session, sp.Rep)
    req = join_req(session, peers, tmp_path, kind, side, transport, rep, request_body(size))

    assert summaries([rep.recv()]) == summaries([request_body(size)])
    rep.send(reply_body(size))

    assert summaries(req.messages(1)) == summaries([reply_body(size)])
    nothing_more(rep)


@reqrep_matrix
def test_our_raw_rep_sees_their_request_id_and_routes_the_reply_back(session, peers, tmp_path,
                                                                     kind, side, transport):
    rep = ours(session, sp.Rep, raw=True)
    req = join_req(session, peers, tmp_path, kind, side, transport, rep, b"raw request")

    msg = rep.recv_msg()
    assert msg.body == b"raw request"
    assert len(msg.header) == 8
    assert not msg.header[0] & 0x80  # our pipe word
    assert msg.header[4] & 0x80  # their request id: the bottom of the stack
    rep.send_msg(sp.Message(b"raw reply", msg.header))

    assert req.messages(1) == [b"raw reply"]


# --------------------------------------------------------------------------------------
# resend


@reqrep_matrix
def test_a_real_rep_sees_our_req_resend_the_same_request(session, peers, tmp_path, kind, side,
                                                         transport):
    """Their REP does not answer the first copy; ours sends the same bytes again after the
    resend interval. pynng's REP is raw here, so the id word itself can be compared, and it
    answers the second copy; the tools never answer, so only the bodies are compared."""
    req = ours(session, sp.Req, resend_interval=RESEND)
    rep_args = {"reply": b"answer to the resend", "raw": True, "ignore": 1} if kind == "pynng" else {}
    rep = join_rep(session, peers, tmp_path, kind, side, transport, req, **rep_args)

    req.send(b"are you there?")

    assert rep.messages(2)[:2] == [b"are you there?"] * 2
    if kind == "pynng":
        first, second = rep.headers[:2]
        assert first == second  # same pipe, same id: the very same request
        assert first[-4] & 0x80
        assert req.recv() == b"answer to the resend"
    assert req.stats["requests_resent"] >= 1


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
def test_a_cooked_pynng_rep_that_drops_the_first_copy_answers_the_resend(session, peers, tmp_path,
                                                                        side, transport):
    req = ours(session, sp.Req, resend_interval=RESEND)
    rep = join_rep(session, peers, tmp_path, "pynng", side, transport, req,
                   reply=b"second time lucky", ignore=1)

    req.send(b"knock knock")

    assert req.recv() == b"second time lucky"
    assert rep.received()[:2] == [b"knock knock"] * 2
    with pytest.raises(sp.BadState):
        req.recv()
