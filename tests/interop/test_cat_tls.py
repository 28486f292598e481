"""scaproust-cat's TLS options (--cacert, --cert/-E, --key, --insecure/-k) against the same
options of the real nngcat (nng 1.5.2), over tls+tcp:// both ways, with certificates made
by trustme at test time (tests/cat_helpers.py, ``write_tls_files``).

nngcat (mbedTLS) checks a server's certificate against the URL's host name but not
against an IP address, so when it dials it uses ``localhost``; our listener binds the
address ``localhost`` resolves to first, which is the one nngcat dials. Their listener gets
a port found free (``_peers.free_tcp_port``) and is ready once /proc lists it. Every
process is killed in the teardown (the ``procs`` fixture); nngcat missing fails in CI.
"""

from __future__ import annotations

import socket

import pytest
from cat_helpers import write_tls_files

from . import _peers


@pytest.fixture
def tls(tmp_path):
    return write_tls_files(tmp_path, host="localhost")


def _their_listener(procs, nngcat, *args: str) -> tuple[object, str]:
    port = _peers.free_tcp_port()
    theirs = procs.start(nngcat, "--listen", f"tls+tcp://127.0.0.1:{port}", *args)
    _peers.wait_until(lambda: _peers.is_listening(f"tcp://127.0.0.1:{port}")
                      or not theirs.alive(), f"{theirs} to listen")
    assert theirs.alive(), theirs.stderr()
    return theirs, f"tls+tcp://127.0.0.1:{port}"


def _our_listener(procs, *args: str) -> tuple[object, str]:
    """Ours listening where nngcat's ``tls+tcp://localhost:PORT`` lands; returns that URL."""
    family, *_, address = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0]
    host = address[0] if family == socket.AF_INET else f"[{address[0]}]"
    ours = procs.cat("-v", "--bind", f"tls+tcp://{host}:0", *args)
    port = ours.listening_url().rsplit(":", 1)[1]
    return ours, f"tls+tcp://localhost:{port}"


@pytest.mark.parametrize("trust", [["--cacert", "{ca}"], ["--insecure"]])
def test_our_req_to_their_rep_over_tls(procs, nngcat, tls, trust):
    theirs, url = _their_listener(procs, nngcat, "--rep0", "--cert", tls["both"], "-D",
                                  "pong", "-Q")
    ours = procs.cat("--req", "--connect", url, *(a.format(**tls) for a in trust), "-D",
                     "ping", "-Q")
    assert ours.wait_exit() == 0, ours.stderr()
    assert ours.stdout() == b'"pong"\n'
    assert theirs.wait_stdout(7) == b'"ping"\n'


@pytest.mark.parametrize("trust", [["--cacert", "{ca}"], ["-k"]])
def test_their_req_to_our_rep_over_tls(procs, nngcat, tls, trust):
    ours, url = _our_listener(procs, "--rep", "-E", tls["cert"], "--key", tls["key"], "-D",
                              "pong", "-Q", "-C", "1")
    theirs = procs.start(nngcat, "--req0", "--dial", url, *(a.format(**tls) for a in trust),
                         "-D", "ping", "-Q")
    assert theirs.wait_exit() == 0, theirs.stderr()
    assert theirs.stdout() == b'"pong"\n'
    assert ours.wait_exit() == 0, ours.stderr()
    assert ours.stdout() == b'"ping"\n'


def test_their_push_with_a_client_certificate_to_our_pull(procs, nngcat, tls):
    # nngcat's --cert on a dialer is its client certificate; our listener, like nng's,
    # does not ask for one (auth mode "none" on the server side), so it connects either way.
    ours, url = _our_listener(procs, "--pull", "--cert", tls["both"], "-Q", "-C", "1")
    theirs = procs.start(nngcat, "--push0", "--dial", url, "--cacert", tls["ca"], "--cert",
                         tls["client"], "-D", "hello")
    assert theirs.wait_exit() == 0, theirs.stderr()
    assert ours.wait_exit() == 0, ours.stderr()
    assert ours.stdout() == b'"hello"\n'


def test_nngcat_refuses_our_server_it_cannot_check_and_so_do_we(procs, nngcat, tls):
    # Without --cacert or -k, a server signed by an unknown CA is refused on both sides.
    ours, url = _our_listener(procs, "--rep", "--cert", tls["stranger"], "-D", "x")
    theirs = procs.start(nngcat, "--req0", "--dial", url, "--cacert", tls["ca"], "-D", "y")
    assert theirs.wait_exit() == 1
    assert "Cryptographic error" in theirs.stderr()
    assert theirs.stdout() == b""
    their_listener, their_url = _their_listener(procs, nngcat, "--rep0", "--cert",
                                                tls["stranger"], "-D", "x")
    refused = procs.cat("--req", "-v", "--connect", their_url, "--cacert", tls["ca"],
                        "-D", "y", "--send-timeout", "0.5")
    assert refused.wait_exit() == 3  # no pipe, so the send times out: fatal, as nanocat's
    assert "Can't send: Connection timed out" in refused.stderr()
    assert "certificate verify failed" in refused.stderr()  # the library's warning, -v
    assert refused.stdout() == b""
