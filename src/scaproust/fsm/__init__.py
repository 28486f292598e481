"""Which backend runs the generated state machines.

Every machine of protocols.yaml is generated twice with the same method names (see
codegen/emit_python.py): a compiled mixin in ``_generated/<machine>.py`` (one specialised
method per event, about 0.1 µs an event) and, in ``_generated/<machine>_reference.py``, a
mixin that runs each event through a real ``transitions.Machine`` (about 5 µs;
docs/ARCHITECTURE.md, "Machines"). The compiled one is the default; setting
``SCAPROUST_FSM=transitions`` in the environment, before scaproust is imported, runs the
whole library on ``transitions`` instead. Each generated module reads ``BACKEND`` once, at
import, and imports its reference module only for ``transitions``: the default backend never
loads ``transitions`` at all. A conformance test proves both behave the same.
"""

from __future__ import annotations

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
