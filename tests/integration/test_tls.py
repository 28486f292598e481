"""tls+tcp:// between our own sockets: who is refused and why, what is counted and logged,
both TLS versions, the close (docs/TRANSPORTS.md). Certificates are made at test time by
trustme; every protocol pair also runs over TLS through the ``url`` fixture (conftest.py).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import ssl
import struct

import pytest

import scaproust as sp
from tests.integration.conftest import tls_by_hand, wait_until

trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")

T = 5.0


def pem(blob) -> str:
    return blob.bytes().decode()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA(organization_name="scaproust test CA")


@pytest.fixture(scope="module")
def other_ca():
    return trustme.CA(organization_name="someone else")


def server_config(ca, *names, **kwargs) -> sp.TLSConfig:
    cert = ca.issue_cert(*(names or ("127.0.0.1",)), common_name=kwargs.pop("cn", "server"),
                         not_after=kwargs.pop("not_after", None))
    return sp.TLSConfig(own_cert_string=pem(cert.cert_chain_pems[0]),
                        own_key_string=pem(cert.private_key_pem), ca_string=pem(ca.cert_pem),
                        **kwargs)


def client_config(ca, cert_from=None, **kwargs) -> sp.TLSConfig:
    own = {}
    if cert_from is not None:
        cert = cert_from.issue_cert("client.test", common_name="client")
        own = {"own_cert_string": pem(cert.cert_chain_pems[0]),
               "own_key_string": pem(cert.private_key_pem)}
    return sp.TLSConfig(ca_string=pem(ca.cert_pem), **own, **kwargs)


@pytest.fixture
def session():
    with sp.Session() as s:
        yield s


def pair_up(session, server: sp.TLSConfig, client: sp.TLSConfig, on_pipe=None,
            **client_options):
    """A listening PAIR ``a`` and a dialing PAIR ``b``; ``on_pipe`` listens to ``b``'s pipe
    events from before it dials (added later, it could miss the first)."""
    a = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    b = session.socket(sp.Pair, recv_timeout=T, send_timeout=T, reconnect_interval=0.05,
                       **client_options)
    if on_pipe is not None:
        b.add_pipe_listener(on_pipe)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server)
    b.connect(ep.url, tls=client)
    return a, b, ep


def exchanges(a, b) -> None:
    b.send(b"hello over tls")
    assert a.recv() == b"hello over tls"
    a.send(b"and back")
    assert b.recv() == b"and back"


def refused(session, a, b, side, caplog, reason: str) -> None:
    """Nothing passes; ``side`` counts at least two failed handshakes (the dialer retried)
    and logged ``reason``."""
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        wait_until(lambda: side.stats.get("tls_handshake_failures", 0) >= 2, timeout=T,
                   what="two failed handshakes")
    assert a.stats.get("pipes_opened", 0) == 0 and b.stats.get("pipes_opened", 0) == 0
    with pytest.raises(sp.WouldBlock):
        b.send(b"to nobody", block=False)
    warnings = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert warnings and reason in warnings[0], warnings


def test_a_client_that_trusts_the_servers_ca_connects_and_sees_its_subject(session, ca):
    events: list[sp.PipeEvent] = []
    a, b, ep = pair_up(session, server_config(ca, cn="the server"), client_config(ca),
                       on_pipe=events.append)
    exchanges(a, b)
    assert ep.url.startswith("tls+tcp://127.0.0.1:")
    wait_until(lambda: events, what="the pipe event")
    assert events[0].kind == "added"
    assert events[0].peer_subject.startswith("O=scaproust test CA,") \
        or "CN=the server" in events[0].peer_subject, events[0]
    assert "CN=the server" in events[0].peer_subject
    assert b.stats.get("tls_handshake_failures", 0) == 0


def test_a_server_of_an_unknown_ca_is_refused_and_the_dialer_retries(session, ca, other_ca,
                                                                       caplog):
    a, b, _ = pair_up(session, server_config(other_ca), client_config(ca))
    # The server sends its CA along (OpenSSL completes the chain from what it trusts).
    refused(session, a, b, b, caplog, "certificate verify failed: self-signed certificate in "
                                      "certificate chain")
    # ... and the server learns why from the client's alert.
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        wait_until(lambda: any("TLSV1_ALERT_UNKNOWN_CA" in r.getMessage()
                               for r in caplog.records), what="the server's warning")
    assert a.stats["tls_handshake_failures"] >= 1


def test_a_server_whose_certificate_names_another_host_is_refused(session, ca, caplog):
    a, b, _ = pair_up(session, server_config(ca, "elsewhere.test"), client_config(ca))
    refused(session, a, b, b, caplog, "IP address mismatch, certificate is not valid for "
                                      "'127.0.0.1'")


def test_server_name_names_the_host_the_certificate_must_match(session, ca):
    a, b, _ = pair_up(session, server_config(ca, "service.test"),
                      client_config(ca, server_name="service.test"))
    exchanges(a, b)


def test_an_expired_certificate_is_refused(session, ca, caplog):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    a, b, _ = pair_up(session, server_config(ca, not_after=past), client_config(ca))
    refused(session, a, b, b, caplog, "certificate has expired")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_client_without_a_certificate_is_refused_when_the_server_requires_one(
        session, ca, caplog, version):
    server = server_config(ca, auth_mode="required", minimum_version=version,
                           maximum_version=version)
    a, b, _ = pair_up(session, server, client_config(ca))
    refused(session, a, b, a, caplog, "peer did not return a certificate")


def test_mutual_authentication_shows_each_side_the_others_subject(session, ca):
    server_events: list[sp.PipeEvent] = []
    a = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    a.add_pipe_listener(server_events.append)
    b = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca, auth_mode="required"))
    b.connect(ep.url, tls=client_config(ca, cert_from=ca))
    exchanges(a, b)
    wait_until(lambda: server_events, what="the pipe event")
    assert "CN=client" in server_events[0].peer_subject


def test_a_client_certificate_of_an_unknown_ca_is_refused(session, ca, other_ca, caplog):
    a, b, _ = pair_up(session, server_config(ca, auth_mode="required"),
                      client_config(ca, cert_from=other_ca))
    refused(session, a, b, a, caplog, "certificate verify failed")


@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                               (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_both_tls_versions_carry_messages(session, ca, caplog, version, name):
    with caplog.at_level(logging.DEBUG, logger="scaproust.pipe"):
        a, b, _ = pair_up(session, server_config(ca, minimum_version=version,
                                                 maximum_version=version), client_config(ca))
        exchanges(a, b)
        big = bytes(range(256)) * 4096  # 1 MiB: many TLS records, several reads
        b.send(big)
        assert a.recv() == big
    versions = {r.getMessage().split(": ")[1].split()[0] for r in caplog.records
                if "peer" in r.getMessage() and r.getMessage().startswith("pipe ")}
    assert versions == {name}


def test_a_version_both_sides_do_not_share_is_refused(session, ca, caplog):
    server = server_config(ca, minimum_version=ssl.TLSVersion.TLSv1_3)
    client = client_config(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    a, b, _ = pair_up(session, server, client)
    refused(session, a, b, a, caplog, "unsupported protocol")


def test_a_peer_silent_after_connecting_is_dropped_after_the_handshake_timeout(session, ca,
                                                                              caplog):
    a = session.socket(sp.Pair, handshake_timeout=0.2)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca))
    host, port = ep.url[len("tls+tcp://"):].rsplit(":", 1)
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"), \
            socket.create_connection((host, int(port)), timeout=T) as silent:
        assert silent.recv(1) == b""  # closed by the listener, not by us
        # Counted and logged by the row's action, which runs just after the close.
        wait_until(lambda: any("not complete within handshake_timeout=0.2s" in r.getMessage()
                               for r in caplog.records), what="the warning")
    assert a.stats.get("tls_handshake_failures") == 1


def _raw_tls_client(url: str, ca) -> ssl.SSLSocket:
    """A blocking TLS client of Python's, done with its SP header exchange to a PAIR."""
    host, port = url[len("tls+tcp://"):].rsplit(":", 1)
    context = ssl.create_default_context(cadata=pem(ca.cert_pem))
    raw = socket.create_connection((host, int(port)), timeout=T)
    conn = context.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False)
    conn.sendall(b"\0SP\0\x00\x10\0\0")
    assert conn.recv(8) == b"\0SP\0\x00\x10\0\0"
    return conn


