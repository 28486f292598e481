"""sp.poll and sp.Poller: any requested condition ends the wait; a timeout is not an error."""

from __future__ import annotations

import threading
import time

import pytest

import scaproust as sp


def test_poll_reports_a_readable_pull_as_soon_as_a_message_arrives(session):
    pulls = [session.socket(sp.Pull) for _ in range(2)]
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pulls[1].bind("tcp://127.0.0.1:0").url)
    pulls[0].bind("tcp://127.0.0.1:0")
    threading.Thread(target=push.send, args=(b"wake",)).start()
    ready = sp.poll({pulls[0]: sp.POLLIN, pulls[1]: sp.POLLIN}, timeout=5.0)
    assert ready == {pulls[1]: sp.POLLIN}
    assert pulls[1].recv(block=False) == b"wake"


def test_poll_returns_when_any_condition_holds_not_all(session):
    idle = session.socket(sp.Pull)
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    ready = sp.poll({push: sp.POLLOUT, idle: sp.POLLIN}, timeout=5.0)
    assert ready == {push: sp.POLLOUT}


def test_a_poll_that_times_out_returns_an_empty_dict(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push)  # no peer: not writable
    started = time.monotonic()
    assert sp.poll({pull: sp.POLLIN, push: sp.POLLOUT}, timeout=0.05) == {}
    assert time.monotonic() - started >= 0.05
    assert sp.poll({pull: sp.POLLIN}, timeout=0) == {}


def test_a_socket_closed_while_polled_ends_the_poll_and_its_next_call_raises(session):
    pull = session.socket(sp.Pull)
    threading.Thread(target=pull.close).start()
    ready = sp.poll({pull: sp.POLLIN}, timeout=5.0)
    assert ready == {pull: sp.POLLIN}
    with pytest.raises(sp.Closed):
        pull.recv()


def test_the_poller_object_reuses_its_registrations(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    poller = sp.Poller()
    poller.register(pull, sp.POLLIN)
    poller.register(push, sp.POLLOUT)
    assert poller.poll(5.0) == {push: sp.POLLOUT}
    push.send(b"x")
    poller.unregister(push)
    assert poller.poll(5.0) == {pull: sp.POLLIN}


def test_bad_poll_flags_are_refused(session):
    with pytest.raises(ValueError, match="POLLIN, POLLOUT"):
        sp.poll({session.socket(sp.Pull): 4})


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (float("nan"), ValueError),
                                            ("1", TypeError), (True, TypeError)])
def test_a_poll_timeout_is_checked_as_the_sockets_are(session, timeout, error):
    # -1 returned at once (pyzmq and nng wait for ever), NaN never returned and spun a core.
    pull = session.socket(sp.Pull)
    with pytest.raises(error, match=r"^poll timeout must be None or a number of seconds >= 0"):
        sp.poll({pull: sp.POLLIN}, timeout=timeout)
    poller = sp.Poller()
    poller.register(pull, sp.POLLIN)
    with pytest.raises(error):
        poller.poll(timeout)


def test_an_infinite_poll_timeout_waits_as_none_does(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("inproc://poll-inf").url)
    threading.Thread(target=push.send, args=(b"x",)).start()
    assert sp.poll({pull: sp.POLLIN}, timeout=float("inf")) == {pull: sp.POLLIN}
