"""docs/WIRE_CONFORMANCE.md stays true: every test it cites exists, and every row cites one.

The document maps each labelled statement of docs/WIRE.md (P1, H3, R9, ...) to the tests that
prove it, as pytest node ids (``tests/path.py::test_name``, optionally with one
``[parameter id]``). A test renamed or deleted, a row left without a test, a statement of
WIRE.md without a row (or a row for a statement WIRE.md no longer has), a row filed under
another section than its statement, or a deliberate difference listed in one document and
not the other, fails here, so the map cannot go stale.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "WIRE_CONFORMANCE.md"
WIRE = ROOT / "docs" / "WIRE.md"

NODE_ID = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)(\[[^\]`]*\])?")
#: A statement's label where WIRE.md states it: ``- **R9** ...`` or ``| **H3** | ...``.
WIRE_LABEL = re.compile(r"^(?:- |\| )\*\*([A-Z]\d+)\*\*")
#: A row's label in WIRE_CONFORMANCE.md: ``| R9 | ...``.
ROW_LABEL = re.compile(r"^\| ([A-Z]\d+) \|")


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


def labels_by_section(path: Path, label: re.Pattern[str]) -> dict[str, str]:
    """Each label of ``path`` with the ``##`` section it sits in; a label twice fails."""
    found: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif match := label.match(line):
            assert match[1] not in found, f"{path.name}: {match[1]} is stated twice"
            found[match[1]] = section
    return found


def test_wire_md_states_many_labelled_statements():
    assert len(labels_by_section(WIRE, WIRE_LABEL)) >= 70


def test_every_statement_of_wire_md_has_a_row_under_the_same_section_and_no_row_is_extra():
    stated = labels_by_section(WIRE, WIRE_LABEL)
    mapped = labels_by_section(DOC, ROW_LABEL)
    assert not stated.keys() - mapped.keys(), "statements of docs/WIRE.md with no row in " \
        f"docs/WIRE_CONFORMANCE.md: {sorted(stated.keys() - mapped.keys())}"
    assert not mapped.keys() - stated.keys(), "rows of docs/WIRE_CONFORMANCE.md for no " \
        f"statement of docs/WIRE.md: {sorted(mapped.keys() - stated.keys())}"
    moved = [f"{label}: WIRE.md '{stated[label]}', WIRE_CONFORMANCE.md '{mapped[label]}'"
             for label in stated if stated[label] != mapped[label]]
    assert not moved, "labels filed under different sections:\n" + "\n".join(moved)


def test_the_deliberate_differences_are_the_same_in_both_documents():
    marked, label = set(), None
    for line in WIRE.read_text().splitlines():
        if line.startswith("#"):
            label = None
        elif match := WIRE_LABEL.match(line):
            label = match[1]
        if label and "**differs**" in line:
            marked.add(label)
    text = DOC.read_text()
    listed = set(re.findall(r"^- \*\*([A-Z]\d+)\*\*:", text.split("## Deliberate differences")[1],
                            flags=re.M))
    rows = {match[1] for line in text.splitlines() if "**differs**" in line
            if (match := ROW_LABEL.match(line))}
    assert marked, "docs/WIRE.md marks no deliberate difference"
    assert marked == listed == rows, (marked, listed, rows)
