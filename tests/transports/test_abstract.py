"""abstract://name: the IPC mapping on Linux abstract sockets (transports/abstract.py)."""

from __future__ import annotations

import os
import socket
import sys

import pytest

import scaproust as sp
from scaproust.transports import abstract, lookup
from scaproust.transports.url import Address

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="abstract sockets are Linux only")


def _listed(name: bytes) -> bool:
    """Whether /proc/net/unix lists a socket bound to the abstract ``name`` (shown there
    with '@' for every NUL)."""
    shown = b"@" + name.replace(b"\0", b"@")
    with open("/proc/net/unix", "rb") as table:
        return any(line.split(None, 7)[7:] == [shown] for line in table.read().splitlines()[1:])


@pytest.fixture
def name(request):
    return f"scaproust-test-{os.getpid()}-{request.node.name}"[:100]


@pytest.mark.parametrize(("url", "decoded"), [
    ("abstract://a%00b", b"a\0b"),
    ("abstract://plain", b"plain"),
    ("abstract://%2Fslash%20space", b"/slash space"),
    ("abstract://%ff%FE", b"\xff\xfe"),
    ("abstract://" + "x" * 107, b"x" * 107),
    ("abstract://", b""),
])
def test_the_name_is_percent_decoded_to_bytes(url, decoded):
    transport, address = lookup(url)
    assert transport is abstract
    assert address == Address("abstract", path=url[len("abstract://"):])
    assert abstract.name_of(address) == decoded


@pytest.mark.parametrize("url", ["abstract://" + "x" * 108, "abstract://" + "%00" * 108])
def test_a_name_over_107_bytes_is_invalid_address(url):
    with pytest.raises(sp.InvalidAddress, match="108 bytes once decoded; an abstract socket "
                                                "name has at most 107"):
        lookup(url)


def test_an_embedded_nul_is_part_of_the_name_and_messages_flow(name):
    url = f"abstract://{name}%00tail"
    with sp.Session() as session:
        pull = session.socket(sp.Pull, recv_timeout=5)
        push = session.socket(sp.Push, send_timeout=5)
        ep = pull.bind(url)
        assert ep.url == url
        assert _listed(name.encode() + b"\0tail")
        assert not _listed(name.encode())
        push.connect(url)
        for i in range(5):
            push.send(b"m%d" % i)
        assert [pull.recv() for _ in range(5)] == [b"m%d" % i for i in range(5)]
        ep.close()
        assert not _listed(name.encode() + b"\0tail")  # the name is free at once


def test_the_frames_are_the_ipc_ones(name):
    """A raw client sees the SP header then ``0x01 | size | payload``."""
    with sp.Session() as session, session.socket(sp.Push, send_timeout=5) as push:
        push.bind(f"abstract://{name}")
        peer = socket.socket(socket.AF_UNIX)
        peer.settimeout(5)
        peer.connect(b"\0" + name.encode())
        peer.sendall(b"\0SP\0\x00\x51\0\0")  # a PULL's header
        push.send(b"hello")
        want = b"\0SP\0\x00\x50\0\0" + b"\x01" + (5).to_bytes(8, "big") + b"hello"
        got = b""
        while len(got) < len(want):
            got += peer.recv(100)
        assert got == want
        peer.close()


def test_an_empty_name_binds_where_the_kernel_chooses_and_the_url_reports_it():
    with sp.Session() as session:
        rep = session.socket(sp.Rep, recv_timeout=5)
        req = session.socket(sp.Req, recv_timeout=5, send_timeout=5)
        ep = rep.bind("abstract://")
        assert ep.url.startswith("abstract://") and ep.url != "abstract://"
        chosen = abstract.name_of(lookup(ep.url)[1])
        assert len(chosen) == 5 and all(c in b"0123456789abcdef" for c in chosen)  # Linux
        assert _listed(chosen)
        req.connect(ep.url)
        req.send(b"who")
        assert rep.recv() == b"who"
        with pytest.raises(sp.InvalidAddress, match="wildcard"):
            req.connect("abstract://")


def test_a_taken_name_is_address_in_use_and_nothing_is_left_on_disk(name, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    with sp.Session() as session:
        a = session.socket(sp.Pair)
        ep = a.bind(f"abstract://{name}")
        with pytest.raises(sp.AddressInUse, match="the abstract name is taken"):
            session.socket(sp.Pair).bind(f"abstract://{name}")
        ep.close()
        session.socket(sp.Pair).bind(f"abstract://{name}")  # free again at once
    assert list(tmp_path.iterdir()) == []


def test_a_dialer_retries_until_the_name_is_bound(name):
    with sp.Session() as session:
        pair_a = session.socket(sp.Pair, recv_timeout=5, reconnect_interval=0.01)
        pair_b = session.socket(sp.Pair, recv_timeout=5, send_timeout=5)
        pair_a.connect(f"abstract://{name}")
        pair_b.bind(f"abstract://{name}")
        pair_b.send(b"late")
        assert pair_a.recv() == b"late"
