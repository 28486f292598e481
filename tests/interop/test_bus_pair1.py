"""BUS and PAIR v1 against real peers over TCP and IPC, either side listening.

BUS: pynng Bus0 (nng 1.11), nngcat --bus0 (nng 1.5.2) and nanocat --bus (nanomsg 1.1.5).
PAIR v1: pynng Pair1 and nngcat --pair1 only: nanomsg has no PAIR v1 (nanocat --pair is
v0), so nanocat takes no part in those tests.

A bus drops what it sends while it has no pipe, and the tools send their one message on
their own schedule, so a node of theirs that sends is held back until every link of the
test is up: pynng's sending thread waits until its socket has that many pipes; nngcat
dials synchronously (``nng_dialer_start`` without NNG_FLAG_NONBLOCK returns once the pipe
is up), so one that only dials sends after its last link; nngcat that listens and nanocat
(which always connects in the background) wait ``--delay`` (nngcat takes whole seconds
only), and the test checks that every link was up well before it.

Test list:
- a mesh of our nodes and theirs: each node's message reaches its direct neighbours exactly
  once, comes back to nobody, and is not forwarded to non-neighbours
- our raw bus device reflects their messages to every other neighbour, not to the sender
- our pair1 and their pair1 exchange messages (short, zero-length, the largest that fits)
- a raw pair1 device of ours between two of their pair1 peers: its hop counts pass
- a wrong hop count from a raw peer: over 0xff closes our pipe, over the ttl is dropped
  and the connection stays
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import scaproust as sp

from ._peers import (
    DEADLINE,
    SIDES,
    SIZES,
    TRANSPORTS,
    WE_LISTEN,
    CatPeer,
    Peer,
    body,
    ipc_path,
    listen_url,
    summaries,
    wait_until,
)

BUS_KINDS = ["pynng", "nngcat", "nanocat"]
PAIR1_KINDS = ["pynng", "nngcat"]  # nanomsg has no PAIR v1
# How long a tool that cannot see its links waits before its one send (nngcat: whole
# seconds). Every link of a test is up within milliseconds on loopback.
SEND_DELAY = {"nngcat": 1, "nanocat": 0.5}
_serial = itertools.count()


def hops(n: int) -> bytes:
    return n.to_bytes(4, "big")


# --------------------------------------------------------------------------------------
# their nodes: one protocol, any number of links, at most one message


class PynngNode(Peer):
    """A pynng Bus0 or Pair1 in this process; its one send runs on a thread once the socket
    has ``links`` pipes (a bus drops what it sends with no pipe; a pair1 send waits)."""

    def __init__(self, pynng, proto: str, listen: str | None, dial: list[str], send, links: int):
        self.name, self.url, self._pynng = f"pynng-{proto}", listen or dial[0], pynng
        factory = {"bus": pynng.Bus0, "pair1": pynng.Pair1}[proto]
        self._socket = factory(send_timeout=round(1000 * DEADLINE))
        self._received: list[bytes] = []
        self._errors: list[BaseException] = []
        self._sender = None
        try:
            if listen is not None:
                self._socket.listen(listen)
            for url in dial:
                self._socket.dial(url, block=False)
        except BaseException:
            self._socket.close()
            raise
        if send is not None:
            self._sender = threading.Thread(target=self._send, args=(send, links), daemon=True)
            self._sender.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def _send(self, data: bytes, links: int) -> None:
        try:
            wait_until(lambda: len(self._socket.pipes) >= links, f"{links} pipe(s) at {self}")
            self._socket.send(data)
        except BaseException as error:  # reported by close()
            self._errors.append(error)

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        while True:
            try:
                self._received.append(self._socket.recv_msg(block=False).bytes)
            except self._pynng.TryAgain:
                return list(self._received)

    def close(self) -> None:
        self._socket.close()
        if self._sender is not None:
            self._sender.join(DEADLINE)
            assert not self._sender.is_alive(), f"{self} send thread outlived close()"
        assert not self._errors, f"{self} failed to send: {self._errors!r}"


class Nodes:
    """Starts BUS / PAIR v1 nodes of one implementation for one test, closes them at the end."""

    _FLAGS = {
        "nngcat": ({"bus": "--bus0", "pair1": "--pair1"}, "--listen", "--dial"),
        "nanocat": ({"bus": "--bus"}, "--bind", "--connect"),
    }

    def __init__(self, kind: str, implementation, workdir: Path):
        self.kind, self._impl, self._workdir = kind, implementation, workdir
        self._started: list[Peer] = []

    def __str__(self) -> str:
        return self.kind

    def start(self, proto: str, *, listen: str | None = None, dial: tuple[str, ...] = (),
              send: bytes | None = None, links: int = 1) -> Peer:
        """A node that listens on ``listen`` (ready when this returns) and dials ``dial``,
        and, given ``send``, sends it once when it has ``links`` links (see the module
        docstring for how each kind is held back)."""
        assert listen is not None or dial, "a node needs a link"
        if self.kind == "pynng":
            node: Peer = PynngNode(self._impl, proto, listen, list(dial), send, links)
        else:
            node = self._start_cat(proto, listen, list(dial), send)
        #: Seconds the node waits before its send, blind to its links (0: it sees them).
        node.send_delay = self._delay(proto, listen) if send is not None else 0
        self._started.append(node)
        node.wait_listening()
        return node

    def _delay(self, proto: str, listen: str | None) -> float:
        if proto != "bus" or self.kind == "pynng":
            return 0  # a pair1 send waits for its peer; pynng's waits for its pipes
        if self.kind == "nngcat" and listen is None:
            return 0  # its dials are synchronous: it sends once they are all up
        return SEND_DELAY[self.kind]

    def _start_cat(self, proto, listen, dial, send) -> CatPeer:
        protos, listen_flag, dial_flag = self._FLAGS[self.kind]
        name = f"{self.kind}-{proto}-{next(_serial)}"
        argv = [self._impl, protos[proto]]
        if listen is not None:
            argv += [listen_flag, listen]
        for url in dial:
            argv += [dial_flag, url]
        argv += ["--msgpack"]
        if send is not None:
            if send:
                payload = self._workdir / f"{name}.payload"
                payload.write_bytes(send)
                argv += ["--file", str(payload)]
            else:
                argv += ["--data", ""]  # nanocat asserts on an empty --file [seen]
            if self._delay(proto, listen):
                argv += ["--delay", str(self._delay(proto, listen))]
        return CatPeer(argv, self._workdir, name, listen or dial[0], listen is not None)

    def close(self) -> None:
        errors = []
        for node in reversed(self._started):
            try:
                node.close()
            except AssertionError as error:
                errors.append(str(error))
        assert not errors, errors


@pytest.fixture
def nodes(request, tmp_path):
    """Their nodes, of the implementation named by the test's ``nodes`` parameter."""
    kind = request.param
    started = Nodes(kind, request.getfixturevalue(kind), tmp_path)
    yield started
    started.close()


