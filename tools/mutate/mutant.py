"""What every part of the tool shares: the paths of the repository, the mutant, its
statuses, and which machines and modules live at the transport level."""

from __future__ import annotations

import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.yaml"
GENERATED = "src/scaproust/_generated/"
SPEC = "protocols.yaml"

#: Machines and modules that live at the transport level: their mutants also run a few
#: integration tests (runner.INTEGRATION_TESTS).
TRANSPORT = {"pipe", "listener", "dialer", "socket", "tls_pipe", "ws_pipe", "wss_pipe"}

KILLED, SURVIVED, TIMEOUT, VALIDATOR, EQUIVALENT, SAME_CODE = (
    "killed", "survived", "timeout", "validator", "equivalent", "same-code")


@dataclasses.dataclass
class Mutant:
    family: str  # "yaml" or "actions"
    group: str  # machine (yaml) or module (actions)
    key: str  # stable, line-independent name: what mutation_equivalents.yaml refers to
    path: str  # the mutated file, relative to the root
    line: int
    what: str  # the mutation, for people
    text: str  # the whole mutated file
    transport: bool = False
    related: str = ""  # stem of the test files to run first

    status: str = ""
    detail: str = ""
    seconds: float = 0.0
    files: dict | None = None  # generated files that changed (yaml)

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"
