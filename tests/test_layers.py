"""The packages import downwards only (docs/ARCHITECTURE.md, "Layers").

facade -> core -> reactor / transports, protocols -> core, the generated machines below the
hand-written classes that complete them, the machines' runtime (``scaproust.fsm``: the
backend choice, the reference backend, their errors) below those, and ``scaproust.errors``
under everything. An
import that points up (a transport reaching into core, a protocol into the facade) makes
the layers lie about who depends on whom, and fails here with the file and line.

One exception, for the type checker only: a generated machine imports, under ``if
TYPE_CHECKING:``, the types its events carry (``Pipe``, ``Item``: protocols.yaml's
``types:``), which the hand-written classes completing it define in core. Nothing of it
runs: at run time the generated modules import only ``scaproust.fsm``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "scaproust"

#: What each layer may import, besides itself. The package's own top level (``__init__``,
#: ``__main__``, ``demo``) is the public face and may import anything.
MAY_IMPORT = {
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
#: What a layer may also import under ``if TYPE_CHECKING:`` (names for annotations only).
MAY_IMPORT_FOR_TYPES = {"_generated": {"core"}}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _type_checking_imports(tree: ast.Module) -> set[ast.AST]:
    """The import statements inside a module-level ``if TYPE_CHECKING:``."""
    out: set[ast.AST] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out.update(n for stmt in node.body for n in ast.walk(stmt)
                       if isinstance(n, ast.Import | ast.ImportFrom))
    return out


def _imports(path: Path):
    """(line, layer imported, whether only under TYPE_CHECKING) of each package import."""
    tree = ast.parse(path.read_text(), str(path))
    types_only = _type_checking_imports(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "scaproust" and len(parts) > 1:
                yield node.lineno, parts[1], node in types_only


def test_every_layer_is_declared():
    found = {_layer(p) for p in PACKAGE.rglob("*.py")} - TOP_LEVEL
    assert found == set(MAY_IMPORT), f"layers not declared here: {found - set(MAY_IMPORT)}"


def test_imports_point_down_only():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        if layer in TOP_LEVEL:
            continue
        for line, target, for_types in _imports(path):
            allowed = MAY_IMPORT[layer] | (MAY_IMPORT_FOR_TYPES.get(layer, set()) if for_types else set())
            if target != layer and target not in allowed:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer} imports {target}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_a_generated_module_may_name_core_types_but_not_import_core(tmp_path):
    module = tmp_path / "machine.py"
    module.write_text("from typing import TYPE_CHECKING\n"
                      "from scaproust.fsm import BACKEND\n"
                      "from scaproust.core.stats import Stats\n"
                      "if TYPE_CHECKING:\n"
                      "    from scaproust.core.pipe import Pipe\n")
    assert list(_imports(module)) == [(2, "fsm", False), (3, "core", False), (5, "core", True)]
