"""The transports beyond tcp and ipc against pynng and nngcat: abstract://, tls+tcp://,
tcp4:// and tcp6:// (and tcp://:PORT, nng's wildcard).

pynng 0.9 bundles nng 1.11, whose abstract transport names sockets the same way (the name
percent-decoded, autobind for an empty name, IPC framing)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import scaproust as sp
from tests.ip_helpers import has_ipv6_loopback

from ._peers import free_tcp_port

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="abstract sockets are Linux only")
TIMEOUT = 5.0
MS = int(TIMEOUT * 1000)


def _name(tag: str) -> str:
    return f"scaproust-interop-{os.getpid()}-{tag}%00end"


@linux_only
def test_pynng_dials_our_abstract_listener(pynng):
    url = "abstract://" + _name("we-listen")
    with sp.Session() as session, session.socket(sp.Rep, recv_timeout=TIMEOUT,
                                                 send_timeout=TIMEOUT) as rep:
        assert rep.bind(url).url == url
        with pynng.Req0(dial=url, recv_timeout=MS, send_timeout=MS) as req:
            for i in range(3):
                req.send(b"question %d" % i)
                assert rep.recv() == b"question %d" % i
                rep.send(b"answer %d" % i + b"\0" * 1000)
                assert req.recv() == b"answer %d" % i + b"\0" * 1000


@linux_only
def test_we_dial_a_pynng_abstract_listener(pynng):
    url = "abstract://" + _name("they-listen")
    with pynng.Pair0(listen=url, recv_timeout=MS, send_timeout=MS) as theirs, \
            sp.Session() as session, \
            session.socket(sp.Pair, recv_timeout=TIMEOUT, send_timeout=TIMEOUT) as ours:
        ours.connect(url)
        ours.send(b"from scaproust")
        assert theirs.recv() == b"from scaproust"
        theirs.send(b"from nng")
        assert ours.recv() == b"from nng"


@linux_only
def test_we_dial_the_name_the_kernel_gave_a_pynng_listener(pynng):
    with pynng.Pull0(listen="abstract://", recv_timeout=MS) as theirs, \
            sp.Session() as session, session.socket(sp.Push, send_timeout=TIMEOUT) as ours:
        url = str(theirs.listeners[0].local_address)
        assert url.startswith("abstract://") and len(url) == len("abstract://") + 5
        ours.connect(url)
        ours.send(b"to an autobound name")
        assert theirs.recv() == b"to an autobound name"


# ---------------------------------------------------------------- tls+tcp://

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a certificate for 127.0.0.1 and localhost, and one for a client, made now
    (trustme), as PEM text and files (nngcat reads files)."""
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="server")
    client = ca.issue_cert("client.test", common_name="client")
    where = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(where / "ca.pem")
    server.cert_chain_pems[0].write_to_path(where / "cert.pem")
    server.private_key_pem.write_to_path(where / "key.pem")

    def text(blob) -> str:
        return blob.bytes().decode()

    return {
        "dir": where, "ca": text(ca.cert_pem),
        "cert": text(server.cert_chain_pems[0]), "key": text(server.private_key_pem),
        "client_cert": text(client.cert_chain_pems[0]), "client_key": text(client.private_key_pem),
        "other_ca": text(trustme.CA().cert_pem),
    }


def test_pynng_dials_our_tls_listener(pynng, pki):
    ours = sp.TLSConfig(own_cert_string=pki["cert"], own_key_string=pki["key"])
    theirs = pynng.TLSConfig(pynng.TLSConfig.MODE_CLIENT, ca_string=pki["ca"],
                             server_name="localhost")
    with sp.Session() as session, session.socket(sp.Rep, recv_timeout=TIMEOUT,
                                                 send_timeout=TIMEOUT, tls=ours) as rep:
        url = rep.bind("tls+tcp://127.0.0.1:0").url
        with pynng.Req0(tls_config=theirs, recv_timeout=MS, send_timeout=MS) as req:
            req.dial(url, block=True)
            big = bytes(range(256)) * 1024
            for i in range(3):
                req.send(b"question %d" % i)
                assert rep.recv() == b"question %d" % i
                rep.send(big + b"%d" % i)
                assert req.recv() == big + b"%d" % i


def test_we_dial_a_pynng_tls_listener_that_requires_our_certificate(pynng, pki):
    theirs = pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER, own_cert_string=pki["cert"],
                             own_key_string=pki["key"], ca_string=pki["ca"],
                             auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED)
    ours = sp.TLSConfig(ca_string=pki["ca"], own_cert_string=pki["client_cert"],
                        own_key_string=pki["client_key"])
    with pynng.Rep0(tls_config=theirs, recv_timeout=MS, send_timeout=MS) as rep:
        rep.listen("tls+tcp://127.0.0.1:0")
        address = str(rep.listeners[0].local_address)  # "127.0.0.1:port"
        events: list[sp.PipeEvent] = []
        with sp.Session() as session, session.socket(sp.Req, recv_timeout=TIMEOUT,
                                                     send_timeout=TIMEOUT, tls=ours) as req:
            req.add_pipe_listener(events.append)
            req.connect(f"tls+tcp://{address}")
            req.send(b"hi nng")
            assert rep.recv() == b"hi nng"
            rep.send(b"hi scaproust")
            assert req.recv() == b"hi scaproust"
            assert "CN=server" in events[0].peer_subject


