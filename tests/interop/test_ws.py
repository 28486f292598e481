"""ws:// and wss:// against pynng (nng 1.11) and nngcat (nng 1.5.2), both directions: the upgrade,
the subprotocols of every protocol pair nng names, fragmented large messages, and a port
shared by two of our paths that nng dials.

pynng's sockets live in a child process (the ``pynng_child`` fixture, ``_isolated.py``):
nng 1.11 sometimes aborts while it tears down a WebSocket dialer, and an abort in the pytest
process would end the whole run. An abort after the exchange passed is a warning there;
anywhere else, a failure."""

from __future__ import annotations

import pytest

import scaproust as sp

from ._peers import free_tcp_port
from .test_transports import _finish, _nngcat

TIMEOUT = 5.0
MS = int(TIMEOUT * 1000)


#: (ours, theirs, whether ours sends first) for every pair nng names by subprotocol.
PAIRS = [
    ("Pair", "Pair0"), ("Pair1", "Pair1"), ("Req", "Rep0"), ("Rep", "Req0"),
    ("Push", "Pull0"), ("Pull", "Push0"), ("Surveyor", "Respondent0"),
    ("Respondent", "Surveyor0"), ("Bus", "Bus0"),
]


def _exchange(ours, theirs, ours_name: str) -> None:
    """One message each way the pair allows (a large one from us: fragmented)."""
    big = bytes(range(256)) * 1200  # 307,200 bytes: five fragments
    if ours_name in ("Pull", "Rep", "Respondent"):
        theirs.send(b"from nng")
        assert ours.recv() == b"from nng"
        if ours_name != "Pull":
            ours.send(big)
            assert theirs.recv() == big
        return
    ours.send(big)
    if ours_name == "Bus":
        assert theirs.recv() == big
        theirs.send(b"from nng")
        assert ours.recv() == b"from nng"
        return
    assert theirs.recv() == big
    if ours_name != "Push":
        theirs.send(b"from nng " + b"y" * 200_000)
        assert ours.recv() == b"from nng " + b"y" * 200_000


@pytest.mark.parametrize(("ours_name", "theirs_name"), PAIRS)
def test_pynng_dials_our_ws_listener(pynng_child, ours_name, theirs_name):
    with sp.Session() as session, session.socket(getattr(sp, ours_name), recv_timeout=TIMEOUT,
                                                 send_timeout=TIMEOUT) as ours:
        url = ours.bind("ws://127.0.0.1:0/sp/" + ours_name.lower()).url
        with pynng_child.socket(theirs_name, dial=url, recv_timeout=MS, send_timeout=MS,
                                block_on_dial=True) as theirs:
            if ours_name in ("Surveyor", "Bus"):
                _wait_for_pipe(ours)
            _exchange(ours, theirs, ours_name)


@pytest.mark.parametrize(("ours_name", "theirs_name"), PAIRS)
def test_we_dial_a_pynng_ws_listener(pynng_child, ours_name, theirs_name):
    with pynng_child.socket(theirs_name, recv_timeout=MS, send_timeout=MS) as theirs, \
            sp.Session() as session, \
            session.socket(getattr(sp, ours_name), recv_timeout=TIMEOUT,
                           send_timeout=TIMEOUT) as ours:
        url = f"ws://{theirs.listen('ws://127.0.0.1:0/nng')}/nng"  # port 0: no race for one
        ours.connect(url)
        _wait_for_pipe(ours)
        _exchange(ours, theirs, ours_name)


def _wait_for_pipe(sock) -> None:
    import time

    deadline = time.monotonic() + TIMEOUT
    while sock.stats.get("pipes_opened", 0) < 1:
        assert time.monotonic() < deadline, "no pipe"
        time.sleep(0.005)


def test_pynng_reaches_two_of_our_sockets_on_one_port_by_path(pynng_child):
    with sp.Session() as session, \
            session.socket(sp.Rep, recv_timeout=TIMEOUT) as rep, \
            session.socket(sp.Pull, recv_timeout=TIMEOUT) as pull:
        url = rep.bind("ws://127.0.0.1:0/rep").url
        pull.bind(url.replace("/rep", "/pull"))
        with pynng_child.socket("Req0", dial=url, recv_timeout=MS) as req, \
                pynng_child.socket("Push0", dial=url.replace("/rep", "/pull"),
                                   send_timeout=MS) as push:
            push.send(b"pushed")
            req.send(b"asked")
            assert pull.recv() == b"pushed"
            assert rep.recv() == b"asked"
            rep.send(b"answered")
            assert req.recv() == b"answered"


@pytest.mark.parametrize(("bound", "dialed"), [("", ""), ("/a", "/a/")],
                         ids=["no-path", "trailing-slash"])
def test_pynng_reaches_us_by_a_url_without_a_path_or_with_a_trailing_slash(
        pynng_child, bound, dialed):
    # nng dials ws://host:port with an empty request target (GET  HTTP/1.1) and serves
    # /a/ to a listener of /a: both were a 404 here, and pynng's dial refused.
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT) as pull:
        url = pull.bind(f"ws://127.0.0.1:0{bound}").url
        port = url.split(":")[2].split("/")[0]
        with pynng_child.socket("Push0", dial=f"ws://127.0.0.1:{port}{dialed}",
                                send_timeout=MS) as push:
            push.send(b"found")
            assert pull.recv() == b"found"


