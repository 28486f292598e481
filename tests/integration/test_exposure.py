"""What a listener exposed to untrusted peers can limit (issue 10, "Security"): who may open
an IPC socket file (``ipc_permissions``), and how many pipes one endpoint keeps
(``max_pipes``)."""

from __future__ import annotations

import os
import socket as pysocket
import stat

import pytest

import scaproust as sp
from tests.integration.conftest import wait_until


def test_an_ipc_socket_file_gets_its_mode_before_it_accepts(session, tmp_path):
    path = tmp_path / "private.ipc"
    pull = session.socket(sp.Pull, ipc_permissions=0o600, recv_timeout=5)
    pull.bind(f"ipc://{path}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    push = session.socket(sp.Push, send_timeout=5)
    push.connect(f"ipc://{path}")
    push.send(b"owner only")
    assert pull.recv() == b"owner only"


def test_without_ipc_permissions_the_umask_decides(session, tmp_path):
    path = tmp_path / "plain.ipc"
    session.socket(sp.Pull).bind(f"ipc://{path}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~umask


@pytest.mark.parametrize(("value", "error"), [(0o1000, ValueError), ("600", TypeError),
                                              (True, TypeError)])
def test_ipc_permissions_must_be_a_file_mode(session, value, error):
    with pytest.raises(error, match="ipc_permissions"):
        session.socket(sp.Pull, ipc_permissions=value)


def test_a_listener_at_max_pipes_closes_new_connections_at_once_and_counts_them(session, caplog):
    pull = session.socket(sp.Pull, recv_timeout=5)
    url = pull.bind("tcp://127.0.0.1:0", max_pipes=2).url
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    pushes = [session.socket(sp.Push, send_timeout=5) for _ in range(2)]
    for push in pushes:
        push.connect(url)
    wait_until(lambda: pull.stats.get("pipes_opened", 0) == 2, what="two pipes")

    extra = [pysocket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
    try:
        for conn in extra:  # closed by the listener before any byte: EOF, no header
            assert conn.recv(16) == b""
        wait_until(lambda: pull.stats.get("pipes_refused", 0) == 3, what="three refusals")
        assert caplog.text.count("beyond max_pipes=2") == 1
        for i, push in enumerate(pushes):
            push.send(b"%d" % i)
        assert sorted(pull.recv() for _ in pushes) == [b"0", b"1"]
    finally:
        for conn in extra:
            conn.close()

    pushes[0].close()
    wait_until(lambda: pull.stats.get("pipes_closed", 0) == 1, what="a pipe gone")
    late = session.socket(sp.Push, send_timeout=5)
    late.connect(url)
    late.send(b"room again")
    assert pull.recv() == b"room again"
