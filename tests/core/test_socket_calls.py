"""What the facade asks of a ``SocketCore`` (core/socket.py, the ``@facade_call`` methods):
each returns its answer, and a socket that is no longer open refuses endpoints before it
binds anything. Sans-IO: a real SocketCore on a fake loop; the tcp binds are real, on
loopback port 0."""

from __future__ import annotations

import socket

import pytest
from protocols.fakes import FakeLoop, FakePipe

import scaproust as sp
from scaproust import protocols
from scaproust.core.options import Options
from scaproust.core.socket import SocketCore


@pytest.fixture
def core():
    sock = SocketCore(loop=FakeLoop(), info=protocols.Pull, options=Options("pull"))
    yield sock
    sock.cmd_close()


def test_bind_answers_the_endpoint_id_and_the_url_as_bound(core):
    endpoint_id, url = core.bind("tcp://127.0.0.1:0")
    assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
    assert list(core.endpoints) == [endpoint_id]
    assert core.endpoints[endpoint_id].state == "listening"


def test_connect_answers_the_endpoint_id_and_the_url(core, tmp_path):
    wanted = f"ipc://{tmp_path}/nobody-listens.ipc"
    endpoint_id, url = core.connect(wanted)
    assert url == wanted
    assert list(core.endpoints) == [endpoint_id]


def test_a_closing_socket_refuses_a_bind_before_it_takes_the_port(core):
    core.evt_pipe_opened(FakePipe(free=1))
    core.cmd_close()
    assert core.state == "closing"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    with pytest.raises(sp.Closed):
        core.bind(f"tcp://127.0.0.1:{port}")
    with pytest.raises(sp.Closed):
        core.connect(f"tcp://127.0.0.1:{port}")

    again = socket.socket()
    again.bind(("127.0.0.1", port))  # the port was never taken
    again.close()


def test_closing_an_endpoint_that_is_gone_or_on_a_closed_socket_is_harmless(core):
    endpoint_id, _ = core.bind("tcp://127.0.0.1:0")
    core.close_endpoint(endpoint_id)
    core.close_endpoint(endpoint_id)
    assert core.endpoints == {}
    core.cmd_close()
    core.close_endpoint(endpoint_id)

