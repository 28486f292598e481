"""Fixtures for tests between our own sockets over real TCP and IPC."""

from __future__ import annotations

import time

import pytest

import scaproust as sp


@pytest.fixture
def session():
    with sp.Session() as s:
        yield s


@pytest.fixture(params=["tcp", "ipc"])
def url(request, tmp_path):
    """A bindable URL on loopback: port 0 for TCP, a fresh path for IPC."""
    if request.param == "tcp":
        return "tcp://127.0.0.1:0"
    return f"ipc://{tmp_path}/sock.ipc"


def wait_until(condition, timeout=5.0, what="condition"):
    """Poll ``condition`` until true or fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)