def test_closing_sends_close_notify(session, ca):
    a = session.socket(sp.Pair, send_timeout=T)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca))
    conn = _raw_tls_client(ep.url, ca)
    try:
        a.send(b"last words")
        assert conn.recv(100) == b"\0\0\0\0\0\0\0\x0alast words"
        a.close()
        # close_notify, not a bare TCP close: with suppress_ragged_eofs=False a ragged EOF
        # would raise SSLEOFError here.
        assert conn.recv(100) == b""
    finally:
        conn.close()


def _watched_server(session, ca) -> tuple[sp.Socket, list[sp.PipeEvent], ssl.SSLSocket]:
    """A listening PAIR whose pipe events are recorded, and a raw TLS client of it."""
    events: list[sp.PipeEvent] = []
    a = session.socket(sp.Pair, recv_timeout=T)
    a.add_pipe_listener(events.append)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca))
    return a, events, _raw_tls_client(ep.url, ca)


def test_a_peer_closing_tcp_without_close_notify_is_a_close_not_an_error(session, ca):
    a, events, conn = _watched_server(session, ca)
    conn.sendall(b"\0\0\0\0\0\0\0\x02hi")
    assert a.recv() == b"hi"
    raw = socket.socket(fileno=conn.detach())
    raw.close()  # TCP FIN with no close_notify: a ragged EOF
    wait_until(lambda: [e.kind for e in events] == ["added", "removed"], what="the removal")
    assert a.stats.get("pipe_errors", 0) == 0
    assert a.stats.get("tls_handshake_failures", 0) == 0


