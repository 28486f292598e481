"""Addresses, endpoint and socket lifecycle, errors."""

from __future__ import annotations

import os
import socket as pysocket
import threading

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until
from tests.ip_helpers import has_ipv6_loopback


def test_bind_on_a_taken_port_raises_address_in_use_at_once(session):
    a = session.socket(sp.Pull)
    ep = a.bind("tcp://127.0.0.1:0")
    b = session.socket(sp.Pull)
    with pytest.raises(sp.AddressInUse) as info:
        b.bind(ep.url)
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("bad", ["tcp://127.0.0.1", "foo://x", "tcp://127.0.0.1:99999", "nonsense", "ipc://"])
def test_a_bad_url_raises_invalid_address_at_once(session, bad):
    s = session.socket(sp.Pair)
    with pytest.raises(sp.InvalidAddress) as info:
        s.bind(bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(sp.InvalidAddress):
        s.connect(bad)


@pytest.mark.parametrize("url", ["tcp://*:5555", "tcp://:5555", "tcp4://*:5555", "tcp6://:5555"])
def test_connecting_to_a_wildcard_is_invalid(session, url):
    with pytest.raises(sp.InvalidAddress) as info:
        session.socket(sp.Push).connect(url)
    assert str(info.value) == f"cannot connect to a wildcard address: {url!r}"


@pytest.mark.parametrize("wildcard", ["*", ""])  # nng reads tcp://:5555 as tcp://*:5555
def test_wildcard_bind_and_localhost_connect(session, wildcard):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind(f"tcp://{wildcard}:0")
    port = int(ep.url.rsplit(":", 1)[1])
    assert ep.url == f"tcp://*:{port}" and port > 0
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(f"tcp://localhost:{port}")
    push.send(b"via localhost")
    assert pull.recv() == b"via localhost"


@pytest.mark.parametrize(("bound", "dialed"), [
    ("tcp4://127.0.0.1:0", "tcp4://127.0.0.1:{port}"),
    ("tcp4://*:0", "tcp4://localhost:{port}"),
    pytest.param("tcp6://[::1]:0", "tcp6://[::1]:{port}", marks=pytest.mark.skipif(
        not has_ipv6_loopback(), reason="this host has no IPv6 loopback")),
    pytest.param("tcp6://*:0", "tcp6://[::1]:{port}", marks=pytest.mark.skipif(
        not has_ipv6_loopback(), reason="this host has no IPv6 loopback")),
])
def test_tcp_held_to_one_family(session, bound, dialed):
    # nng's tcp4:// and tcp6://: a listener of the one family, dialed by name or literal.
    rep = session.socket(sp.Rep, recv_timeout=5.0, send_timeout=5.0)
    ep = rep.bind(bound)
    port = int(ep.url.rsplit(":", 1)[1])
    assert ep.url == bound.replace(":0", f":{port}") and port > 0
    req = session.socket(sp.Req, recv_timeout=5.0, send_timeout=5.0)
    req.connect(dialed.format(port=port))
    req.send(b"over one family")
    assert rep.recv() == b"over one family"
    rep.send(b"and back")
    assert req.recv() == b"and back"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback")
def test_ipv6_literal_addresses_work(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind("tcp://[::1]:0")
    assert ep.url.startswith("tcp://[::1]:")
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(ep.url)
    push.send(b"six")
    assert pull.recv() == b"six"


def test_ipc_relative_path(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind("ipc://relative.ipc")
    assert (tmp_path / "relative.ipc").exists()
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(ep.url)
    push.send(b"rel")
    assert pull.recv() == b"rel"
    ep.close()
    assert not (tmp_path / "relative.ipc").exists()


def test_ipc_bind_replaces_a_stale_socket_file_but_never_a_regular_file(session, tmp_path):
    stale = tmp_path / "stale.ipc"
    leftover = pysocket.socket(pysocket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()  # the file stays, nobody answers on it
    session.socket(sp.Pull).bind(f"ipc://{stale}")
    regular = tmp_path / "file.ipc"
    regular.write_text("precious")
    with pytest.raises(sp.AddressInUse):
        session.socket(sp.Pull).bind(f"ipc://{regular}")
    assert regular.read_text() == "precious"


def test_closing_a_bound_endpoint_releases_the_port_at_once(session):
    a = session.socket(sp.Pull)
    ep = a.bind("tcp://127.0.0.1:0")
    ep.close()
    b = session.socket(sp.Pull)
    assert b.bind(ep.url).url == ep.url
    ep.close()  # twice is harmless


@pytest.mark.parametrize("kind", [sp.Pair, sp.Rep, sp.Req, sp.Surveyor, sp.Respondent])
def test_a_closed_socket_raises_closed_and_closing_twice_is_harmless(session, kind):
    # A REP or RESPONDENT with no request to answer raises Closed too, not BadState: the
    # policy's send fast path is closed with the socket.
    s = session.socket(kind)
    s.close()
    s.close()
    for call in (lambda: s.send(b"x"), s.recv, lambda: s.bind("tcp://127.0.0.1:0")):
        with pytest.raises(sp.Closed):
            call()


def test_closing_a_socket_wakes_a_thread_blocked_in_recv(session):
    s = session.socket(sp.Pull)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(s.recv)))
    thread.start()
    s.close()
    thread.join(5)
    assert not thread.is_alive() and outcome == [sp.Closed]


def test_closing_the_session_closes_its_sockets():
    with sp.Session() as s:
        sock = s.socket(sp.Push)
    with pytest.raises(sp.Closed):
        sock.send(b"x")
    with pytest.raises(sp.Closed):
        s.socket(sp.Pull)


def test_a_push_that_sends_and_closes_at_once_still_delivers(session, url):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind(url)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(ep.url)
    for i in range(100):
        push.send(b"%d" % i)
    push.close()
    assert [pull.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]


def test_options_are_keyword_arguments_and_validated_attributes(session):
    s = session.socket(sp.Pull, recv_timeout=0.5)
    assert s.recv_timeout == 0.5
    s.recv_timeout = None
    assert s.recv_timeout is None
    with pytest.raises(ValueError, match="recv_timeout"):
        s.recv_timeout = -1
    with pytest.raises(TypeError, match="recv_max_size"):
        session.socket(sp.Pull, recv_max_size="big")
    with pytest.raises(TypeError, match="unknown socket option 'colour'"):
        session.socket(sp.Pull, colour="red")
    assert s.protocol is sp.Pull and s.raw is False


def test_the_default_session_serves_sp_socket():
    pull = sp.socket(sp.Pull, recv_timeout=5.0)
    push = sp.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"default")
    assert pull.recv() == b"default"
    push.close()
    pull.close()


def test_the_io_thread_survives_and_no_pipe_leaks_fds(session):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        pull = session.socket(sp.Pull, recv_timeout=5.0)
        push = session.socket(sp.Push, send_timeout=5.0)
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        push.send(b"x")
        assert pull.recv() == b"x"
        push.close()
        pull.close()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def _catch(fn):
    try:
        fn()
    except Exception as err:
        return type(err)
    return None


def test_pipe_listeners_hear_pipes_added_and_removed_with_the_peer_address(session):
    import queue

    events = queue.Queue()
    pull = session.socket(sp.Pull)
    pull.add_pipe_listener(events.put)
    ep = pull.bind("tcp://127.0.0.1:0")
    push = session.socket(sp.Push)
    push.connect(ep.url)
    added = events.get(timeout=5)
    assert added.kind == "added" and added.endpoint == ep.url
    assert added.peer.startswith("tcp://127.0.0.1:") and added.peer != ep.url
    push.close()
    removed = events.get(timeout=5)
    assert (removed.kind, removed.pipe_id, removed.peer) == ("removed", added.pipe_id, added.peer)


def test_a_failing_pipe_listener_is_logged_and_the_socket_carries_on(session, caplog):
    def broken(event):
        raise RuntimeError("listener bug")

    pull = session.socket(sp.Pull, recv_timeout=5)
    pull.add_pipe_listener(broken)
    push = session.socket(sp.Push, send_timeout=5)
    with caplog.at_level("ERROR", logger="scaproust"):
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        push.send(b"still delivered")
        assert pull.recv() == b"still delivered"
    assert "listener bug" in caplog.text
    pull.remove_pipe_listener(broken)
    with pytest.raises(ValueError):
        pull.remove_pipe_listener(broken)


def test_state_changes_are_logged_at_debug_on_the_scaproust_logger(session, caplog):
    with caplog.at_level("DEBUG", logger="scaproust"):
        pull = session.socket(sp.Pull, recv_timeout=5)
        push = session.socket(sp.Push, send_timeout=5)
        ep = pull.bind("tcp://127.0.0.1:0")
        push.connect(ep.url)
        push.send(b"x")
        pull.recv()
        push.close()
    text = caplog.text
    for line in (f"listening on {ep.url}", f"dialing {ep.url}", f"to {ep.url} active (sp.Push)",
                 f"to {ep.url} closed", "socket sp.Push closed"):
        assert line in text, line


def test_closing_the_socket_closes_its_endpoints(session):
    # They still said they were open (and the socket's repr listed their urls) although
    # their ports could be bound again.
    pull = session.socket(sp.Pull)
    ep = pull.bind("tcp://127.0.0.1:0")
    pull.close()
    assert ep.closed and pull.endpoints == [] and repr(ep).endswith(" closed>")
    assert ep.url not in repr(pull)
    ep.close()  # harmless
    again = session.socket(sp.Pull)
    assert again.bind(ep.url).url == ep.url


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_close_returns_once_the_address_is_free_to_bind_again(session, scheme, tmp_path):
    # close() of a socket without pipes returned as it was marked closed, and its
    # listener closed a moment later: a plain bind of the port right after it failed in
    # most tries, and the IPC file was still there.
    # It happened when the I/O thread ran the close: the case of a loop asleep in its
    # selector (it holds the session then; a caller waits only a moment to take it over).
    loop = session._core.loop
    path = tmp_path / "again.ipc"
    for _ in range(20):
        sock = session.socket(sp.Pull)
        url = sock.bind("tcp://127.0.0.1:0" if scheme == "tcp" else f"ipc://{path}").url
        wait_until(lambda: loop._idle, what="the I/O thread asleep")
        sock.close()
        if scheme == "tcp":
            with pysocket.socket() as plain:  # no SO_REUSEADDR: refused while listened on
                plain.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        else:
            assert not path.exists()  # the listener removes its file as it closes
