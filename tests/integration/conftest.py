"""Fixtures for tests between our own sockets over real TCP and IPC."""

from __future__ import annotations

import itertools
import os
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
    ``raw_wire(kinds)`` (it opens plain sockets to ours) over those kinds only, and one
    marked ``streams_only`` (it is about reading a descriptor) over STREAMS."""
    if "url_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("raw_wire")
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


def send_overlapping(sock, first: bytes, second: bytes, monkeypatch) -> sp.Error | None:
    """Send ``first`` in a thread and ``second`` in this one, the second send starting
    once the first has queued its message but not yet told the socket's policy it was
    sent (``Policy.sent``): the window where two threads' sends on one REQ or SURVEYOR
    used to cross (core/policy.py, ``send_in_order``). The first waits there for the
    second to return, at most 0.3 s: the second now waits for the first instead. Returns
    what the second send raised, if anything."""
    policy = sock._policy
    first_queued, second_returned = threading.Event(), threading.Event()

    def sent(item, real_sent=policy.sent):
        if threading.current_thread().name == "first sender":
            first_queued.set()
            second_returned.wait(0.3)
        real_sent(item)

    monkeypatch.setattr(policy, "sent", sent)
    thread = threading.Thread(target=sock.send, args=(first,), name="first sender")
    thread.start()
    try:
        assert first_queued.wait(5.0), "the first send never queued its message"
        try:
            sock.send(second)
        except sp.Error as err:
            return err
        finally:
            second_returned.set()
    finally:
        thread.join(5.0)
        assert not thread.is_alive(), "the first send never returned"
        monkeypatch.undo()
    return None
