"""The reference backend (``transitions``) is loaded only when chosen (issue 9, item 6).

Each generated ``_generated/<machine>.py`` holds the compiled backend and imports its
``<machine>_reference.py`` only for ``SCAPROUST_FSM=transitions``: a program on the default
backend never imports ``transitions``, not at import and not while sockets run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import json, sys
import scaproust as sp

with sp.Session() as session:
    for kind, peer in ((sp.Pair, sp.Pair), (sp.Req, sp.Rep), (sp.Push, sp.Pull)):
        server = session.socket(peer, recv_timeout=5.0)
        client = session.socket(kind, recv_timeout=5.0, send_timeout=5.0)
        client.connect(server.bind("tcp://127.0.0.1:0").url)
        client.send(b"ping")
        assert server.recv() == b"ping"
        server.close()
        client.close()
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] == "transitions" or m.endswith("_reference"))
core = sys.modules["scaproust.protocols.pair"].Pair.__mro__[1].__name__
print(json.dumps({"loaded": loaded, "pair_backend": core}))
"""


def run_with(backend: str) -> dict:
    env = dict(os.environ, SCAPROUST_FSM=backend, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_compiled_backend_never_imports_transitions():
    got = run_with("compiled")
    assert got == {"loaded": [], "pair_backend": "PairCompiled"}


def test_the_transitions_backend_imports_the_reference_modules():
    got = run_with("transitions")
    assert {"transitions", "scaproust._generated.pipe_reference",
            "scaproust._generated.pair_reference"} <= set(got["loaded"])
    assert got["pair_backend"] == "PairTransitions"
