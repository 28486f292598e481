"""Which backend runs the generated state machines.

Every machine of protocols.yaml is generated twice with the same method names (see
codegen/emit_python.py): a compiled mixin (one specialised method per event, about 0.1 µs
an event) and a mixin that runs each event through a real ``transitions.Machine`` (about
5 µs; docs/ARCHITECTURE.md, "Machines"). The compiled one is the default; setting
``SCAPROUST_FSM=transitions`` in the environment, before scaproust is imported, runs the
whole library on ``transitions`` instead. A conformance test proves both behave the same.
"""

from __future__ import annotations

import logging
import os

BACKENDS = ("compiled", "transitions")
ENV_VAR = "SCAPROUST_FSM"


def backend_name() -> str:
    """The backend chosen by the environment: 'compiled' (default) or 'transitions'."""
    name = os.environ.get(ENV_VAR, "compiled").strip().lower() or "compiled"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


BACKEND = backend_name()

# transitions logs every callback at INFO and ignored triggers at WARNING; keep it quiet
# unless the user asks for more (ARCHITECTURE.md: keep its logger at WARNING).
logging.getLogger("transitions").setLevel(logging.WARNING)


def select_backend(compiled: type, via_transitions: type) -> type:
    """Return the mixin of the backend in force for a generated machine."""
    return via_transitions if BACKEND == "transitions" else compiled
