"""Fixtures for tests between our own sockets over real TCP and IPC."""

from __future__ import annotations

import itertools
import os
import sys
import time

import pytest

import scaproust as sp


@pytest.fixture
def session():
    with sp.Session() as s:
        yield s


#: Every transport the ``url`` fixture runs a test over (abstract sockets: Linux only).
TRANSPORTS = ("tcp", "ipc", *(("abstract",) if sys.platform.startswith("linux") else ()))


def pytest_generate_tests(metafunc):
    """Run every test that takes ``url`` over every transport; a test marked
    ``raw_wire(kinds)`` (it opens plain sockets to ours) over those kinds only."""
    if "url_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("raw_wire")
        kinds = marker.args[0] if marker else TRANSPORTS
        metafunc.parametrize("url_kind", [k for k in kinds if k in TRANSPORTS])


@pytest.fixture
def url(url_kind, tmp_path, request):
    """A bindable URL: port 0 on loopback for TCP, a fresh path for IPC, a fresh name for
    abstract sockets."""
    if url_kind == "tcp":
        return "tcp://127.0.0.1:0"
    if url_kind == "abstract":
        return f"abstract://scaproust-{os.getpid()}-{next(_names)}"
    return f"ipc://{tmp_path}/sock.ipc"


_names = itertools.count()


def wait_until(condition, timeout=5.0, what="condition"):
    """Poll ``condition`` until true or fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)
