"""The documentation stays true: the options table, the README's quickstart, the examples, and
every test a document cites."""

from __future__ import annotations

import re
from pathlib import Path

from scaproust.core.options import SPECS, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_table_lists_every_option():
    text = (ROOT / "docs" / "OPTIONS.md").read_text()
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert documented == list(SPECS)
    assert markdown_table() in text, "docs/OPTIONS.md is stale; paste markdown_table() into it"


def test_the_readme_quickstart_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    code = code.replace("ipc:///tmp/pair.ipc", f"ipc://{tmp_path}/pair.ipc")
    exec(compile(code, "README.md", "exec"), {})


def test_the_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)[0]
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")


def _examples(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / name).read_text(), flags=re.S)


def test_every_protocol_example_runs():
    examples = _examples("PROTOCOLS.md")
    assert len(examples) >= 8
    for number, code in enumerate(examples, 1):
        exec(compile(code, f"docs/PROTOCOLS.md example {number}", "exec"), {})


def test_every_test_any_document_cites_exists():
    # A claim names the test that proves it, as ``tests/path.py::test_name`` or, right after
    # one, as ``::test_name`` in the same file; each must still exist.
    from tests.test_wire_conformance_doc import NODE_ID, functions_in

    short = re.compile(r"(?<![\w/])::(test_\w+)")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        path = None
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            cites = [(m.start(), m[1], m[2]) for m in NODE_ID.finditer(line)]
            cites += [(m.start(), None, m[1]) for m in short.finditer(line)]
            for _, file, name in sorted(cites):
                path = file or path
                if path is None or not (ROOT / path).is_file():
                    missing.append(f"{doc.name}:{number}: {path}::{name} (no such file)")
                elif name not in functions_in(path):
                    missing.append(f"{doc.name}:{number}: {path} defines no {name}")
    assert not missing, "documents cite tests that do not exist:\n" + "\n".join(missing)