def test_a_pynng_server_of_an_unknown_ca_is_refused_counted_and_redialed(pynng, pki, caplog):
    theirs = pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER, own_cert_string=pki["cert"],
                             own_key_string=pki["key"])
    ours = sp.TLSConfig(ca_string=pki["other_ca"])
    with pynng.Pair0(tls_config=theirs) as pair, sp.Session() as session, \
            session.socket(sp.Pair, tls=ours, reconnect_interval=0.05) as mine:
        pair.listen("tls+tcp://127.0.0.1:0")
        mine.connect(f"tls+tcp://{pair.listeners[0].local_address}")
        deadline = time.monotonic() + TIMEOUT
        while mine.stats.get("tls_handshake_failures", 0) < 2:
            assert time.monotonic() < deadline, "no two failed handshakes"
            time.sleep(0.01)
        assert mine.stats.get("pipes_opened", 0) == 0
    assert any("certificate verify failed" in r.getMessage() for r in caplog.records)


def _nngcat(nngcat: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["timeout", "-s", "KILL", "20", nngcat, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_nngcat_dials_our_tls_listener_with_cacert(nngcat, pki):
    ours = sp.TLSConfig(own_cert_string=pki["cert"], own_key_string=pki["key"])
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT,
                                                 tls=ours) as pull:
        url = pull.bind("tls+tcp://localhost:0").url  # nng checks the name "localhost"
        proc = _nngcat(nngcat, "--push0", "--dial", url, "--cacert",
                       str(pki["dir"] / "ca.pem"), "--data", "from nngcat")
        try:
            assert pull.recv() == b"from nngcat"
        finally:
            rc, out, err = _finish(proc)
        assert rc == 0, err


def test_we_dial_an_nngcat_tls_listener_with_cert_and_key(nngcat, pki):
    port = free_tcp_port()
    url = f"tls+tcp://127.0.0.1:{port}"
    proc = _nngcat(nngcat, "--pull0", "--listen", url, "--cert", str(pki["dir"] / "cert.pem"),
                   "--key", str(pki["dir"] / "key.pem"), "--ascii", "--count", "1")
    try:
        with sp.Session() as session, session.socket(
                sp.Push, send_timeout=TIMEOUT, reconnect_interval=0.05,
                tls=sp.TLSConfig(ca_string=pki["ca"])) as push:
            push.connect(url)  # refused until nngcat listens: redialed
            push.send(b"from scaproust")
            rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (rc, out) == (0, b"from scaproust"), err


# ---------------------------------------------------------------- tcp4:// and tcp6://

_FAMILIES = [("tcp4", "127.0.0.1"), pytest.param("tcp6", "[::1]", marks=pytest.mark.skipif(
    not has_ipv6_loopback(), reason="this host has no IPv6 loopback"))]


@pytest.mark.parametrize(("scheme", "host"), _FAMILIES)
def test_nngcat_dials_our_listener_of_one_family(nngcat, scheme, host):
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT) as pull:
        url = pull.bind(f"{scheme}://{host}:0").url
        proc = _nngcat(nngcat, "--push0", "--dial", url, "--data", f"over {scheme}")
        try:
            assert pull.recv() == f"over {scheme}".encode()
        finally:
            rc, out, err = _finish(proc)
        assert rc == 0, err


@pytest.mark.parametrize(("scheme", "host"), _FAMILIES)
def test_we_dial_a_pynng_listener_of_one_family(pynng, scheme, host):
    url = f"{scheme}://{host}:{free_tcp_port()}"
    with pynng.Rep0(listen=url, recv_timeout=MS, send_timeout=MS) as rep, \
            sp.Session() as session, \
            session.socket(sp.Req, recv_timeout=TIMEOUT, send_timeout=TIMEOUT) as req:
        req.connect(url)
        req.send(b"ping")
        assert rep.recv() == b"ping"
        rep.send(b"pong")
        assert req.recv() == b"pong"


def test_we_dial_an_nngcat_listener_with_an_empty_host(nngcat):
    # nngcat --listen tcp://:PORT listens on every IPv4 interface; ours reads it alike.
    port = free_tcp_port()
    proc = _nngcat(nngcat, "--pull0", "--listen", f"tcp://:{port}", "--ascii", "--count", "1")
    try:
        with sp.Session() as session, session.socket(
                sp.Push, send_timeout=TIMEOUT, reconnect_interval=0.05) as push:
            push.connect(f"tcp://127.0.0.1:{port}")  # refused until nngcat listens: redialed
            push.send(b"to every interface")
            rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (rc, out) == (0, b"to every interface"), err


def test_nngcat_dials_our_listener_with_an_empty_host(nngcat):
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT) as pull:
        url = pull.bind("tcp://:0").url
        assert url.startswith("tcp://*:")
        proc = _nngcat(nngcat, "--push0", "--dial", url.replace("*", "127.0.0.1"),
                       "--data", "from nngcat")
        try:
            assert pull.recv() == b"from nngcat"
        finally:
            rc, out, err = _finish(proc)
        assert rc == 0, err
