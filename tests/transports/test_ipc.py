"""IPC transport helpers: socket files in tmp_path, waits poll with a deadline."""

from __future__ import annotations

import errno
import os
import select
import socket
import stat

import pytest

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports import get_transport, ipc
from scaproust.transports.framing import FrameDecoder, frame_prefix

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

DEADLINE = 5.0  # seconds; only bounds a failure


def wait_readable(obj) -> None:
    readable, _, _ = select.select([obj], [], [], DEADLINE)
    assert readable, "timed out waiting for readability"


def dial(url: str) -> socket.socket:
    sock, err = ipc.connect(url)
    assert sock is not None, errno.errorcode.get(err, err)
    assert err in (0, errno.EINPROGRESS)
    if err:
        _, writable, _ = select.select([], [sock], [], DEADLINE)
        assert writable and ipc.finish_connect(sock) == 0
    return sock


def accept_one(listener: ipc.ListeningSocket) -> socket.socket:
    wait_readable(listener)
    conn = ipc.accept(listener)
    assert conn is not None
    return conn


def make_stale_socket_file(path) -> None:
    """Leave a socket file nobody listens on, as a crashed process does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.fixture
def listeners():
    opened: list[ipc.ListeningSocket] = []

    def listen(url: str) -> tuple[ipc.ListeningSocket, str]:
        listener, resolved = ipc.listen(url)
        opened.append(listener)
        return listener, resolved

    yield listen
    for listener in opened:
        ipc.close_listener(listener)


def test_registry_returns_the_ipc_module():
    assert get_transport("ipc") is ipc
    assert ipc.IPC_FRAMING is True


def test_listen_connect_accept_and_frames(tmp_path, listeners):
    url = f"ipc://{tmp_path}/a.sock"
    listener, resolved = listeners(url)
    assert resolved == url == listener.url
    assert listener.sock.getblocking() is False
    with dial(url) as client, accept_one(listener) as server:
        assert client.getblocking() is False and server.getblocking() is False
        client.sendmsg([frame_prefix(3, True), b"abc", frame_prefix(0, True)])
        decoder = FrameDecoder(True, 1024)
        frames: list[bytes] = []
        while len(frames) < 2:
            wait_readable(server)
            frames += decoder.feed(server.recv(4096))
        assert frames == [b"abc", b""]


def test_both_ends_ask_for_a_larger_send_buffer_than_the_systems_default(tmp_path, listeners):
    # A Unix stream socket never grows its send buffer (208 KiB by default on Linux) as
    # TCP does: a 1 MiB message took five rounds between the two I/O threads.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fresh:
        default = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    listener, url = listeners(f"ipc://{tmp_path}/a.sock")
    with dial(url) as client, accept_one(listener) as server:
        for end in (client, server):
            assert end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > default


def test_accept_returns_none_when_nobody_is_connecting(tmp_path, listeners):
    listener, _ = listeners(f"ipc://{tmp_path}/a.sock")
    assert ipc.accept(listener) is None


def test_listen_replaces_a_stale_socket_file(tmp_path, listeners):
    path = tmp_path / "stale.sock"
    make_stale_socket_file(path)
    # A second name keeps the stale inode alive, so the file system cannot hand the same
    # inode number to the new socket file and the replacement is observable.
    keep = tmp_path / "keep"
    os.link(path, keep)
    listener, _ = listeners(f"ipc://{path}")
    assert os.lstat(path).st_ino != os.lstat(keep).st_ino
    assert os.lstat(keep).st_nlink == 1  # the stale name was unlinked
    assert listener.identity == (os.lstat(path).st_dev, os.lstat(path).st_ino)
    with dial(f"ipc://{path}"), accept_one(listener):
        pass


def test_listen_on_a_live_socket_is_address_in_use(tmp_path, listeners):
    url = f"ipc://{tmp_path}/live.sock"
    live, _ = listeners(url)
    with pytest.raises(AddressInUse) as info:
        ipc.listen(url)
    assert url in str(info.value)
    # The live listener is untouched and still answers.
    with dial(url), accept_one(live):
        pass


@pytest.mark.skipif(not os.path.exists("/proc/net/unix"), reason="needs Linux /proc/net/unix")
def test_a_live_listener_found_in_proc_is_not_probed(tmp_path, listeners):
    # A connect-and-close probe can break an nng 1.5.2 listener (WIRE.md): when the kernel's
    # table already says the path is live, no connection must reach the live listener.
    url = f"ipc://{tmp_path}/live.sock"
    live, _ = listeners(url)
    with pytest.raises(AddressInUse):
        ipc.listen(url)
    assert ipc.accept(live) is None


def test_a_live_listener_is_detected_by_the_probe_too(tmp_path, listeners, monkeypatch):
    url = f"ipc://{tmp_path}/live.sock"
    live, _ = listeners(url)
    monkeypatch.setattr(ipc, "_listed_in_proc_net_unix", lambda path: False)
    with pytest.raises(AddressInUse):
        ipc.listen(url)
    probe = accept_one(live)  # the probe's connection, already closed by its side
    probe.close()


def test_listen_never_deletes_a_regular_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"precious")
    with pytest.raises(AddressInUse, match="not a socket"):
        ipc.listen(f"ipc://{path}")
    assert path.read_bytes() == b"precious"


def test_listen_never_deletes_a_directory(tmp_path):
    path = tmp_path / "dir"
    path.mkdir()
    with pytest.raises(AddressInUse, match="not a socket"):
        ipc.listen(f"ipc://{path}")
    assert path.is_dir()


def test_listen_never_deletes_a_symlink_even_to_a_stale_socket(tmp_path):
    target = tmp_path / "stale.sock"
    make_stale_socket_file(target)
    link = tmp_path / "link.sock"
    link.symlink_to(target)
    with pytest.raises(AddressInUse, match="not a socket"):
        ipc.listen(f"ipc://{link}")
    assert link.is_symlink() and target.exists()


def test_relative_paths_work_and_close_unlinks_after_a_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listener, url = ipc.listen("ipc://rel.sock")
    try:
        assert url == "ipc://rel.sock"
        assert (tmp_path / "rel.sock").exists()
        with dial("ipc://rel.sock"), accept_one(listener):
            pass
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
    finally:
        ipc.close_listener(listener)
    assert not (tmp_path / "rel.sock").exists()


def test_close_listener_unlinks_its_socket_file_and_is_idempotent(tmp_path):
    path = tmp_path / "a.sock"
    listener, _ = ipc.listen(f"ipc://{path}")
    assert path.exists()
    ipc.close_listener(listener)
    assert not path.exists()
    assert listener.sock.fileno() == -1
    ipc.close_listener(listener)


def test_close_listener_leaves_a_file_that_replaced_its_own(tmp_path):
    path = tmp_path / "a.sock"
    listener, _ = ipc.listen(f"ipc://{path}")
    path.unlink()
    path.write_bytes(b"someone else's")
    ipc.close_listener(listener)
    assert path.read_bytes() == b"someone else's"


def test_connect_to_a_missing_path_reports_enoent(tmp_path):
    assert ipc.connect(f"ipc://{tmp_path}/missing.sock") == (None, errno.ENOENT)


def test_connect_to_a_stale_socket_file_reports_econnrefused(tmp_path):
    path = tmp_path / "stale.sock"
    make_stale_socket_file(path)
    assert ipc.connect(f"ipc://{path}") == (None, errno.ECONNREFUSED)


def test_a_path_too_long_for_a_unix_socket_is_invalid(tmp_path):
    url = f"ipc://{tmp_path}/{'x' * 200}"
    with pytest.raises(InvalidAddress):
        ipc.listen(url)
    with pytest.raises(InvalidAddress):
        ipc.connect(url)


def test_a_path_in_a_missing_directory_is_invalid(tmp_path):
    with pytest.raises(InvalidAddress):
        ipc.listen(f"ipc://{tmp_path}/no/such/dir/a.sock")


def test_ipc_functions_refuse_a_tcp_address():
    with pytest.raises(InvalidAddress):
        ipc.listen("tcp://127.0.0.1:0")
    with pytest.raises(InvalidAddress):
        ipc.connect("tcp://127.0.0.1:1")