def test_messages_decrypted_before_a_bad_record_are_delivered_then_the_pipe_fails(session, ca):
    # The plaintext of the good records that came with a bad one in the same read was
    # thrown away with the error; a stream pipe delivers the frames before a bad one.
    a, events, conn = _watched_server(session, ca)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # one segment for all of it
    for i in range(3):
        conn.sendall(struct.pack(">Q", 4) + b"msg%d" % i)
    # An application-data record whose authentication cannot hold.
    os.write(conn.fileno(), b"\x17\x03\x03\x00\x20" + bytes(range(32)))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    assert [a.recv() for _ in range(3)] == [b"msg0", b"msg1", b"msg2"]
    wait_until(lambda: [e.kind for e in events] == ["added", "removed"], what="the removal")
    conn.close()


def test_a_bind_without_a_certificate_is_refused_at_once(session, ca):
    s = session.socket(sp.Pair)
    with pytest.raises(ValueError, match=r"a TLS bind \(tls\+tcp://, wss://\) needs a certificate"):
        s.bind("tls+tcp://127.0.0.1:0")
    with pytest.raises(ValueError, match="a TLS server needs its certificate"):
        s.bind("tls+tcp://127.0.0.1:0", tls=sp.TLSConfig(ca_string=pem(ca.cert_pem)))
    with pytest.raises(ValueError, match="mode 'client' cannot serve a bind"):
        s.bind("tls+tcp://127.0.0.1:0", tls=sp.TLSConfig(mode="client"))
    with pytest.raises(ValueError, match="a client ssl.SSLContext cannot serve a bind"):
        s.bind("tls+tcp://127.0.0.1:0", tls=ssl.create_default_context())
    with pytest.raises(TypeError, match="option tls must be None, an sp.TLSConfig or an "
                                        "ssl.SSLContext"):
        s.bind("tls+tcp://127.0.0.1:0", tls="yes please")