def test_pynng_is_refused_a_path_we_do_not_listen_on(pynng, pynng_child):
    with sp.Session() as session, session.socket(sp.Rep) as rep:
        url = rep.bind("ws://127.0.0.1:0/here").url
        with pynng_child.socket("Req0") as req, pytest.raises(pynng.exceptions.NNGException):
            req.dial(url.replace("/here", "/elsewhere"), block=True)


def test_pynng_of_the_wrong_protocol_is_refused(pynng, pynng_child):
    with sp.Session() as session, session.socket(sp.Rep) as rep:
        url = rep.bind("ws://127.0.0.1:0/").url
        with pynng_child.socket("Push0") as push, \
                pytest.raises(pynng.exceptions.NNGException):
            push.dial(url, block=True)  # offers pull.sp.nanomsg.org: 400
        assert rep.stats.get("pipes_opened", 0) == 0


def test_nngcat_dials_our_ws_listener(nngcat):
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT) as pull:
        url = pull.bind("ws://127.0.0.1:0/cat").url
        proc = _nngcat(nngcat, "--push0", "--dial", url, "--data", "from nngcat")
        try:
            assert pull.recv() == b"from nngcat"
        finally:
            rc, _out, err = _finish(proc)
        assert rc == 0, err


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_we_dial_an_nngcat_ws_listener(nngcat, pki, scheme):
    url = f"{scheme}://127.0.0.1:{free_tcp_port()}/cat"
    keys = ["--cert", str(pki["dir"] / "cert.pem"), "--key", str(pki["dir"] / "key.pem")]
    proc = _nngcat(nngcat, "--rep0", "--listen", url, "--data", "pong", "--count", "1",
                   "--ascii", *(keys if scheme == "wss" else []))
    try:
        with sp.Session() as session, session.socket(
                sp.Req, recv_timeout=TIMEOUT, send_timeout=TIMEOUT, reconnect_interval=0.05,
                tls=sp.TLSConfig(ca_string=pki["ca"]) if scheme == "wss" else None) as req:
            req.connect(url)  # refused until nngcat listens: redialed
            req.send(b"ping")
            assert req.recv() == b"pong"
            rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (rc, out) == (0, b"ping"), err


# ---------------------------------------------------------------- wss://


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a certificate for localhost and 127.0.0.1, made now (trustme), as PEM text
    and files (nngcat reads files)."""
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name="wss")
    where = tmp_path_factory.mktemp("wss-pki")
    ca.cert_pem.write_to_path(where / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(where / "cert.pem")
    cert.private_key_pem.write_to_path(where / "key.pem")
    return {"ca": ca.cert_pem.bytes().decode(), "cert": cert.cert_chain_pems[0].bytes().decode(),
            "key": cert.private_key_pem.bytes().decode(), "dir": where}


def test_pynng_dials_our_wss_listener(pynng_child, pki):
    server = sp.TLSConfig(own_cert_string=pki["cert"], own_key_string=pki["key"])
    theirs_tls = {"mode": "MODE_CLIENT", "ca_string": pki["ca"], "server_name": "localhost"}
    with sp.Session() as session, session.socket(sp.Rep, recv_timeout=TIMEOUT,
                                                 send_timeout=TIMEOUT, tls=server) as rep:
        url = rep.bind("wss://127.0.0.1:0/secure").url
        with pynng_child.socket("Req0", recv_timeout=MS, send_timeout=MS,
                                tls_config=theirs_tls) as req:
            req.dial(url.replace("127.0.0.1", "localhost"), block=True)  # mbedtls: DNS names
            req.send(b"r" * 150_000)
            assert rep.recv() == b"r" * 150_000
            rep.send(b"a" * 150_000)
            assert req.recv() == b"a" * 150_000


def test_we_dial_a_pynng_wss_listener(pynng_child, pki):
    theirs_tls = {"mode": "MODE_SERVER", "own_cert_string": pki["cert"],
                  "own_key_string": pki["key"]}
    with pynng_child.socket("Pair1", recv_timeout=MS, send_timeout=MS,
                            tls_config=theirs_tls) as theirs, \
            sp.Session() as session, \
            session.socket(sp.Pair1, recv_timeout=TIMEOUT, send_timeout=TIMEOUT,
                           tls=sp.TLSConfig(ca_string=pki["ca"])) as ours:
        url = f"wss://{theirs.listen('wss://127.0.0.1:0/secure')}/secure"  # port 0: no race
        events = []
        ours.add_pipe_listener(events.append)
        ours.connect(url)
        ours.send(b"o" * 200_000)
        assert theirs.recv() == b"o" * 200_000
        theirs.send(b"from nng")
        assert ours.recv() == b"from nng"
        assert "CN=wss" in events[0].peer_subject


def test_nngcat_dials_our_wss_listener_with_cacert(nngcat, pki):
    server = sp.TLSConfig(own_cert_string=pki["cert"], own_key_string=pki["key"])
    with sp.Session() as session, session.socket(sp.Pull, recv_timeout=TIMEOUT,
                                                 tls=server) as pull:
        url = pull.bind("wss://localhost:0/cat").url
        proc = _nngcat(nngcat, "--push0", "--dial", url, "--cacert",
                       str(pki["dir"] / "ca.pem"), "--data", "from nngcat")
        try:
            assert pull.recv() == b"from nngcat"
        finally:
            rc, _out, err = _finish(proc)
        assert rc == 0, err
