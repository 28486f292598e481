"""docs/WIRE_CONFORMANCE.md stays true: every test it cites exists, and every row cites one.

The document maps each behaviour of WIRE.md to the tests that prove it, as pytest node ids
(``tests/path.py::test_name``, optionally with one ``[parameter id]``). A test renamed or
deleted, or a row left without a test, fails here, so the map cannot go stale.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "WIRE_CONFORMANCE.md"

NODE_ID = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)(\[[^\]`]*\])?")


@cache
def functions_in(path: str) -> frozenset[str]:
    """Names of the test functions ``path`` defines, at module level or in a class."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    return frozenset(node.name for node in ast.walk(tree)
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def cited() -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        found += [(number, match[1], match[2]) for match in NODE_ID.finditer(line)]
    return found


def test_the_wire_conformance_document_cites_many_tests():
    assert len(cited()) >= 150
    assert {path for _, path, _ in cited()} >= {
        "tests/integration/test_wire_gaps.py", "tests/interop/test_wire_gaps.py"}


def test_every_test_the_wire_conformance_document_cites_exists():
    missing = []
    for number, path, name in cited():
        if not (ROOT / path).is_file():
            missing.append(f"line {number}: {path} does not exist")
        elif name not in functions_in(path):
            missing.append(f"line {number}: {path} defines no {name}")
    assert not missing, "docs/WIRE_CONFORMANCE.md is stale:\n" + "\n".join(missing)


def test_every_behaviour_row_cites_at_least_one_test():
    bare = []
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= set("-: "):
            continue
        if cells[0] in ("#", "Behaviour (WIRE.md)", "Bug"):
            continue  # a header row
        if not NODE_ID.search(cells[-1]):
            bare.append(f"line {number}: {cells[0]}")
    assert not bare, "rows of docs/WIRE_CONFORMANCE.md without a test:\n" + "\n".join(bare)
