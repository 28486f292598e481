"""Every option: keyword argument, attribute, validation, and its effect."""

from __future__ import annotations

import socket as pysocket
import threading

import pytest

import scaproust as sp
from scaproust.core.options import SPECS
from tests.integration.conftest import wait_until


def test_every_common_option_reads_back_its_default_and_a_new_value(session):
    sock = session.socket(sp.Push)
    for name, spec in SPECS.items():
        if spec.specific:
            continue
        assert getattr(sock, name) == spec.default, name


def test_an_option_of_another_protocol_is_refused(session):
    with pytest.raises(TypeError, match="resend_interval does not apply to a push socket"):
        session.socket(sp.Push, resend_interval=1.0)
    push = session.socket(sp.Push)
    with pytest.raises(AttributeError, match="a push socket has no option 'survey_deadline'"):
        push.survey_deadline  # noqa: B018
    # Set as read: an AttributeError (docs/OPTIONS.md; it was a TypeError).
    with pytest.raises(AttributeError, match="a push socket has no option 'resend_interval'"):
        push.resend_interval = 1.0


def test_a_context_refuses_another_protocols_option_as_its_socket_does(session):
    ctx = session.socket(sp.Req).context()
    with pytest.raises(AttributeError, match="a req context has no option 'survey_deadline'"):
        ctx.survey_deadline = 1.0  # was a TypeError from deeper down, unlike the socket's
    ctx.resend_interval = 2.0
    assert ctx.resend_interval == 2.0


def test_a_closed_socket_or_context_takes_no_option(session):
    # Stored and ignored before; nng says ECLOSED, pyzmq ENOTSOCK. Reading stays allowed.
    req = session.socket(sp.Req, linger=0.5)
    ctx = req.context()
    ctx.close()
    with pytest.raises(sp.Closed, match="context is closed"):
        ctx.send_timeout = 1.0
    other = req.context()
    req.close()
    with pytest.raises(sp.Closed, match="socket is closed"):
        req.linger = 2.0
    with pytest.raises(sp.Closed, match="context is closed"):  # closed with its socket
        other.resend_interval = 2.0
    assert (req.linger, other.resend_interval) == (0.5, 60.0)


def test_a_misspelt_option_is_refused_not_stored(session):
    # It was stored as a new attribute and did nothing (pyzmq refuses it too).
    push = session.socket(sp.Push)
    with pytest.raises(AttributeError, match="a push socket has no option 'recv_timout'"):
        push.recv_timout = 1.0
    assert not hasattr(push, "recv_timout")
    push.recv_timeout = 1.0  # the real one
    assert push.recv_timeout == 1.0


@pytest.mark.parametrize(("name", "bad", "error"), [
    ("tcp_nodelay", 1, TypeError), ("socket_name", 5, TypeError), ("send_buffer", 0, ValueError),
    ("recv_buffer", 1.5, TypeError), ("linger", -1, ValueError), ("reconnect_interval", 0, ValueError),
])
def test_bad_values_name_the_option(session, name, bad, error):
    with pytest.raises(error, match=name):
        session.socket(sp.Pull, **{name: bad})


def test_a_bad_timeout_argument_names_the_option_it_overrides(session):
    # send() used to validate its timeout= as recv_timeout, and said so (found typing it).
    push = session.socket(sp.Push)
    with pytest.raises(ValueError, match="option send_timeout must be >= 0"):
        push.send(b"x", timeout=-1)
    with pytest.raises(TypeError, match="option send_timeout must be None or"):
        push.send(b"x", timeout="soon")
    pull = session.socket(sp.Pull)
    with pytest.raises(ValueError, match="option recv_timeout must be >= 0"):
        pull.recv(timeout=-1)


def test_read_only_facts(session):
    push = session.socket(sp.Push, socket_name="jobs")
    assert push.protocol is sp.Push and push.peer is sp.Pull and push.raw is False
    assert repr(push) == "<scaproust.Socket sp.Push 'jobs' open>"
    url = push.bind("tcp://127.0.0.1:0").url
    assert repr(push) == f"<scaproust.Socket sp.Push 'jobs' open {url}>"
    raw = session.socket(sp.Rep, raw=True)
    raw.close()
    assert repr(raw) == "<scaproust.Socket sp.Rep raw closed>"
    with pytest.raises(AttributeError):
        push.peer = sp.Pair


def _pipe_stream(sock):
    wait_until(lambda: sock._core.pipes, what="a pipe")
    return next(iter(sock._core.pipes)).stream


