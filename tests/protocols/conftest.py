"""Shows which state-machine backend the run uses: the suite must pass under both
(``SCAPROUST_FSM=transitions`` selects the transitions one; docs/ARCHITECTURE.md, "Machines")."""

from __future__ import annotations

from scaproust import fsm


def pytest_report_header(config):
    return f"scaproust state-machine backend: {fsm.BACKEND} (set {fsm.ENV_VAR} to change)"
