"""Fixtures for tests between our own sockets over real TCP and IPC."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
import sys
import threading
import time

import attrs
import pytest

import scaproust as sp
from scaproust.core.options import SPECS


@pytest.fixture
def session():
    with sp.Session() as s:
        yield s


#: Every transport the ``url`` fixture runs a test over (abstract sockets: Linux only).
TRANSPORTS = ("tcp", "ipc", *(("abstract",) if sys.platform.startswith("linux") else ()),
              "tls+tcp", "ws", "wss", "inproc")


#: The transports whose pipes read a kernel stream (inproc hands messages over in memory).
STREAMS = tuple(kind for kind in TRANSPORTS if kind != "inproc")


def pytest_generate_tests(metafunc):
    """Run every test that takes ``url`` over every transport; a test marked
    ``raw_wire(kinds)`` (it opens plain sockets to ours) or ``transports(kinds)`` (it is
    about the caller's side, which no transport changes) over those kinds only, and one
    marked ``streams_only`` (it is about reading a descriptor) over STREAMS."""
    if "url_kind" in metafunc.fixturenames:
        marker = (metafunc.definition.get_closest_marker("raw_wire")
                  or metafunc.definition.get_closest_marker("transports"))
        kinds = marker.args[0] if marker else TRANSPORTS
        if metafunc.definition.get_closest_marker("streams_only"):
            kinds = [kind for kind in kinds if kind in STREAMS]
        metafunc.parametrize("url_kind", [k for k in kinds if k in TRANSPORTS])


@pytest.fixture(scope="session")
def tls_config():
    """One sp.TLSConfig that serves both sides on 127.0.0.1: a certificate for 127.0.0.1
    and the CA that signed it, made now (trustme)."""
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    return sp.TLSConfig(ca_string=ca.cert_pem.bytes().decode(),
                        own_cert_string=cert.cert_chain_pems[0].bytes().decode(),
                        own_key_string=cert.private_key_pem.bytes().decode())


@pytest.fixture
def url(url_kind, tmp_path, request, monkeypatch):
    """A bindable URL: port 0 on loopback for TCP, TLS and WebSocket, a fresh path for IPC, a fresh
    name for abstract sockets and for inproc.

    For tls+tcp and wss, every socket the test makes has the ``tls`` option set to
    ``tls_config`` (the option's default is replaced for the test), so the same test code
    runs over TLS unchanged."""
    if url_kind == "tcp":
        return "tcp://127.0.0.1:0"
    if url_kind in ("tls+tcp", "wss"):
        spec = SPECS["tls"]
        config = request.getfixturevalue("tls_config")
        monkeypatch.setitem(SPECS, "tls", attrs.evolve(spec, default=config))
        return "tls+tcp://127.0.0.1:0" if url_kind == "tls+tcp" else "wss://127.0.0.1:0/"
    if url_kind == "ws":
        return "ws://127.0.0.1:0/"
    if url_kind == "abstract":
        return f"abstract://scaproust-{os.getpid()}-{next(_names)}"
    if url_kind == "inproc":
        return f"inproc://scaproust-{next(_names)}"
    return f"ipc://{tmp_path}/sock.ipc"


_names = itertools.count()


def wait_until(condition, timeout=5.0, what="condition"):
    """Poll ``condition`` until true or fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def tls_by_hand(host: str, port: int, ca_pem: str, timeout: float = 5.0):
    """A TLS client over a plain TCP connection to ``host``:``port``, its handshake done:
    ``(socket, ssl.SSLObject, outgoing BIO)``. What it writes leaves only when the test
    sends ``outgoing.read()``, so the test decides what one write carries."""
    raw = socket.create_connection((host, port), timeout=timeout)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cadata=ca_pem).wrap_bio(incoming, outgoing,
                                                              server_hostname=host)
    while True:
        try:
            tls.do_handshake()
            return raw, tls, outgoing
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))


def bind_again(sock, url: str) -> None:
    """Bind ``url``, an address a closed endpoint has just freed, while a dialer still
    retries it. For a moment it may be taken: a dialer whose random local port was the very
    port it dials connects to itself there, until the transport refuses that connection
    (transports/tcp.py, ``_connected_to_itself``)."""

    def bound() -> bool:
        try:
            sock.bind(url)
        except sp.AddressInUse:
            return False
        return True

    wait_until(bound, what=f"{url} bound again")


def in_thread(fn, **kwargs):
    """Start ``fn(**kwargs)`` in a thread: ``(thread, errors)``, ``errors`` receiving the
    ``sp.Error`` it raises, if it raises one."""
    errors = []

    def run():
        try:
            fn(**kwargs)
        except sp.Error as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def send_overlapping(policy, send, first: bytes, second: bytes, monkeypatch,
                     meanwhile=None) -> sp.Error | None:
    """``send(first)`` in a thread and ``send(second)`` in this one, through a socket or
    context whose policy is ``policy``: the second send starts once the first has queued
    its message but not yet told the policy it was sent (``Policy.sent``), the window
    where two threads' sends used to cross (core/policy.py, ``send_in_order``). The first
    waits there until the second has returned and ``meanwhile()`` (if given) has run, at
    most 0.3 s: the second now waits for the first instead. Returns what the second send
    raised, if anything."""
    first_queued, second_done = threading.Event(), threading.Event()

    def sent(item, real_sent=policy.sent):
        if threading.current_thread().name == "first sender":
            first_queued.set()
            second_done.wait(0.3)
        real_sent(item)

    monkeypatch.setattr(policy, "sent", sent)
    thread = threading.Thread(target=send, args=(first,), name="first sender")
    thread.start()
    try:
        assert first_queued.wait(5.0), "the first send never queued its message"
        try:
            send(second)
        except sp.Error as err:
            return err
        finally:
            try:
                if meanwhile is not None:
                    meanwhile()
            finally:
                second_done.set()
    finally:
        thread.join(5.0)
        assert not thread.is_alive(), "the first send never returned"
        monkeypatch.undo()
    return None


#: Where the overlapping-send tests run: a stream and the in-process transport (the send
#: lock is the caller's side; each case waits 0.3 s, by design, once the lock works).
OVERLAP_TRANSPORTS = ("tcp", "inproc")

#: The ways a test sends one body on a socket or context (``sending``): the bytes fast
#: path with the option's wait (``Socket.send``'s inline first try), the general path
#: (``send_msg``, an explicit timeout) and an event loop's ``asend``.
SEND_WAYS = ("send", "send_msg", "timeout", "asend")


def sending(user, way: str):
    """A function sending one body on ``user`` the way ``way`` names (``SEND_WAYS``)."""
    if way == "send":
        return user.send
    if way == "send_msg":
        return lambda body: user.send_msg(sp.Message(body))
    if way == "timeout":
        return lambda body: user.send(body, timeout=5.0)
    if way == "asend":
        return lambda body: asyncio.run(user.asend(body))
    raise ValueError(way)
