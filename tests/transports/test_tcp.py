"""TCP transport helpers on loopback (port 0 everywhere, waits poll with a deadline)."""

from __future__ import annotations

import errno
import select
import socket
import sys
import time

import pytest

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports import get_transport, schemes, tcp
from scaproust.transports.framing import (
    FrameDecoder,
    check_handshake,
    encode_handshake,
    frame_prefix,
)
from scaproust.transports.url import parse_url
from tests.ip_helpers import has_ipv6_loopback

DEADLINE = 5.0  # seconds; loopback answers in microseconds, this only bounds a failure


def wait_readable(obj, timeout: float = DEADLINE) -> None:
    readable, _, _ = select.select([obj], [], [], timeout)
    assert readable, "timed out waiting for readability"


def wait_writable(obj, timeout: float = DEADLINE) -> None:
    _, writable, _ = select.select([], [obj], [], timeout)
    assert writable, "timed out waiting for writability"


def dial(url: str) -> socket.socket:
    """Connect and wait for the connection to complete."""
    sock, err = tcp.connect(url)
    assert sock is not None, errno.errorcode.get(err, err)
    if err == errno.EINPROGRESS:
        wait_writable(sock)
        assert tcp.finish_connect(sock) == 0
    else:
        assert err == 0
    return sock


def accept_one(listener: tcp.ListeningSocket) -> socket.socket:
    wait_readable(listener)
    conn = tcp.accept(listener)
    assert conn is not None
    return conn


