"""The transports beyond tcp and ipc against pynng: abstract:// (and tls+tcp://, below).

pynng 0.9 bundles nng 1.11, whose abstract transport names sockets the same way (the name
percent-decoded, autobind for an empty name, IPC framing)."""

from __future__ import annotations

import os
import sys

import pytest

import scaproust as sp

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
