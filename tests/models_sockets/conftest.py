"""Helpers for the socket-level model tests: Hypothesis drives real sockets.

Each test builds a small topology of real sockets (TCP, IPC or inproc, chosen by
Hypothesis) inside its own ``sp.Session`` and keeps a model of what must arrive. The
helpers here are shared:

- ``model_settings(n)``: ``@settings`` for these tests, ``n`` examples by default, ten
  times as many with ``HYPOTHESIS_PROFILE=deep`` (``SCAPROUST_MODEL_EXAMPLES=<n>`` sets the
  number outright). The settings are explicit rather than a registered profile, so they
  never clash with the profiles of ``tests/models``.
- ``Addresses``: fresh bind URLs per example (a port chosen by the system, an IPC path in
  a fresh temporary directory, a unique inproc name), cleaned up afterwards.
- ``wait_until``: polls a condition against a deadline (never a bare sleep);
  ``live_pipes``: a socket's open pipes from its counters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import scaproust as sp

TRANSPORTS = ("tcp", "ipc", "inproc")

#: Every wait of these tests ends by this many seconds, or fails.
DEADLINE = 5.0

#: How long the end of an example listens for messages nobody should send (a duplicate, a
#: message to a non-neighbour): a poll with a timeout, after everything expected arrived.
QUIET = 0.05

#: Options every socket of these tests gets: redial fast, never linger on close.
FAST = {"reconnect_interval": 0.01, "linger": 0.0}


def _multiplier() -> int:
    return 10 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 1


def model_settings(examples: int):
    """``@settings`` for a socket-level model test: bounded count, no per-example deadline."""
    override = os.environ.get("SCAPROUST_MODEL_EXAMPLES")
    count = int(override) if override else examples * _multiplier()
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


transports = st.sampled_from(TRANSPORTS)


class Addresses:
    """Fresh bindable URLs for one example; ``with Addresses() as addresses:``."""

    def __init__(self):
        self._dir: str | None = None
        self._tag = uuid.uuid4().hex[:12]
        self._count = 0

    def __enter__(self) -> Addresses:
        return self

    def __exit__(self, *exc) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def new(self, transport: str) -> str:
        """A URL to bind: port 0 for TCP, a fresh path for IPC, a unique name for inproc."""
        self._count += 1
        if transport == "tcp":
            return "tcp://127.0.0.1:0"
        if transport == "ipc":
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="spm")
            return f"ipc://{self._dir}/{self._count}.ipc"
        if transport == "inproc":
            return f"inproc://models-sockets-{self._tag}-{self._count}"
        raise ValueError(transport)


def wait_until(condition, timeout: float = DEADLINE, what: str = "condition") -> None:
    """Poll ``condition`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def live_pipes(sock) -> int:
    """Pipes of ``sock`` that completed the header exchange and have not ended yet."""
    stats = sock.stats
    return stats.get("pipes_opened", 0) - stats.get("pipes_closed", 0)


def wait_for_pipes(expected: dict, what: str = "every connection") -> None:
    """Wait until each socket of ``expected`` (socket -> count) has that many live pipes."""

    def settled() -> bool:
        return all(live_pipes(sock) == count for sock, count in expected.items())

    try:
        wait_until(settled, what=what)
    except AssertionError:
        got = {repr(sock): live_pipes(sock) for sock in expected}
        want = {repr(sock): count for sock, count in expected.items()}
        raise AssertionError(f"timed out waiting for {what}: live pipes {got}, expected {want}") from None


def bind_again(sock, url: str, timeout: float = DEADLINE):
    """Bind ``url`` that a closed socket has just released.

    The release is immediate (LIFECYCLE.md), but a TCP port left free in the ephemeral
    range can briefly be the source port of a redialing peer that connected to itself; that
    connection fails its header check and ends at once. So ``AddressInUse`` is retried until
    the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sock.bind(url)
        except sp.AddressInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def drain(sock, into: list) -> int:
    """Append every message ``sock`` holds now to ``into``; returns how many."""
    count = 0
    while True:
        msg = sock.try_recv()
        if msg is None:
            return count
        into.append(msg)
        count += 1


def collect(socks_lists: dict, done, timeout: float = DEADLINE, what: str = "every message") -> None:
    """Receive into ``socks_lists`` (socket -> list) until ``done()``, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    interest = {sock: sp.POLLIN for sock in socks_lists}
    while True:
        for sock, into in socks_lists.items():
            drain(sock, into)
        if done():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if interest:
            sp.poll(interest, timeout=min(left, 0.05))


def collect_stragglers(socks_lists: dict, quiet: float = QUIET) -> None:
    """Receive whatever else arrives until ``quiet`` seconds pass with nothing new."""
    interest = {sock: sp.POLLIN for sock in socks_lists}
    if not interest:
        return
    while True:
        for sock, into in socks_lists.items():
            drain(sock, into)
        if not sp.poll(interest, timeout=quiet):
            return