def recv_frames(sock: socket.socket, decoder: FrameDecoder, count: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + DEADLINE
    while len(out) < count:
        wait_readable(sock, max(0.0, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, "peer closed"
        out += decoder.feed(chunk)
    return out


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        wait_readable(sock)
        chunk = sock.recv(size - len(data))
        assert chunk, "peer closed"
        data += chunk
    return data


@pytest.fixture
def listeners():
    opened: list[tcp.ListeningSocket] = []

    def listen(url: str) -> tuple[tcp.ListeningSocket, str]:
        listener, resolved = tcp.listen(url)
        opened.append(listener)
        return listener, resolved

    yield listen
    for listener in opened:
        tcp.close_listener(listener)


def test_registry_maps_schemes_to_modules():
    assert get_transport("tcp") is tcp
    assert get_transport("tcp").IPC_FRAMING is False
    assert get_transport("ipc").IPC_FRAMING is True
    assert {"inproc", "ipc", "tcp"} <= set(schemes())
    with pytest.raises(InvalidAddress, match="unknown transport"):
        get_transport("udp")


def test_listen_on_port_zero_reports_the_actual_port(listeners):
    listener, url = listeners("tcp://127.0.0.1:0")
    port = listener.sock.getsockname()[1]
    assert port != 0
    assert url == listener.url == f"tcp://127.0.0.1:{port}"
    assert listener.sock.getblocking() is False
    assert listener.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)


def test_listen_accepts_a_parsed_address(listeners):
    listener, url = listeners(parse_url("tcp://127.0.0.1:0"))
    assert url.startswith("tcp://127.0.0.1:")
    assert listener.address == parse_url("tcp://127.0.0.1:0")


def test_accept_returns_none_when_nobody_is_connecting(listeners):
    listener, _ = listeners("tcp://127.0.0.1:0")
    assert tcp.accept(listener) is None


def test_dialed_and_accepted_sockets_are_non_blocking_with_nodelay(listeners):
    listener, url = listeners("tcp://127.0.0.1:0")
    with dial(url) as client, accept_one(listener) as server:
        for sock in (client, server):
            assert sock.getblocking() is False
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_header_exchange_and_frames_over_a_real_connection(listeners):
    listener, url = listeners("tcp://127.0.0.1:0")
    with dial(url) as client, accept_one(listener) as server:
        # Both sides send their header at once (WIRE.md), then frames as separate buffers.
        client.sendall(encode_handshake(0x50))
        server.sendall(encode_handshake(0x51))
        check_handshake(recv_exact(server, 8), 0x50)
        check_handshake(recv_exact(client, 8), 0x51)
        body = bytes(range(256)) * 1024
        for payload in (b"hi", b"", body):
            client.sendmsg([frame_prefix(len(payload), False), payload])
        frames = recv_frames(server, FrameDecoder(False, 1 << 20), 3)
        assert frames == [b"hi", b"", body]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RCVLOWAT: Linux only")
def test_a_large_read_mark_first_grows_a_receive_buffer_smaller_than_two_bodies(listeners):
    # Set with a smaller buffer, the mark would have the kernel grow the buffer to that one
    # body and clamp the receive window to it: one body in flight at a time. So the
    # buffer is first asked for several (transports/tcp.py, LOW_WATER_GROW).
    listener, url = listeners("tcp://127.0.0.1:0")
    with dial(url), accept_one(listener) as server:
        body = server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # the default: not fixed

        assert tcp.set_read_low_water(server, body) is True
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == body
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= tcp.LOW_WATER_GROW * body
        window_clamp = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP)
        assert window_clamp >= tcp.LOW_WATER_ROOM * body


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RCVLOWAT: Linux only")
def test_a_large_read_mark_waits_for_a_fixed_receive_buffer_twice_the_body(listeners):
    # A buffer whose size the user fixed does not grow: a body larger than half of it is
    # declined, the mark left at one byte (transports/tcp.py, LOW_WATER_ROOM).
    listener, url = listeners("tcp://127.0.0.1:0")
    with dial(url), accept_one(listener) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        rcvbuf = server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # doubled: 128 KiB
        mark = socket.SO_RCVLOWAT

        assert tcp.set_read_low_water(server, rcvbuf // 2 + 1) is None  # not now
        assert server.getsockopt(socket.SOL_SOCKET, mark) == 1
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == rcvbuf
        assert tcp.set_read_low_water(server, rcvbuf // 2) is True
        assert server.getsockopt(socket.SOL_SOCKET, mark) == rcvbuf // 2
        assert tcp.set_read_low_water(server, 1) is True  # one byte: always
        assert server.getsockopt(socket.SOL_SOCKET, mark) == 1


def test_listen_on_a_taken_port_is_address_in_use(listeners):
    _, url = listeners("tcp://127.0.0.1:0")
    with pytest.raises(AddressInUse) as info:
        tcp.listen(url)
    assert url in str(info.value)
    assert isinstance(info.value, OSError)


def test_wildcard_listens_on_every_ipv4_interface(listeners):
    listener, url = listeners("tcp://*:0")
    port = listener.sock.getsockname()[1]
    assert listener.sock.getsockname()[0] == "0.0.0.0"
    assert url == f"tcp://*:{port}"
    with dial(f"tcp://127.0.0.1:{port}"), accept_one(listener):
        pass


def test_connecting_to_the_wildcard_is_invalid():
    with pytest.raises(InvalidAddress, match="wildcard"):
        tcp.connect("tcp://*:5555")


def test_localhost_listener_and_dialer_agree_on_the_family(listeners):
    listener, url = listeners("tcp://localhost:0")
    assert url.startswith("tcp://localhost:")
    with dial(url), accept_one(listener):
        pass


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_ipv6_loopback_listens_and_connects(listeners):
    listener, url = listeners("tcp://[::1]:0")
    port = listener.sock.getsockname()[1]
    assert listener.sock.family == socket.AF_INET6
    assert url == f"tcp://[::1]:{port}"
    with dial(url), accept_one(listener):
        pass


def test_connect_to_a_closed_port_reports_the_error():
    listener, url = tcp.listen("tcp://127.0.0.1:0")
    tcp.close_listener(listener)
    sock, err = tcp.connect(url)
    if sock is None:
        assert err == errno.ECONNREFUSED
    else:
        with sock:
            assert err == errno.EINPROGRESS
            wait_writable(sock)
            assert tcp.finish_connect(sock) == errno.ECONNREFUSED


def test_unresolvable_host_is_invalid_address(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(tcp, "getaddrinfo", fail)
    with pytest.raises(InvalidAddress, match="cannot resolve"):
        tcp.listen("tcp://no.such.host.invalid:0")
    with pytest.raises(InvalidAddress, match="cannot resolve"):
        tcp.connect("tcp://no.such.host.invalid:5555")
    with pytest.raises(InvalidAddress, match="cannot resolve"):
        tcp.resolve("tcp://no.such.host.invalid:5555")


@pytest.mark.parametrize(("url", "needs"), [
    ("tcp://localhost:1", True), ("tcp://db.example:1", True), ("tcp://127.0.0.1:1", False),
    ("tcp://[::1]:1", False), ("tcp://*:1", False),
])
def test_only_host_names_need_a_lookup(url, needs):
    assert tcp.needs_resolution(parse_url(url)) is needs


def no_lookup(*args, **kwargs):
    raise AssertionError("a lookup that should not happen")


def test_address_literals_never_reach_the_name_lookup(monkeypatch):
    monkeypatch.setattr(tcp, "getaddrinfo", no_lookup)
    listener, url = tcp.listen("tcp://127.0.0.1:0")
    try:
        with dial(url), accept_one(listener):
            pass
        assert tcp.resolve(url) == (socket.AF_INET, ("127.0.0.1", listener.sock.getsockname()[1]))
    finally:
        tcp.close_listener(listener)


def test_listen_and_connect_use_the_address_resolve_found_without_a_lookup(monkeypatch):
    found = tcp.resolve("tcp://localhost:0", passive=True)
    monkeypatch.setattr(tcp, "getaddrinfo", no_lookup)
    listener, url = tcp.listen("tcp://localhost:0", resolved=found)
    try:
        port = listener.sock.getsockname()[1]
        assert url == f"tcp://localhost:{port}"
        sock, err = tcp.connect(url, resolved=(found[0], (found[1][0], port, *found[1][2:])))
        assert sock is not None and err in (0, errno.EINPROGRESS)
        with sock, accept_one(listener):
            pass
    finally:
        tcp.close_listener(listener)


def test_listen_on_an_address_of_another_machine_is_invalid():
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned, so bind fails at once.
    with pytest.raises(InvalidAddress, match="not an address of this machine"):
        tcp.listen("tcp://192.0.2.1:0")


def test_tcp_functions_refuse_an_ipc_address():
    with pytest.raises(InvalidAddress):
        tcp.listen("ipc:///tmp/x")
    with pytest.raises(InvalidAddress):
        tcp.connect("ipc:///tmp/x")


def test_close_listener_closes_the_socket_and_is_idempotent():
    listener, _ = tcp.listen("tcp://127.0.0.1:0")
    tcp.close_listener(listener)
    tcp.close_listener(listener)
    assert listener.sock.fileno() == -1


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="no TCP_KEEPIDLE here")
def test_keepalive_timing_is_set_on_the_stream_only_with_keepalive():
    sock = socket.socket()
    try:
        tcp.configure_stream(sock, keepalive=True, keepalive_timing=(2, 1, 4))
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert [sock.getsockopt(socket.IPPROTO_TCP, opt) for opt in (
            socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)] == [2, 1, 4]
    finally:
        sock.close()
    plain = socket.socket()
    try:
        default_idle = plain.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        tcp.configure_stream(plain, keepalive=False, keepalive_timing=(2, 1, 4))
        assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert plain.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == default_idle
    finally:
        plain.close()


def test_a_socket_that_connected_to_itself_is_refused():
    # What the kernel does when a dialer's random local port is the very port it dials and
    # nobody listens there (TCP's simultaneous open): here made on purpose, by binding the
    # dialing socket to that port.
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        assert sock.connect_ex(sock.getsockname()) in (0, errno.EINPROGRESS)
        assert select.select([], [sock], [], 5.0)[1] == [sock]
        assert sock.getpeername() == sock.getsockname()  # it did connect, to itself

        assert tcp.finish_connect(sock) == errno.ECONNREFUSED
    finally:
        sock.close()


def test_a_connection_to_a_listener_is_not_taken_for_one_to_itself():
    listener, url = tcp.listen("tcp://127.0.0.1:0")
    try:
        sock, err = tcp.connect(url)
        assert sock is not None
        try:
            if err:
                assert select.select([], [sock], [], 5.0)[1] == [sock]
            assert tcp.finish_connect(sock) == 0
        finally:
            sock.close()
    finally:
        tcp.close_listener(listener)
