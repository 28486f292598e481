"""Fixtures for tests between our own sockets over real TCP and IPC."""

from __future__ import annotations

import threading
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


def in_thread(fn, **kwargs):
    """Start ``fn(**kwargs)`` in a thread: ``(thread, errors)``, ``errors`` receiving the
    ``sp.Error`` it raises, if it raises one."""
    errors = []

    def run():
        try:
            fn(**kwargs)
        except sp.Error as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors
