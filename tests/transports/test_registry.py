"""The transport registry: a user's transport is added through ``sp.register_transport``
and carries messages like a built-in one (docs/TRANSPORTS.md)."""

from __future__ import annotations

import importlib
import socket
import threading

import pytest

import scaproust as sp
from scaproust.transports import (
    Address,
    ListeningSocket,
    get_transport,
    lookup,
    schemes,
    tcp,
)


class ToyTransport:
    """``toy://name``: a name looked up in a table of this object, mapped to a loopback
    TCP port. Written against the documented interface only."""

    IPC_FRAMING = False

    def __init__(self, scheme: str) -> None:
        self.SCHEME = scheme
        self.names: dict[str, int] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def parse_address(self, url: str) -> Address:
        scheme, _, name = url.partition("://")
        if not name.isidentifier():
            raise sp.InvalidAddress(f"{url!r}: a toy name is an identifier")
        return Address(scheme, path=name)

    def listen(self, address: Address, *, backlog: int = 16,
               ipv4_only: bool = False) -> tuple[ListeningSocket, str]:
        self.calls.append("listen")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        sock.setblocking(False)
        with self.lock:
            if address.path in self.names:
                sock.close()
                raise sp.AddressInUse(f"{address.url!r} is taken")
            self.names[address.path] = sock.getsockname()[1]
        return ListeningSocket(sock=sock, address=address, url=address.url), address.url

    def accept(self, listener: ListeningSocket) -> socket.socket | None:
        self.calls.append("accept")
        return tcp.accept(listener)

    def close_listener(self, listener: ListeningSocket) -> None:
        self.calls.append("close_listener")
        with self.lock:
            self.names.pop(listener.address.path, None)
        listener.sock.close()

    def connect(self, address: Address, *, ipv4_only: bool = False):
        self.calls.append("connect")
        with self.lock:
            port = self.names.get(address.path)
        if port is None:
            return None, 111  # ECONNREFUSED: the dialer retries on its schedule
        return tcp.connect(f"tcp://127.0.0.1:{port}")

    def finish_connect(self, sock: socket.socket) -> int:
        return tcp.finish_connect(sock)

    def configure_stream(self, sock: socket.socket, **options: object) -> None:
        self.calls.append("configure_stream")
        sock.setblocking(False)


@pytest.fixture
def toy():
    made: list[ToyTransport] = []

    def factory(scheme: str) -> ToyTransport:
        made.append(ToyTransport(scheme))
        return made[-1]

    sp.register_transport("toy", factory)
    try:
        yield made
    finally:
        sp.unregister_transport("toy")


def test_a_toy_transport_added_through_the_public_registry_carries_messages(toy):
    with sp.Session() as session:
        rep = session.socket(sp.Rep, recv_timeout=5, send_timeout=5)
        req = session.socket(sp.Req, recv_timeout=5, send_timeout=5)
        req.connect("toy://service")  # before the bind: refused, then retried
        ep = rep.bind("toy://service")
        assert ep.url == "toy://service"
        for i in range(3):
            req.send(b"ping %d" % i)
            assert rep.recv() == b"ping %d" % i
            rep.send(b"pong %d" % i)
            assert req.recv() == b"pong %d" % i
        with pytest.raises(sp.AddressInUse):
            session.socket(sp.Rep).bind("toy://service")
        ep.close()
    [transport] = toy  # made once, at the first use
    assert transport.SCHEME == "toy"
    assert transport.names == {}  # close_listener ran
    for call in ("listen", "accept", "connect", "configure_stream", "close_listener"):
        assert call in transport.calls
    assert transport.calls.count("listen") == 2


def test_the_toy_scheme_is_listed_while_registered(toy):
    assert "toy" in schemes()
    assert isinstance(get_transport("toy"), ToyTransport)
    with pytest.raises(sp.InvalidAddress, match="a toy name is an identifier"):
        lookup("toy://not a name")


def test_builtin_transports_are_registered_the_same_way():
    assert {"tcp", "ipc", "inproc"} <= set(schemes())
    transport, address = lookup("tcp://127.0.0.1:5555")
    assert transport is tcp
    assert address == Address("tcp", host="127.0.0.1", port=5555)


def test_the_builtin_schemes_written_in_the_registry_are_their_modules():
    # transports/__init__.py names each built-in scheme without importing its module (it
    # loads at first use); each module's own SCHEME/SCHEMES must say the same.
    from scaproust import transports
    from scaproust.core.pipe_kinds import PIPE_CLASSES

    by_module: dict[str, set[str]] = {}
    for scheme, (module, _attribute) in transports.BUILTIN.items():
        by_module.setdefault(module, set()).add(scheme)
    for module, registered in by_module.items():
        loaded = importlib.import_module(f"scaproust.transports.{module}")
        declared = set(getattr(loaded, "SCHEMES", ())) or {loaded.SCHEME}
        assert declared == registered, module
    for scheme in transports.BUILTIN:
        transport = get_transport(scheme)
        assert transport.SCHEME == scheme
        # the pipe class of its kind loads on demand, and drives its kind
        kind = getattr(transport, "PIPE_KIND", "stream")
        assert kind in PIPE_CLASSES
        assert PIPE_CLASSES[kind].__module__.startswith("scaproust.core.")
    assert set(transports.BUILTIN) <= set(schemes())


def test_registering_a_taken_scheme_needs_replace(toy):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        sp.register_transport("toy", ToyTransport)
    sp.register_transport("toy", ToyTransport, replace=True)
    assert type(get_transport("toy")) is ToyTransport
    assert toy == []  # the replaced factory was never called


@pytest.mark.parametrize("scheme", ["", "Toy", "9p", "to y", "toy://"])
def test_a_malformed_scheme_is_refused(scheme):
    with pytest.raises(ValueError, match="transport scheme must be"):
        sp.register_transport(scheme, ToyTransport)


def test_a_factory_must_be_callable_and_make_a_whole_transport():
    with pytest.raises(TypeError, match="must be callable"):
        sp.register_transport("toy", object())  # type: ignore[arg-type]
    sp.register_transport("half", lambda scheme: object())
    try:
        with pytest.raises(TypeError, match="lacks SCHEME, IPC_FRAMING, parse_address"):
            get_transport("half")
    finally:
        sp.unregister_transport("half")


def test_an_unknown_scheme_is_invalid_address_at_once():
    with sp.Session() as session, session.socket(sp.Pair) as s:
        with pytest.raises(sp.InvalidAddress, match="unknown transport scheme 'udp'"):
            s.bind("udp://127.0.0.1:5555")
        with pytest.raises(sp.InvalidAddress, match="not a URL"):
            s.connect("127.0.0.1:5555")


def test_a_transport_of_an_unknown_pipe_kind_is_refused_at_bind(toy):
    class Odd(ToyTransport):
        PIPE_KIND = "carrier-pigeon"

    sp.register_transport("odd", Odd)
    try:
        with sp.Session() as session, session.socket(sp.Pair) as s:
            with pytest.raises(sp.InvalidAddress, match="PIPE_KIND 'carrier-pigeon'"):
                s.bind("odd://x")
    finally:
        sp.unregister_transport("odd")