def test_a_ready_ssl_context_may_be_given_for_either_side(session, ca):
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    a = session.socket(sp.Pair, recv_timeout=T, send_timeout=T, tls=server)
    b = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    b.tls = client  # the option, set as an attribute
    assert (a.tls, b.tls) == (server, client)
    b.connect(a.bind("tls+tcp://127.0.0.1:0").url)
    exchanges(a, b)


@pytest.mark.parametrize(("url", "error"), [
    ("tls+tcp4://[::1]:0", "'::1' is not an IPv4 address"),
    ("tls+tcp6://127.0.0.1:0", "'127.0.0.1' is not an IPv6 address"),
    ("tls+tcp://127.0.0.1", "missing port"),
])
def test_the_family_of_the_scheme_is_checked(session, url, error):
    with pytest.raises(sp.InvalidAddress, match=error):
        session.socket(sp.Pair).connect(url)


@pytest.mark.parametrize("scheme", ["tls+tcp4", "tls+tcp6"])
def test_tls_over_one_address_family(session, ca, scheme):
    host = "127.0.0.1" if scheme == "tls+tcp4" else "[::1]"
    try:
        server = server_config(ca, "127.0.0.1", "::1")
        a = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
        ep = a.bind(f"{scheme}://{host}:0", tls=server)
    except OSError as err:  # no IPv6 on this machine
        pytest.skip(f"cannot bind {scheme}: {err}")
    assert ep.url.startswith(f"{scheme}://{host}:")
    b = session.socket(sp.Pair, recv_timeout=T, send_timeout=T)
    b.connect(ep.url, tls=client_config(ca))
    exchanges(a, b)


def test_a_tls_error_once_active_is_logged_but_is_no_failed_handshake(session, ca, caplog):
    events: list[sp.PipeEvent] = []
    a = session.socket(sp.Pair, recv_timeout=T)
    a.add_pipe_listener(events.append)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca))
    conn = _raw_tls_client(ep.url, ca)
    conn.sendall(b"\0\0\0\0\0\0\0\x02hi")
    assert a.recv() == b"hi"
    raw = socket.socket(fileno=conn.detach())
    with caplog.at_level(logging.WARNING, logger="scaproust.pipe"):
        raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # a record that fails to decrypt
        wait_until(lambda: [e.kind for e in events] == ["added", "removed"], what="the removal")
        wait_until(lambda: any("TLS error" in r.getMessage() for r in caplog.records),
                   what="the warning")
    raw.close()
    assert a.stats.get("tls_handshake_failures", 0) == 0


def test_a_peer_that_sends_close_notify_and_waits_is_closed_at_once(session, ca):
    """The close_notify comes in the same read as the last message, and the peer keeps TCP
    open waiting for our answer: the pipe must not wait for a readiness that never comes."""
    events: list[sp.PipeEvent] = []
    a = session.socket(sp.Pair, recv_timeout=T)
    a.add_pipe_listener(events.append)
    ep = a.bind("tls+tcp://127.0.0.1:0", tls=server_config(ca))
    host, port = ep.url[len("tls+tcp://"):].rsplit(":", 1)
    raw, tls, outgoing = tls_by_hand(host, int(port), pem(ca.cert_pem))
    tls.write(b"\0SP\0\x00\x10\0\0" + b"\0\0\0\0\0\0\0\x04last")
    with pytest.raises(ssl.SSLWantReadError):
        tls.unwrap()  # close_notify queued behind the message
    raw.sendall(outgoing.read())  # one write: the message and close_notify together
    assert a.recv() == b"last"
    wait_until(lambda: [e.kind for e in events] == ["added", "removed"], what="the removal")
    raw.close()