# --------------------------------------------------------------------------------------
# our side


def our_url(transport: str, directory: Path, name: str) -> str:
    """Where one of our nodes listens: port 0 over TCP, its own socket file over IPC."""
    return "tcp://127.0.0.1:0" if transport == "tcp" else listen_url(transport, directory, name)


def our_bus(session, raw: bool = False):
    return session.socket(sp.Bus, raw=raw, recv_timeout=DEADLINE)


def our_pair1(session, raw: bool = False):
    return session.socket(sp.Pair1, raw=raw, recv_timeout=DEADLINE, send_timeout=DEADLINE)


def links_up(socks_and_counts, started: float, delay: float) -> None:
    """Wait until each of our sockets has its pipes; with their node sending blind after
    ``delay`` s (counted from some moment after ``started``), make sure that was in time."""
    for sock, count in socks_and_counts:
        wait_until(lambda s=sock, c=count: s.stats.get("pipes_opened", 0) >= c,
                   f"{count} pipe(s) on {sock!r}")
    if delay:
        took = time.monotonic() - started
        assert took < delay, (
            f"the links took {took:.2f} s, more than their node's --delay {delay}: "
            "this machine is too slow for the test, it says nothing of the protocol"
        )


def nothing_more(*socks) -> None:
    for sock in socks:
        with pytest.raises(sp.WouldBlock):
            sock.recv(block=False)


