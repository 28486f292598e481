"""Host names are looked up off the session's I/O thread (issue 10): a slow DNS answer for one
socket's dial stalls no other socket, bind() looks its name up in the caller's thread, and a
name that does not resolve (or not in time) is retried like a refused connection.

The lookups go through ``scaproust.transports.tcp.getaddrinfo``, which these tests replace
with fakes that wait on an event or fail; literal addresses never reach it.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

import scaproust as sp
from scaproust.core import dialer as dialer_module
from scaproust.transports import tcp
from tests.integration.conftest import wait_until

REAL_GETADDRINFO = socket.getaddrinfo


class FakeDNS:
    """Answers for ``*.test`` names as 127.0.0.1, each after its ``gate`` opens (at once if
    it has none); ``failing`` names raise like an unknown name. Records who asked, from
    which thread."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.failing: set[str] = set()
        self.asked: list[tuple[str, threading.Thread]] = []

    def __call__(self, host, *args):
        self.asked.append((host, threading.current_thread()))
        if host in self.failing:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        gate = self.gates.get(host)
        if gate is not None and not gate.wait(10.0):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return REAL_GETADDRINFO("127.0.0.1" if host.endswith(".test") else host, *args)


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS()
    monkeypatch.setattr(tcp, "getaddrinfo", fake)
    yield fake
    for gate in fake.gates.values():  # never leave a worker waiting
        gate.set()


def io_thread(session) -> threading.Thread:
    return session._core.loop._thread


def port_of(endpoint) -> str:
    return endpoint.url.rsplit(":", 1)[1]


def test_a_slow_lookup_for_one_dial_stalls_no_other_socket_of_the_session(session, dns):
    dns.gates["slow.test"] = threading.Event()
    target = session.socket(sp.Pull, recv_timeout=5.0)
    port = port_of(target.bind("tcp://127.0.0.1:0"))
    slow = session.socket(sp.Push, send_timeout=5.0)
    slow.connect(f"tcp://slow.test:{port}")  # returns at once; the lookup waits in a worker
    wait_until(lambda: dns.asked, what="the lookup to start")

    a = session.socket(sp.Pair, recv_timeout=2.0, send_timeout=2.0)
    b = session.socket(sp.Pair, recv_timeout=2.0, send_timeout=2.0)
    b.connect(a.bind("tcp://127.0.0.1:0").url)
    for i in range(20):
        b.send(b"ping %d" % i)
        assert a.recv() == b"ping %d" % i
        a.send(b"pong %d" % i)
        assert b.recv() == b"pong %d" % i
    assert slow.stats.get("pipes_opened", 0) == 0  # still waiting for its name

    dns.gates["slow.test"].set()
    slow.send(b"after the lookup")
    assert target.recv() == b"after the lookup"
    assert [host for host, _ in dns.asked] == ["slow.test"]
    assert all(thread is not io_thread(session) for _, thread in dns.asked)


def test_bind_looks_its_name_up_in_the_callers_thread(session, dns):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    endpoint = pull.bind("tcp://bound.test:0")

    assert endpoint.url.startswith("tcp://bound.test:")
    assert [(host, thread) for host, thread in dns.asked] == [
        ("bound.test", threading.current_thread())]
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(f"tcp://127.0.0.1:{port_of(endpoint)}")
    push.send(b"bound by name")
    assert pull.recv() == b"bound by name"


def test_address_literals_are_never_looked_up(session, dns):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    port = port_of(pull.bind("tcp://127.0.0.1:0"))
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(f"tcp://127.0.0.1:{port}")
    push.send(b"no lookup")
    assert pull.recv() == b"no lookup"
    assert dns.asked == []


def test_a_name_that_does_not_resolve_is_retried_and_logged_once(session, dns, caplog):
    dns.failing.add("late.test")
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    port = port_of(pull.bind("tcp://127.0.0.1:0"))
    push = session.socket(sp.Push, send_timeout=5.0, reconnect_interval=0.02)

    with caplog.at_level(logging.INFO, logger="scaproust.dialer"):
        push.connect(f"tcp://late.test:{port}")  # returns at once, as for a refused peer
        wait_until(lambda: push.stats.get("connect_failures", 0) >= 3, what="a few failed lookups")
        dns.failing.clear()
        push.send(b"resolved at last")
        assert pull.recv() == b"resolved at last"

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in lines] == ["WARNING", "INFO"]
    assert "Name or service not known" in lines[0][1]
    assert lines[1][1].startswith(f"resolving 'late.test' for tcp://late.test:{port} works again")


def test_a_lookup_that_outlasts_its_timeout_is_retried_on_the_reconnect_schedule(session, dns, monkeypatch):
    monkeypatch.setattr(dialer_module, "RESOLVE_TIMEOUT", 0.05)
    dns.gates["stuck.test"] = threading.Event()
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    port = port_of(pull.bind("tcp://127.0.0.1:0"))
    push = session.socket(sp.Push, send_timeout=5.0, reconnect_interval=0.02)
    push.connect(f"tcp://stuck.test:{port}")

    wait_until(lambda: push.stats.get("connect_failures", 0) >= 3, what="a few timed-out lookups")

    dns.gates["stuck.test"].set()
    push.send(b"answered in time at last")
    assert pull.recv() == b"answered in time at last"


def test_dialing_and_binding_localhost_resolve_for_real(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    endpoint = pull.bind("tcp://localhost:0")
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(endpoint.url)
    push.send(b"via localhost")
    assert pull.recv() == b"via localhost"


def test_a_bind_to_a_name_that_does_not_resolve_fails_at_once(session, dns):
    dns.failing.add("nowhere.test")
    pull = session.socket(sp.Pull)
    with pytest.raises(sp.InvalidAddress, match="cannot resolve 'nowhere.test'"):
        pull.bind("tcp://nowhere.test:0")
