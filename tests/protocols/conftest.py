"""Shows which state-machine backend the run uses: the suite must pass under both
(``SCAPROUST_FSM=transitions`` selects the transitions one; docs/ARCHITECTURE.md, "Machines")."""

from __future__ import annotations

import pytest

from scaproust import fsm

from .fakes import FakeLoop


def pytest_report_header(config):
    return f"scaproust state-machine backend: {fsm.BACKEND} (set {fsm.ENV_VAR} to change)"


@pytest.fixture
def loop() -> FakeLoop:
    """The fake loop (timers on a fake clock) that a test's recording contexts share."""
    return FakeLoop()
