"""PUB / SUB against real peers: pynng, nngcat and nanocat, over TCP and IPC, either side
listening.

A PUB sends only to the subscribers it has when it publishes, so every test starts with a
warm-up: the publisher publishes until the subscriber has seen a first message. Their
command-line PUBs repeat one ``--data`` body every ``--interval`` (nngcat takes whole
seconds only [seen], so its tests take a second or two); a pynng PUB is driven by the test
and publishes numbered sequences. Their SUBs record everything they receive (``--msgpack``
output for the tools, exact boundaries).

Test list:
- our SUB filters their PUBs' traffic: two of their PUBs (one per topic) into one SUB of
  ours subscribed to one topic: only that topic's exact body arrives, the other topic is
  seen and dropped; a topic subscribed later takes effect while their PUBs keep
  publishing (nanomsg's PUB aborts on any byte from a SUB: it stays alive)
- our SUB gets a numbered sequence from pynng's PUB: only matching messages, each once,
  in increasing order, none of the other topic
- their SUB filters our PUB's traffic: after the warm-up, exactly the matching messages of
  a numbered sequence, in order, and none of the other topic
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import scaproust as sp

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

# How often a publisher repeats itself while a test waits for the connection: short, so a
# test does not wait long for the first message once the connection is up.
REPEAT = 0.02
# nngcat's --interval takes whole seconds only ("Integer argument expected") [seen].
NNGCAT_REPEAT = 1

WEATHER = b"weather: sunny"
SPORTS = b"sports: 2-1"


# --------------------------------------------------------------------------------------
# pub/sub peers (the shared harness knows one-message protocols; these repeat and filter)


class PynngPub(Peer):
    """A pynng Pub0. ``publish`` sends at once; ``repeat`` publishes one body every
    ``REPEAT`` seconds on a thread until closed, as the tools do with ``--interval``."""

    def __init__(self, pynng, url: str, listens: bool, repeat: bytes | None):
        self.name, self.url = "pynng-pub", url
        self._socket = pynng.Pub0()
        # nng's PUB queues 16 messages per pipe and then drops the oldest: room for a burst.
        self._socket.send_buffer_size = 1024
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = None
        try:
            if listens:
                self._socket.listen(url)
            else:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise
        if repeat is not None:
            self._thread = threading.Thread(target=self._repeat, args=(repeat,), daemon=True)
            self._thread.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def publish(self, body: bytes) -> None:
        self._socket.send(body)

    def _repeat(self, body: bytes) -> None:
        try:
            while not self._stop.wait(REPEAT):
                self._socket.send(body)
        except BaseException as error:  # reported by close(), unless we were closing
            if not self._stop.is_set():
                self._errors.append(error)

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        return []

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        if self._thread is not None:
            self._thread.join(DEADLINE)
            assert not self._thread.is_alive(), f"{self} thread outlived close()"
        assert not self._errors, f"{self} failed: {self._errors!r}"


class PynngSub(Peer):
    """A pynng Sub0 subscribed to ``topic``; records every message it receives."""

    def __init__(self, pynng, url: str, listens: bool, topic: bytes):
        self.name, self.url, self._pynng = "pynng-sub", url, pynng
        self._socket = pynng.Sub0()
        self._socket.subscribe(topic)
        self._received: list[bytes] = []
        try:
            if listens:
                self._socket.listen(url)
            else:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        while True:
            try:
                # recv_msg: pynng 0.9.0's recv() raises on a zero-length message (WIRE.md).
                self._received.append(self._socket.recv_msg(block=False).bytes)
            except self._pynng.TryAgain:
                return list(self._received)

    def close(self) -> None:
        self._socket.close()


class PubSubPeers:
    """Starts PUBs and SUBs of one kind for one test; closes them all at the end."""

    _CAT = {  # kind: (pub flag, sub flag, listen flag, dial flag, repeat interval)
        "nngcat": ("--pub0", "--sub0", "--listen", "--dial", NNGCAT_REPEAT),
        "nanocat": ("--pub", "--sub", "--bind", "--connect", REPEAT),
    }

    def __init__(self, request, kind: str, workdir: Path):
        self.kind, self._workdir = kind, workdir
        self._tool = request.getfixturevalue(kind)  # fails in CI when the peer is missing
        self._started: list[Peer] = []
        self._serial = 0

    def __str__(self) -> str:
        return self.kind

    def pub(self, *, listen=None, dial=None, repeat: bytes | None = None) -> Peer:
        """A PUB that publishes ``repeat`` over and over until closed (pynng: also on demand)."""
        return self._start("pub", listen, dial, repeat)

    def sub(self, topic: bytes, *, listen=None, dial=None) -> Peer:
        """A SUB subscribed to ``topic`` that records what it receives."""
        return self._start("sub", listen, dial, topic)

    def _start(self, role, listen, dial, data) -> Peer:
        assert (listen is None) != (dial is None), "exactly one of listen= and dial="
        url, listens = (listen, True) if listen is not None else (dial, False)
        if self.kind == "pynng":
            if role == "pub":
                peer: Peer = PynngPub(self._tool, url, listens, data)
            else:
                peer = PynngSub(self._tool, url, listens, data)
        else:
            pub_flag, sub_flag, listen_flag, dial_flag, interval = self._CAT[self.kind]
            self._serial += 1
            name = f"{self.kind}-{role}-{self._serial}"
            argv = [self._tool, pub_flag if role == "pub" else sub_flag,
                    listen_flag if listens else dial_flag, url]
            if role == "pub":
                argv += ["--data", data.decode("ascii"), "--interval", str(interval)]
            else:
                argv += ["--subscribe", data.decode("ascii"), "--msgpack"]
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
def peers(request, kind, tmp_path):
    started = PubSubPeers(request, kind, tmp_path)
    yield started
    started.close()


def pubsub_matrix(kinds):
    """Every transport x who listens x peer kind of ``kinds``, with ids like
    ``tcp-we-listen-nngcat``."""

    def mark(test):
        test = pytest.mark.parametrize("transport", TRANSPORTS)(test)
        test = pytest.mark.parametrize("side", SIDES)(test)
        test = pytest.mark.parametrize("kind", kinds)(test)
        return pytest.mark.interop(test)

    return mark


def our_sub(session, *topics):
    sub = session.socket(sp.Sub, recv_timeout=DEADLINE)
    for topic in topics:
        sub.subscribe(topic)
    return sub


def join(our, side, transport, tmp_path, *starts) -> list[Peer]:
    """Join ``our`` socket to one peer per ``start(listen=url | dial=url)``, ``side``
    listening: ours binds once and each peer dials it, or each peer listens on its own
    address and ours connects to every one."""
    if side == WE_LISTEN:
        url = our.bind(our_listen_url(transport, tmp_path)).url
        return [start(dial=url) for start in starts]
    started = []
    for n, start in enumerate(starts):
        url = listen_url(transport, tmp_path, f"theirs{n}")
        started.append(start(listen=url))
        our.connect(url)
    return started


def recv_until(sub, last: bytes) -> list[bytes]:
    """Every message ``sub`` receives up to and including ``last``."""
    got: list[bytes] = []
    while not got or got[-1] != last:
        got.append(sub.recv())
    return got


def drained(sub) -> list[bytes]:
    """Every message already waiting at ``sub``."""
    got: list[bytes] = []
    while (body := sub.try_recv()) is not None:
        got.append(body)
    return got


def after_warm_up(messages: list[bytes], warm_up: bytes) -> list[bytes]:
    """``messages`` without the warm-up copies that arrived first."""
    start = 0
    while start < len(messages) and messages[start] == warm_up:
        start += 1
    return messages[start:]


def numbered(count: int) -> list[bytes]:
    """A sequence alternating two topics, each message numbered, ending with ``weather end``."""
    return [b"%s %d" % (topic, n) for n in range(count) for topic in (b"weather", b"sports")] + [
        b"weather end"]


# --------------------------------------------------------------------------------------
# their PUB, our SUB


@pubsub_matrix(PEER_KINDS)
def test_our_sub_filters_their_pubs_traffic(session, peers, kind, side, transport, tmp_path):
    sub = our_sub(session, b"weather")
    publishers = join(sub, side, transport, tmp_path,
                      lambda **where: peers.pub(**where, repeat=WEATHER),
                      lambda **where: peers.pub(**where, repeat=SPORTS))

    assert sub.recv() == WEATHER
    wait_until(lambda: sub.stats.get("dropped_unmatched", 0) >= 1,
               f"a {SPORTS!r} from {peers} to arrive and be dropped")
    assert set(drained(sub)) <= {WEATHER}

    # A topic added while they publish: their PUBs never hear of it (nanomsg's would abort).
    sub.subscribe("sports")
    assert set(recv_until(sub, SPORTS)) <= {WEATHER, SPORTS}
    for publisher in publishers:
        if isinstance(publisher, CatPeer):
            assert publisher._alive(), f"{publisher} died: {publisher.stderr()!r}"


@pubsub_matrix(["pynng"])
def test_our_sub_gets_a_numbered_sequence_from_pynng_pub(session, peers, kind, side, transport,
                                                         tmp_path):
    sub = our_sub(session, b"weather")
    (pub,) = join(sub, side, transport, tmp_path, peers.pub)
    warm_up = b"weather warm-up"
    deadline = time.monotonic() + DEADLINE
    while True:
        pub.publish(warm_up)
        try:
            assert sub.recv(timeout=REPEAT) == warm_up
            break
        except sp.Timeout:
            assert time.monotonic() < deadline, f"our SUB never heard {pub}"

    sequence = numbered(30)
    for body in sequence:
        pub.publish(body)

    got = after_warm_up(recv_until(sub, b"weather end"), warm_up)
    assert got == [body for body in sequence if body.startswith(b"weather")]


# --------------------------------------------------------------------------------------
# our PUB, their SUB


@pubsub_matrix(PEER_KINDS)
def test_their_sub_filters_our_pubs_traffic(session, peers, kind, side, transport, tmp_path):
    pub = session.socket(sp.Pub)
    (sub,) = join(pub, side, transport, tmp_path, lambda **where: peers.sub(b"weather", **where))
    warm_up = b"weather warm-up"
    deadline = time.monotonic() + DEADLINE
    while not sub.received():
        assert time.monotonic() < deadline, f"{sub} never heard our PUB"
        pub.send(warm_up)
        time.sleep(REPEAT)  # the pace of the warm-up publication

    sequence = numbered(20)
    for body in sequence:
        pub.send(body)

    wait_until(lambda: b"weather end" in sub.received(), f"the end of the sequence at {sub}")
    assert after_warm_up(sub.received(), warm_up) == [b for b in sequence if b.startswith(b"weather")]
    assert pub.stats.get("dropped_slow_subscriber", 0) == 0
