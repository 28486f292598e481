"""The packages import downwards only (docs/ARCHITECTURE.md, "Layers").

facade -> core -> reactor / transports, protocols -> core, the generated machines below the
hand-written classes that complete them, the machines' runtime (``scaproust.fsm``: the
backend choice, the reference backend, their errors) below those, and ``scaproust.errors``
under everything. An
import that points up (a transport reaching into core, a protocol into the facade) makes
the layers lie about who depends on whom, and fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "scaproust"

#: What each layer may import, besides itself. The package's own top level (``__init__``,
#: ``__main__``, ``demo``) is the public face and may import anything.
MAY_IMPORT = {
    # The command-line tools use the public API only (``import scaproust``); the diagram
    # command reads the machines' generated tables.
    "cli": {"_generated"},
    "facade": {"core", "protocols", "reactor", "transports", "_generated", "fsm", "errors"},
    "protocols": {"core", "_generated", "fsm", "errors"},
    "core": {"reactor", "transports", "_generated", "fsm", "errors"},
    "_generated": {"fsm", "errors"},
    "reactor": {"errors"},
    "transports": {"errors"},
    "fsm": {"errors"},
    "errors": set(),
}
TOP_LEVEL = {"__init__", "__main__", "demo"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "scaproust" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_layer_is_declared():
    found = {_layer(p) for p in PACKAGE.rglob("*.py")} - TOP_LEVEL
    assert found == set(MAY_IMPORT), f"layers not declared here: {found - set(MAY_IMPORT)}"


def test_imports_point_down_only():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        if layer in TOP_LEVEL:
            continue
        for line, target in _imports(path):
            if target != layer and target not in MAY_IMPORT[layer]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer} imports {target}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)
