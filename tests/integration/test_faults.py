"""A bug in an action fails that one pipe or socket, loudly; the I/O thread carries on."""

from __future__ import annotations

import threading

import pytest

import scaproust as sp
from scaproust.protocols.pull import Pull
from scaproust.protocols.push import Push
from tests.integration.conftest import bind_again, wait_until


def test_an_action_that_raises_closes_only_that_pipe(session, monkeypatch, caplog):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"before")
    assert pull.recv() == b"before"

    def broken(self, pipe, msgs):
        raise RuntimeError("bug in deliver")

    with caplog.at_level("ERROR", logger="scaproust"):
        monkeypatch.setattr(Pull, "deliver", broken)
        push.send(b"lost to the bug")
        # The counter moves before the line is logged: wait for the line itself.
        wait_until(lambda: "closed by an internal error" in caplog.text, what="the pipe to fail")
        monkeypatch.undo()
    assert "closed by an internal error" in caplog.text and "bug in deliver" in caplog.text
    # The loop lives on, and the dialer reconnects. Sent once the PUSH has its new pipe:
    # sent before its I/O thread read the old one's end, it would go down with it.
    wait_until(lambda: push.stats.get("pipes_opened", 0) == 2, what="the redialed pipe")
    push.send(b"after")
    assert pull.recv() == b"after"


def test_a_protocol_that_raises_on_send_closes_its_socket_not_the_session(session, monkeypatch, caplog):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"ok")
    assert pull.recv() == b"ok"

    threads: list[int] = []

    def broken(self, item):
        threads.append(threading.get_ident())
        raise RuntimeError("bug in send")

    with caplog.at_level("ERROR", logger="scaproust"):
        monkeypatch.setattr(Push, "send_round_robin", broken)
        # A lone send (its pace alone could make it one of a burst, drained by the I/O
        # thread): the protocol runs in this thread, under SocketCore._send_now's guard,
        # and the send itself returns.
        push._channel.last_put = float("-inf")
        push.send(b"boom")
        assert threads == [threading.get_ident()]
        # The channel closes (entering "closed") before the row's log_crash action runs.
        wait_until(lambda: "closed by an internal error" in caplog.text, what="the socket to fail")
    monkeypatch.undo()
    assert "socket sp.Push closed by an internal error" in caplog.text
    with pytest.raises(sp.Closed):
        push.send(b"again", timeout=1.0)
    other = session.socket(sp.Push, send_timeout=5.0)
    other.connect(pull.endpoints[0].url)
    other.send(b"still working")
    assert pull.recv() == b"still working"


def test_a_listener_whose_action_raises_closes_and_its_port_is_released(session, monkeypatch, caplog):
    from scaproust.core.listener import Listener

    pull = session.socket(sp.Pull, recv_timeout=5.0)
    ep = pull.bind("tcp://127.0.0.1:0")

    def broken(self, *args):
        raise RuntimeError("bug in accept")

    monkeypatch.setattr(Listener, "accept_connections", broken)
    with caplog.at_level("ERROR", logger="scaproust"):
        push = session.socket(sp.Push, send_timeout=5.0, reconnect_interval=0.01)
        push.connect(ep.url)
        wait_until(lambda: "listener " + ep.url + " closed by an internal error" in caplog.text,
                   what="the listener to fail")
    monkeypatch.undo()
    # The port is free again: another socket of the same session binds it.
    other = session.socket(sp.Pull, recv_timeout=5.0)
    bind_again(other, ep.url)
    push.send(b"to the new listener")  # the dialer reconnects to it
    assert other.recv() == b"to the new listener"


def test_a_protocol_timer_that_raises_closes_its_socket(session, caplog):
    pull = session.socket(sp.Pull)
    core = pull._core

    def broken():
        raise RuntimeError("bug in a timer")

    with caplog.at_level("ERROR", logger="scaproust"):
        session._core.call(core.ctx.call_later, 0.0, broken)
        wait_until(lambda: "closed by an internal error" in caplog.text, what="the socket to fail")
    assert "socket sp.Pull closed by an internal error" in caplog.text
    with pytest.raises(sp.Closed):
        pull.recv()


def test_a_dialer_whose_action_raises_closes_that_endpoint_only(session, monkeypatch, caplog):
    from scaproust.core.dialer import Dialer

    pull = session.socket(sp.Pull, recv_timeout=5.0)
    url = pull.bind("tcp://127.0.0.1:0").url
    push = session.socket(sp.Push, send_timeout=5.0, reconnect_interval=0.01)
    push.connect(url)
    nowhere = push.connect("tcp://127.0.0.1:1")  # refused: it redials from its timer
    wait_until(lambda: push.stats.get("connect_failures", 0) >= 1, what="a refused dial")

    def broken(self, *args):
        raise RuntimeError("bug in open_pipe")

    with caplog.at_level("ERROR", logger="scaproust"):
        monkeypatch.setattr(Dialer, "open_pipe", broken)
        wait_until(lambda: f"dialer {nowhere.url} closed by an internal error" in caplog.text,
                   what="the redialing dialer to fail")
        monkeypatch.undo()
    # Its socket and the socket's other endpoint carry on.
    push.send(b"through the healthy dialer")
    assert pull.recv() == b"through the healthy dialer"


def test_a_socket_action_that_raises_as_a_pipe_opens_fails_that_pipe_only(session, monkeypatch, caplog):
    from scaproust.core.socket import SocketCore

    pull = session.socket(sp.Pull, recv_timeout=5.0)
    url = pull.bind("tcp://127.0.0.1:0").url
    real = SocketCore.track_pipe
    broken_once = []

    def track_pipe(self, pipe):
        if not broken_once:
            broken_once.append(pipe)
            raise RuntimeError("bug in track_pipe")
        real(self, pipe)

    with caplog.at_level("ERROR", logger="scaproust"):
        monkeypatch.setattr(SocketCore, "track_pipe", track_pipe)
        push = session.socket(sp.Push, send_timeout=5.0, reconnect_interval=0.01)
        push.connect(url)
        # The first pipe fails (on one side or the other), the dialer redials, the next works.
        push.send(b"after the failed pipe")
        assert pull.recv() == b"after the failed pipe"
    assert "closed by an internal error" in caplog.text and "bug in track_pipe" in caplog.text