# --------------------------------------------------------------------------------------
# BUS


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("nodes", BUS_KINDS, indirect=True)
def test_a_bus_mesh_of_our_nodes_and_theirs_delivers_to_direct_neighbours_only_and_once(
    session, nodes, tmp_path, transport, side
):
    """Their node T in a triangle with our X and Y, with a leaf of ours on each side:

        W --- X ----- T --- Z
               \\     /
                 Y

    Each message must reach the sender's neighbours once and nobody else. Ordering proves
    the negatives for our nodes: X sends last, so had X forwarded (or echoed) anything it
    received, W, Y and T would get that before X's message, on the same connection.
    """
    t, y = body("1MiB", "theirs"), body("1MiB", "ours")
    x, z, w = b"", b"from Z (ours, T's leaf)", b"from W (ours, X's leaf)"
    X, Y, Z, W = (our_bus(session) for _ in range(4))
    x_url = X.bind(our_url(transport, tmp_path, "x")).url
    Y.connect(x_url)
    W.connect(x_url)
    links_up([(X, 2), (Y, 1), (W, 1)], time.monotonic(), 0)
    started = time.monotonic()
    if side == WE_LISTEN:  # T dials each of its three neighbours
        dial = (x_url, Y.bind(our_url(transport, tmp_path, "y")).url,
                Z.bind(our_url(transport, tmp_path, "z")).url)
        T = nodes.start("bus", dial=dial, send=t, links=3)
    else:  # X, Y and Z dial T
        t_url = listen_url(transport, tmp_path, "t")
        T = nodes.start("bus", listen=t_url, send=t, links=3)
        for ours in (X, Y, Z):
            ours.connect(t_url)
    links_up([(X, 3), (Y, 2), (Z, 1)], started, T.send_delay)

    assert summaries([X.recv(), Y.recv(), Z.recv()]) == summaries([t, t, t])
    Y.send(y)
    assert summaries([X.recv()]) == summaries([y])
    assert summaries(T.messages(1)) == summaries([y])
    Z.send(z)
    assert T.messages(2)[1:] == [z]
    W.send(w)
    assert X.recv() == w
    X.send(x)
    assert [W.recv(), Y.recv()] == [x, x]
    assert summaries(T.messages(3)) == summaries([y, z, x])
    nothing_more(X, Y, Z, W)


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("nodes", BUS_KINDS, indirect=True)
def test_our_raw_bus_device_reflects_their_messages_to_every_other_neighbour(
    session, nodes, tmp_path, transport
):
    """Their quiet node Q, their sending node S and our cooked node C on our raw bus hub,
    reflected onto itself by a device: S's message reaches Q and C, not S; C's reaches S
    and Q (after S's on each connection), not C."""
    hub = our_bus(session, raw=True)
    url = hub.bind(our_url(transport, tmp_path, "hub")).url
    device = sp.device(hub, background=True)
    C = our_bus(session)
    C.connect(url)
    Q = nodes.start("bus", dial=(url,))
    links_up([(hub, 2), (C, 1)], time.monotonic(), 0)
    started = time.monotonic()
    s = b"from their sender"
    S = nodes.start("bus", dial=(url,), send=s, links=1)
    links_up([(hub, 3)], started, S.send_delay)

    assert C.recv() == s
    assert Q.messages(1) == [s]
    C.send(b"from ours")
    assert Q.messages(2) == [s, b"from ours"]
    assert S.messages(1) == [b"from ours"]  # its own message never came back first
    nothing_more(C)
    device.stop()
    assert device.join(DEADLINE)
    assert device.forwarded == 2


# --------------------------------------------------------------------------------------
# PAIR v1


def pair1_body(size: str, author: str) -> bytes:
    # The hop count word counts towards our 1 MiB recv_max_size: the largest body is 4 less.
    data = body(size, author)
    return data[:-4] if size == "1MiB" else data


@pytest.mark.interop
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("nodes", PAIR1_KINDS, indirect=True)
def test_our_pair1_and_their_pair1_exchange_messages(session, nodes, tmp_path, transport, side, size):
    ours, theirs = pair1_body(size, "ours"), pair1_body(size, "theirs")
    pair = our_pair1(session)
    if side == WE_LISTEN:
        peer = nodes.start("pair1", dial=(pair.bind(our_url(transport, tmp_path, "ours")).url,),
                           send=theirs)
    else:
        url = listen_url(transport, tmp_path, "theirs")
        peer = nodes.start("pair1", listen=url, send=theirs)
        pair.connect(url)

    pair.send(ours)

    assert summaries([pair.recv()]) == summaries([theirs])
    assert summaries(peer.messages(1)) == summaries([ours])
    nothing_more(pair)


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("nodes", PAIR1_KINDS, indirect=True)
def test_our_raw_pair1_device_joins_two_of_their_pair1_peers(session, nodes, tmp_path, transport):
    """Each pass through our device adds one hop (nng increments on send): their peers get
    hop count 2, well within their ttl of 8, and take the messages."""
    front, back = our_pair1(session, raw=True), our_pair1(session, raw=True)
    front_url = front.bind(our_url(transport, tmp_path, "front")).url
    back_url = back.bind(our_url(transport, tmp_path, "back")).url
    device = sp.device(front, back, background=True)

    left = nodes.start("pair1", dial=(front_url,), send=b"left to right")
    right = nodes.start("pair1", dial=(back_url,), send=b"right to left")

    assert right.messages(1) == [b"left to right"]
    assert left.messages(1) == [b"right to left"]
    device.stop()
    assert device.join(DEADLINE)


