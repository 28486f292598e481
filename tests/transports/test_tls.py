"""The TLS transport without a session: TLSConfig, URLs, and TLSStream over a socketpair
(transports/tls.py)."""

from __future__ import annotations

import socket
import ssl

import pytest

import scaproust as sp
from scaproust.transports import get_transport, lookup
from scaproust.transports.tls import TLSConfig, TLSStream, TLSTransport, prepare, subject_of
from scaproust.transports.url import Address
from tests.ip_helpers import dual_stack

trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")


@pytest.fixture(scope="module")
def configs():
    ca = trustme.CA()
    cert = ca.issue_cert("peer.test", common_name="peer")
    server = TLSConfig(own_cert_string=cert.cert_chain_pems[0].bytes().decode(),
                       own_key_string=cert.private_key_pem.bytes().decode())
    client = TLSConfig(ca_string=ca.cert_pem.bytes().decode())
    return server, client


@pytest.fixture
def streams(configs):
    """A connected client and server TLSStream over a socketpair, handshake done."""
    server_config, client_config = configs
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setblocking(False)
    client = TLSStream(a, prepare(client_config, server=False, host="peer.test"))
    server = TLSStream(b, prepare(server_config, server=True))
    done = [False, False]
    for _ in range(20):
        done = [client.handshake_step() or done[0], server.handshake_step() or done[1]]
        if all(done):
            break
    assert all(done)
    yield client, server
    a.close()
    b.close()


def drain(stream: TLSStream) -> bytes:
    got = b""
    while True:
        try:
            chunk = stream.recv(65536)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.parametrize(("url", "address"), [
    ("tls+tcp://127.0.0.1:5555", Address("tls+tcp", host="127.0.0.1", port=5555)),
    ("tls+tcp://[::1]:0", Address("tls+tcp", host="::1", port=0)),
    ("tls+tcp4://localhost:5555", Address("tls+tcp4", host="localhost", port=5555)),
    ("tls+tcp6://*:5555", Address("tls+tcp6", host="*", port=5555)),
])
def test_tls_urls_parse_like_tcp_ones_and_print_with_their_scheme(url, address):
    transport, parsed = lookup(url)
    assert isinstance(transport, TLSTransport) and transport.SCHEME == url.split(":")[0]
    assert parsed == address
    assert parsed.url == url


def test_each_scheme_has_its_own_transport_object():
    assert get_transport("tls+tcp") is get_transport("tls+tcp")
    assert get_transport("tls+tcp4") is not get_transport("tls+tcp")
    with pytest.raises(ValueError, match="TLSTransport serves"):
        TLSTransport("tcp")


@pytest.mark.parametrize(("scheme", "family"), [
    ("tls+tcp", socket.AF_INET), ("tls+tcp4", socket.AF_INET), ("tls+tcp6", socket.AF_INET6)])
def test_each_scheme_resolves_adual_stack_name_to_its_family(monkeypatch, scheme, family):
    # tls+tcp6 resolved as tcp does (IPv4 preferred), then refused the IPv4 address it got:
    # such a name could be neither bound nor dialed.
    from scaproust.transports import tcp

    monkeypatch.setattr(tcp, "getaddrinfo", dual_stack)
    transport = get_transport(scheme)
    found = transport.resolve(transport.parse_address(f"{scheme}://dual.test:5555"))
    assert found[0] == family and found[1][:2] == (
        ("::1", 5555) if family == socket.AF_INET6 else ("127.0.0.1", 5555))


def test_an_ipv6_only_scheme_with_ipv4_only_set_is_refused(monkeypatch):
    from scaproust.errors import InvalidAddress
    from scaproust.transports import tcp

    monkeypatch.setattr(tcp, "getaddrinfo", dual_stack)
    transport = get_transport("tls+tcp6")
    with pytest.raises(InvalidAddress, match="IPv6-only address with ipv4_only set"):
        transport.resolve(transport.parse_address("tls+tcp6://dual.test:5555"), ipv4_only=True)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"mode": "peer"}, "mode must be 'client', 'server' or None"),
    ({"auth_mode": "maybe"}, "auth_mode must be 'none', 'optional' or 'required'"),
    ({"own_cert_string": "x"}, "own_cert_string and own_key_string go together"),
    ({"own_cert_string": "x", "own_key_string": "y", "cert_key_file": "z"}, "not both"),
    ({"minimum_version": ssl.TLSVersion.TLSv1_1}, "TLS 1.2 or newer"),
])
def test_a_tls_config_that_cannot_work_is_refused_when_made(kwargs, error):
    with pytest.raises(ValueError, match=error):
        TLSConfig(**kwargs)