def test_tcp_nodelay_and_keepalive_are_applied_to_connections(session):
    pull = session.socket(sp.Pull, tcp_nodelay=False, tcp_keepalive=True)
    push = session.socket(sp.Push)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    stream = _pipe_stream(pull)
    assert stream.getsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY) == 0
    assert stream.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_KEEPALIVE) == 1
    stream = _pipe_stream(push)
    assert stream.getsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY) == 1
    assert stream.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_KEEPALIVE) == 0


def test_ipv4_only_refuses_ipv6_addresses(session):
    sock = session.socket(sp.Pull, ipv4_only=True)
    with pytest.raises(sp.InvalidAddress, match="ipv4_only"):
        sock.bind("tcp://[::1]:0")
    assert sock.bind("tcp://localhost:0").url.startswith("tcp://localhost:")


def test_send_buffer_sets_how_many_messages_a_pipe_takes(session):
    pull = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_buffer=3)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    wait_until(lambda: push._core.pipes, what="a pipe")
    (pipe,) = push._core.pipes
    assert pipe.free == 3


def test_recv_buffer_sets_when_reading_pauses(session):
    pull = session.socket(sp.Pull, recv_buffer=10)
    assert pull._channel.recv_high == 10
    pull.recv_buffer = 20
    assert pull._channel.recv_high == 20


def test_recv_max_size_can_be_fixed_per_endpoint(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    strict = pull.bind("tcp://127.0.0.1:0", recv_max_size=10)
    lenient = pull.bind("tcp://127.0.0.1:0")
    to_strict = session.socket(sp.Push, send_timeout=5.0)
    to_lenient = session.socket(sp.Push, send_timeout=5.0)
    to_strict.connect(strict.url)
    to_lenient.connect(lenient.url)
    to_strict.send(b"x" * 11)
    wait_until(lambda: pull.stats.get("dropped_oversize", 0) == 1, what="the strict endpoint's drop")
    to_lenient.send(b"x" * 11)
    assert pull.recv() == b"x" * 11


def test_the_socket_option_at_bind_time_is_what_the_endpoint_keeps(session):
    pull = session.socket(sp.Pull, recv_timeout=5.0, recv_max_size=10)
    ep = pull.bind("tcp://127.0.0.1:0")
    pull.recv_max_size = 0  # later changes do not move existing endpoints
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(ep.url)
    push.send(b"x" * 11)
    wait_until(lambda: pull.stats.get("dropped_oversize", 0) == 1, what="the drop")


def test_endpoint_options_are_validated_and_unknown_ones_refused(session):
    push = session.socket(sp.Push)
    with pytest.raises(ValueError, match="reconnect_interval"):
        push.connect("tcp://127.0.0.1:5", reconnect_interval=0)
    with pytest.raises(TypeError, match="unknown endpoint option"):
        push.connect("tcp://127.0.0.1:5", linger=1.0)


MONTH = 30 * 86400.0


def _outcome(fn, *args):
    try:
        fn(*args)
    except Exception as err:
        return type(err)
    return None


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:0", "inproc://a-month"])
def test_waits_of_a_month_or_more_wait_instead_of_overflowing(session, url):
    # One sleep that long overflowed poll()'s milliseconds or the lock's timeout: recv(),
    # send() and sp.poll() raised OverflowError at once.
    pull = session.socket(sp.Pull, recv_timeout=MONTH)
    push = session.socket(sp.Push, send_timeout=1e10)
    push.connect(pull.bind(url).url)
    wait_until(lambda: push.stats.get("pipes_opened") == 1, what="the pipe")
    for receive in (pull.recv, lambda: pull.recv(timeout=1e10),
                    lambda: (sp.poll({pull: sp.POLLIN}, timeout=1e10), pull.recv())[1]):
        sender = threading.Thread(target=push.send, args=(b"in time",))
        sender.start()
        assert receive() == b"in time"
        sender.join(5)
    lonely = session.socket(sp.Push, send_timeout=1e10)  # no peer: send() waits
    outcome = []
    waiting = threading.Thread(target=lambda: outcome.append(_outcome(lonely.send, b"x")))
    waiting.start()
    wait_until(lambda: lonely._channel.send_waiters == 1, what="the send to wait")
    lonely.close()
    waiting.join(5)
    assert outcome == [sp.Closed]


def test_a_bad_timeout_is_refused_even_with_a_message_waiting(session):
    # The receive's fast path took the waiting message without looking at the timeout.
    pull = session.socket(sp.Pull, recv_timeout=5.0)
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("inproc://bad-timeout").url)
    push.send(b"waiting")
    wait_until(lambda: pull._channel.inbox.count == 1, what="the message queued")
    for receive in (pull.recv, pull.recv_msg):
        with pytest.raises(ValueError, match="recv_timeout"):
            receive(timeout=-1)
    assert pull.recv(timeout=1.0) == b"waiting"  # still there