# ---------------------------------------------------------------- a raw peer with wrong hop counts

SP_HEADER = struct.Struct(">4sHH")
PAIR1_ID = 0x11


class RawPeer:
    """A PAIR v1 peer written by hand over a plain stream socket, to send what no library
    sends: the 8-byte SP header, then frames with any payload."""

    def __init__(self, sock: socket.socket, transport: str):
        self.sock, self.ipc = sock, transport == "ipc"
        sock.settimeout(DEADLINE)
        sock.sendall(SP_HEADER.pack(b"\x00SP\x00", PAIR1_ID, 0))
        assert self._read(8) == SP_HEADER.pack(b"\x00SP\x00", PAIR1_ID, 0)

    def send(self, payload: bytes) -> None:
        prefix = (b"\x01" if self.ipc else b"") + struct.pack(">Q", len(payload))
        self.sock.sendall(prefix + payload)

    def recv(self) -> bytes:
        if self.ipc:
            assert self._read(1) == b"\x01"
        (size,) = struct.unpack(">Q", self._read(8))
        return self._read(size)

    def closed_by_peer(self) -> bool:
        """Wait for the other side to close the connection (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, f"connection closed after {len(data)} of {n} bytes"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_peer(session, tmp_path, transport, side):
    """``(our cooked pair1, connect)``: ``connect()`` returns a new RawPeer linked to it, the
    raw peer dialing when we listen and listening (and accepting our dialer) otherwise."""
    family = socket.AF_UNIX if transport == "ipc" else socket.AF_INET
    pair = our_pair1(session)
    opened: list = []
    if side == WE_LISTEN:
        url = pair.bind(our_url(transport, tmp_path, "ours")).url
        address = ipc_path(url) if transport == "ipc" else ("127.0.0.1", int(url.rsplit(":", 1)[1]))

        def connect() -> RawPeer:
            sock = socket.socket(family, socket.SOCK_STREAM)
            opened.append(sock)
            sock.connect(address)
            return RawPeer(sock, transport)
    else:
        listener = socket.socket(family, socket.SOCK_STREAM)
        opened.append(listener)
        if transport == "ipc":
            path = str(tmp_path / "raw.ipc")
            listener.bind(path)
            url = f"ipc://{path}"
        else:
            listener.bind(("127.0.0.1", 0))
            url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        listener.listen(4)
        listener.settimeout(DEADLINE)
        pair.connect(url)

        def connect() -> RawPeer:
            sock, _ = listener.accept()  # our dialer (re)connects by itself
            opened.append(sock)
            return RawPeer(sock, transport)

    yield pair, connect
    for sock in opened:
        sock.close()


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
def test_our_pair1_drops_a_message_over_the_ttl_and_keeps_the_connection(raw_peer):
    pair, connect = raw_peer
    peer = connect()

    peer.send(hops(9) + b"nine hops")
    peer.send(hops(8) + b"eight hops")

    assert pair.recv() == b"eight hops"
    wait_until(lambda: pair.stats.get("dropped_ttl", 0) == 1, "the drop to be counted")
    pair.send(b"back")
    assert peer.recv() == hops(1) + b"back"  # our cooked send: hop count 1 on the wire
    nothing_more(pair)


@pytest.mark.interop
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", SIDES)
def test_our_pair1_closes_the_connection_of_a_peer_that_sends_a_hop_count_over_255(raw_peer):
    pair, connect = raw_peer
    peer = connect()

    peer.send(hops(1) + b"fine")
    peer.send(hops(0x100) + b"malformed")

    assert pair.recv() == b"fine"
    assert peer.closed_by_peer()
    wait_until(lambda: pair.stats.get("dropped_malformed", 0) == 1, "the close to be counted")
    # Our socket stays usable: a new connection (theirs to our listener, or our dialer's
    # next one) pairs and carries messages.
    again = connect()
    again.send(hops(1) + b"after")
    assert pair.recv() == b"after"
    nothing_more(pair)