def test_a_client_checks_the_urls_host_unless_told_another_name(configs):
    _, client = configs
    assert prepare(client, server=False, host="10.0.0.1").server_hostname == "10.0.0.1"
    named = TLSConfig(ca_string=client.ca_string, server_name="service.test")
    assert prepare(named, server=False, host="10.0.0.1").server_hostname == "service.test"
    unchecked = TLSConfig(auth_mode="none")
    setup = prepare(unchecked, server=False, host="10.0.0.1")
    assert setup.server_hostname is None and setup.context.verify_mode == ssl.CERT_NONE
    assert prepare(None, server=False, host="h").context.verify_mode == ssl.CERT_REQUIRED


def test_the_auth_modes_set_what_openssl_checks(configs):
    server, _ = configs
    for mode, want in (("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL),
                       ("required", ssl.CERT_REQUIRED)):
        config = TLSConfig(own_cert_string=server.own_cert_string,
                           own_key_string=server.own_key_string, auth_mode=mode)
        assert config.context(server=True).verify_mode == want
    assert server.context(server=True).verify_mode == ssl.CERT_NONE  # a server's default


def test_a_certificate_and_key_in_one_file(configs, tmp_path):
    server, _ = configs
    both = tmp_path / "both.pem"
    both.write_text(server.own_cert_string + server.own_key_string)
    context = TLSConfig(cert_key_file=str(both)).context(server=True)
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(FileNotFoundError):
        TLSConfig(cert_key_file=str(tmp_path / "missing.pem")).context(server=True)


def test_recv_returns_all_the_plaintext_the_socket_held(streams):
    client, server = streams
    for part in (b"one", b"two", b"three"):
        assert client.sendmsg([part]) == len(part)
    # One call decrypts all three records: nothing stays inside OpenSSL, unseen by poll().
    assert server.recv(65536) == b"onetwothree"
    with pytest.raises(BlockingIOError):
        server.recv(65536)
    assert server.ssl.pending() == 0


def test_an_empty_buffer_is_never_written(streams):
    client, _ = streams
    calls = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def write(self, data):
            calls.append(bytes(data))
            return self.inner.write(data)

    client.ssl = Recording(client.ssl)  # type: ignore[assignment]
    assert client.sendmsg([b""]) == 0
    assert client.sendmsg([b"x"]) == 1
    assert client.send(b"") == 0  # send() is sendmsg() of one buffer
    assert client.send(b"y") == 1
    assert calls == [b"x", b"y"]


def test_a_write_the_kernel_cannot_take_at_once_holds_its_last_byte_until_it_can(streams):
    client, server = streams
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MiB
    sent, got, rounds, held = 0, b"", 0, False
    while sent < len(data):
        rounds += 1
        assert rounds < 10_000
        try:
            n = client.sendmsg([memoryview(data)[sent:]])
        except BlockingIOError:
            got += drain(server)  # the peer reads: room again
            continue
        if client.backlog:
            held = True
            # Encrypted bytes wait: the last byte taken is reported as not taken yet ...
            with pytest.raises(BlockingIOError):
                client.sendmsg([memoryview(data)[sent + n:]])
        sent += n
        got += drain(server)
    # The held byte was reported taken only once every encrypted byte was in the kernel.
    assert client.backlog == 0
    while len(got) < len(data):
        got += drain(server)
    assert held, "the kernel took everything at once: the test proved nothing"
    assert got == data  # ... and no byte was sent twice or lost


def test_a_ragged_eof_is_a_close(streams):
    client, server = streams
    client.sendmsg([b"last"])
    client.sock.shutdown(socket.SHUT_WR)  # TCP FIN with no close_notify
    assert server.recv(65536) == b"last"
    assert server.recv(65536) == b""


def test_close_notify_is_a_close_and_is_sent_without_waiting_for_the_answer(streams):
    client, server = streams
    client.send_close_notify()  # returns at once: no answer awaited
    assert client.backlog == 0
    assert server.recv(65536) == b""


def test_a_failed_handshake_raises_openssls_reason(configs):
    server_config, _ = configs
    stranger = TLSConfig(ca_string=trustme.CA().cert_pem.bytes().decode())
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setblocking(False)
    client = TLSStream(a, prepare(stranger, server=False, host="peer.test"))
    server = TLSStream(b, prepare(server_config, server=True))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        for _ in range(10):
            client.handshake_step()
            server.handshake_step()
    a.close()
    b.close()


def test_subjects_are_written_short():
    cert = {"subject": ((("organizationName", "Acme"),), (("commonName", "svc"),))}
    assert subject_of(cert) == "O=Acme,CN=svc"
    assert subject_of({}) == subject_of(None) == ""


def test_the_public_names():
    assert sp.TLSConfig is TLSConfig


def test_a_close_notify_behind_the_last_bytes_is_reported_with_them(streams):
    client, server = streams
    client.sendmsg([b"last words"])
    client.send_close_notify()  # and the TCP connection stays open
    assert server.recv(65536) == b"last words"
    assert server.peer_closed  # the socket will not be readable again: say it now
    assert server.recv(65536) == b""
